"""Ensembles: members trained one after another on one split, averaged probabilities,
one checkpoint, resumable, and the same answers through every backend."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_PATIENTS, cli_here, copy_slices

from tumorseg.checkpoint import build_model, load_checkpoint
from tumorseg.config import validate_config
from tumorseg.data.lgg import find_cases, load_case
from tumorseg.infer import Predictor
from tumorseg.models import Ensemble, UNet
from tumorseg.runs import state_digest
from tumorseg.train import fit


def test_ensemble_averages_the_members_probabilities():
    torch.manual_seed(0)
    a, b = UNet(3, 1, 4, 2).eval(), UNet(3, 1, 4, 2).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = (torch.sigmoid(a(x)) + torch.sigmoid(b(x))) / 2
        got = torch.sigmoid(Ensemble([a, b])(x))
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(torch.sigmoid(Ensemble([a])(x)), torch.sigmoid(a(x)), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError):
        Ensemble([])


@pytest.fixture(scope="module")
def ensemble_run(lgg_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("ensemble")
    data = base / "lgg"
    for pid in (*SMALL_PATIENTS, "TCGA_CS_4944_20010208"):
        copy_slices(lgg_root / pid, data / pid, range(8, 18))
    cfg = validate_config({
        "data": str(data), "out": str(base / "run"), "epochs": 2, "batch_size": 4, "lr": 3e-3, "val_frac": 0.2,
        "test_frac": 0.34, "threads": 2, "model": {"base": 4, "depth": 2, "image_size": 64, "members": 2},
    })  # fmt: skip
    logs = []
    fit(cfg, progress=False, log=logs.append)
    return cfg, logs


def test_members_share_the_split_and_differ_in_seed(ensemble_run):
    cfg, logs = ensemble_run
    run = Path(cfg.out)
    m0, m1 = (load_checkpoint(run / f"member{i}" / "last.safetensors") for i in (0, 1))
    assert m0.meta["split"] == m1.meta["split"] and m0.meta["split"]["test"]
    assert m0.config.member == 0 and m1.config.member == 1 and m0.config.seed == m1.config.seed == cfg.seed
    assert not torch.equal(m0.model["head.weight"], m1.model["head.weight"])
    ens = load_checkpoint(run / "last.safetensors")
    assert ens.config.model.members == 2 and ens.meta["split"] == m0.meta["split"]
    assert torch.equal(ens.model["members.1.head.weight"], m1.model["head.weight"])
    assert ens.meta["epochs"] == [2, 2] and ens.meta["members"][1]["source"] == "member1/last.safetensors"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["members"] == [str(run / "member0"), str(run / "member1")]
    members = [json.loads((run / f"member{i}" / "summary.json").read_text()) for i in (0, 1)]
    assert summary["train_seconds"] == pytest.approx(sum(m["train_seconds"] for m in members))
    assert summary["machine"] == members[1]["machine"]
    assert any(s.startswith(f"member1 (2 of 2): {run / 'member1'}") for s in logs)
    assert summary["weights_sha256"] == state_digest(ens.model) and "minutes_this_call" not in summary
    assert [r["weights_sha256"] for r in summary["member_results"]] == [m["weights_sha256"] for m in members]
    assert json.loads((run / "split.json").read_text()) == ens.meta["split"]
    val = json.loads((run / "split.json").read_text())["val"]  # one patient: the ensemble scores itself on it
    assert list(summary["val_per_patient"]) == val and all("last_val_dice" in r for r in summary["member_results"])
    assert any(s.startswith(f"ensemble val per-patient Dice mean {summary['val_dice']:.4f}") for s in logs)
    assert any("(each member's last epoch) and best.safetensors (each member's best epoch)" in s for s in logs)


def test_a_single_member_is_the_plain_run_with_that_seed(ensemble_run, tmp_path):
    """Member 0 is exactly the run a single model with the same options makes."""
    cfg, _ = ensemble_run
    single = cfg.model_copy(update={"model": cfg.model.model_copy(update={"members": 1}), "out": str(tmp_path / "one")})
    fit(single, progress=False, log=lambda *a: None)
    a = load_checkpoint(tmp_path / "one" / "last.safetensors").model
    b = load_checkpoint(Path(cfg.out) / "member0" / "last.safetensors").model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_keeps_finished_members(ensemble_run, tmp_path):
    import shutil

    cfg, _ = ensemble_run
    run = tmp_path / "run"
    shutil.copytree(cfg.out, run)
    shutil.rmtree(run / "member1")
    (run / "last.safetensors").unlink()
    before = (run / "member0" / "last.safetensors").read_bytes()
    logs = []
    fit(cfg.model_copy(update={"out": str(run)}), resume=True, progress=False, log=logs.append)
    assert any("member0 (1 of 2): already trained" in s for s in logs)
    assert (run / "member0" / "last.safetensors").read_bytes() == before
    assert (run / "last.safetensors").exists() and (run / "best.safetensors").exists()  # nothing deleted first
    # member 1 retrained from scratch with the same seed gives the same weights
    a = load_checkpoint(run / "last.safetensors").model
    b = load_checkpoint(Path(cfg.out) / "last.safetensors").model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_member_trained_with_other_options_is_refused(ensemble_run, tmp_path):
    import shutil

    from tumorseg.errors import TumorsegError

    cfg, _ = ensemble_run
    run = tmp_path / "run"
    shutil.copytree(cfg.out, run)
    before = (run / "member0" / "last.safetensors").read_bytes()
    with pytest.raises(TumorsegError, match="other options"):
        fit(cfg.model_copy(update={"out": str(run), "lr": 1e-3}), resume=True, progress=False, log=lambda *a: None)
    assert (run / "member0" / "last.safetensors").read_bytes() == before


def test_resume_takes_moved_data_and_refuses_other_patients(ensemble_run, tmp_path):
    """Resumed with --data elsewhere, an ensemble keeps its members if the patients are the same
    (in bf16 too: precision may change), and refuses other patients before any of its files change."""
    import shutil

    from tumorseg.errors import TumorsegError

    cfg, _ = ensemble_run
    run, moved, fewer = tmp_path / "run", tmp_path / "moved", tmp_path / "fewer"
    shutil.copytree(cfg.out, run)
    shutil.copytree(cfg.data, moved)
    shutil.copytree(cfg.data, fewer)
    shutil.rmtree(sorted(fewer.iterdir())[-1])
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(TumorsegError, match=r"fewer: does not hold the patients .*member0.last\.safetensors"):
        fit(cfg.model_copy(update={"out": str(run), "data": str(fewer)}), resume=True, progress=False,
            log=lambda *a: None)  # fmt: skip
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files
    logs = []
    fit(cfg.model_copy(update={"out": str(run), "data": str(moved), "precision": "bf16"}), resume=True,
        progress=False, log=logs.append)  # fmt: skip
    assert any("every member is trained and combined" in s and "nothing to do" in s for s in logs)
    assert (run / "member1" / "last.safetensors").read_bytes() == files[run / "member1" / "last.safetensors"]


def test_resume_continues_unfinished_members(ensemble_run, tmp_path):
    cfg, _ = ensemble_run
    short = cfg.model_copy(update={"out": str(tmp_path / "run"), "epochs": 1, "schedule": "none"})
    fit(short, progress=False, log=lambda *a: None)
    logs = []
    fit(short.model_copy(update={"epochs": 2}), resume=True, progress=False, log=logs.append)
    assert sum("resuming" in s and "epoch 2" in s for s in logs) == 2
    assert load_checkpoint(tmp_path / "run" / "last.safetensors").meta["epochs"] == [2, 2]


def test_predictor_and_int8_graph_on_an_ensemble(ensemble_run, lgg_root, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import shutil

    cfg, _ = ensemble_run
    w = tmp_path / "ens.safetensors"
    shutil.copy(Path(cfg.out) / "last.safetensors", w)
    model = build_model(load_checkpoint(w))
    assert isinstance(model, Ensemble) and len(model.members) == 2
    images = load_case(find_cases(lgg_root / SMALL_PATIENTS[0])[0], None).images[8:14]
    torch_p = Predictor.from_checkpoint(w, backend="torch").probabilities(images)
    parts = [
        Predictor(m, cfg.model.model_copy(update={"members": 1}), backend="torch").probabilities(images)
        for m in model.members
    ]
    assert np.abs(torch_p - (parts[0] + parts[1]) / 2).max() < 1e-5
    r = cli_here(
        "export",
        "--int8",
        "--weights",
        str(w),
        "--data",
        str(Path(cfg.data)),
        "--out",
        str(w.with_name("ens.int8.onnx")),
    )
    assert r.returncode == 0, r.stderr
    int8_p = Predictor.from_checkpoint(w, backend="onnx-int8").probabilities(images)
    assert int8_p.shape == torch_p.shape
    assert np.abs(int8_p - torch_p).max() < 0.05


def test_extending_a_finished_ensemble_keeps_it_usable_until_the_new_one_is_written(ensemble_run, tmp_path):
    """Its last/best files were once deleted up front, so an interrupted extension left no ensemble."""
    import shutil

    cfg, _ = ensemble_run
    run = tmp_path / "run"
    shutil.copytree(cfg.out, run)
    seen = []

    def log(msg):
        if msg.startswith(("member0 (", "member1 (")):
            seen.append((run / "last.safetensors").exists())

    longer = cfg.model_copy(update={"out": str(run), "epochs": cfg.epochs + 1})
    fit(longer, resume=True, progress=False, log=log)
    assert seen and all(seen)  # the earlier ensemble was there while each member trained on
    assert load_checkpoint(run / "last.safetensors").meta["epochs"] == [cfg.epochs + 1] * 2


def test_resume_of_a_finished_ensemble_leaves_it_as_it_was(ensemble_run, tmp_path):
    """Resumed with as many or fewer epochs, a finished ensemble once rewrote its config.json (with
    the fewer epochs) and combined its members again."""
    import shutil

    from tumorseg.members import member_config

    cfg, _ = ensemble_run
    run = tmp_path / "run"
    shutil.copytree(cfg.out, run)
    files = {p: (p.read_bytes(), p.stat().st_ino) for p in run.rglob("*") if p.is_file()}
    for epochs in (cfg.epochs, 1):
        logs = []
        summary = fit(cfg.model_copy(update={"out": str(run), "epochs": epochs}), resume=True, progress=False,
                      log=logs.append)  # fmt: skip
        said = [s for s in logs if "nothing to do" in s]
        assert said and f"already trained all {cfg.epochs} epochs" in said[0] and f"above {cfg.epochs}" in said[0]
        assert not any(s.startswith(("member0 (", "member1 (")) for s in logs)
        assert summary == json.loads((run / "summary.json").read_text())
        assert {p: (p.read_bytes(), p.stat().st_ino) for p in run.rglob("*") if p.is_file()} == files
    # a member trained on alone since the ensemble was combined: combined again, not "nothing to do"
    longer = cfg.model_copy(update={"out": str(run), "epochs": cfg.epochs + 1})
    fit(member_config(longer, 0), resume=True, progress=False, log=lambda *a: None)
    logs = []
    fit(cfg.model_copy(update={"out": str(run)}), resume=True, progress=False, log=logs.append)
    assert sum("already trained" in s for s in logs) == 2 and not any("nothing to do" in s for s in logs)
    assert load_checkpoint(run / "last.safetensors").meta["epochs"] == [cfg.epochs + 1, cfg.epochs]


def test_a_stopped_member_with_no_epoch_left_gets_its_summary_and_the_ensemble_is_combined(ensemble_run, tmp_path):
    """A member stopped in an epoch has no summary.json; resumed with no epoch left to train, the
    ensemble once failed reading it (FileNotFoundError). Now it is written from the member's epochs."""
    import shutil

    from tumorseg.runs import state_digest

    cfg, _ = ensemble_run
    run = tmp_path / "run"
    shutil.copytree(cfg.out, run)
    (run / "member1" / "summary.json").unlink()  # as a stop in member 1's last epoch leaves it
    (run / "summary.json").unlink()
    logs = []
    summary = fit(cfg.model_copy(update={"out": str(run)}), resume=True, progress=False, log=logs.append)
    member = json.loads((run / "member1" / "summary.json").read_text())
    last = load_checkpoint(run / "member1" / "last.safetensors")
    assert member["epochs_done"] == cfg.epochs and member["machine"] is None
    assert member["weights_sha256"] == state_digest(last.model)
    first = json.loads((run / "member0" / "summary.json").read_text())
    assert summary["train_seconds"] == pytest.approx(first["train_seconds"] + member["train_seconds"])
    assert json.loads((run / "summary.json").read_text()) == summary
    assert load_checkpoint(run / "last.safetensors").meta["epochs"] == [cfg.epochs, cfg.epochs]
