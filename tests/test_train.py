import json
import shutil

import numpy as np
import pytest
import torch

from tumorseg.checkpoint import build_model, load_checkpoint
from tumorseg.config import validate_config
from tumorseg.data.lgg import find_cases
from tumorseg.errors import TumorsegError
from tumorseg.hardware import native_bf16
from tumorseg.train import SliceDataset, epoch_indices, fit, resolve_precision, update_marked
from tumorseg.validation import load_cases


def tiny_config(data, out, **kw):
    cfg = {
        "data": str(data),
        "out": str(out),
        "epochs": 2,
        "batch_size": 4,
        "lr": 3e-3,
        "val_frac": 0.0,
        "test_frac": 0.0,
        "threads": 2,
        "model": {"base": 4, "depth": 2, "image_size": 64},
    }
    cfg.update(kw)
    return validate_config(cfg)


def read_metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_patient_run_lowers_loss_and_reloads(tiny_lgg, tmp_path):
    run = tmp_path / "run"
    fit(tiny_config(tiny_lgg, run, epochs=3), progress=False, log=lambda *a: None)
    for name in ("metrics.jsonl", "curves.png", "best.safetensors", "last.safetensors", "split.json", "config.json"):
        assert (run / name).is_file(), name
    lines = read_metrics(run)
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["train"]) == sorted(p.name for p in tiny_lgg.iterdir())

    ckpt = load_checkpoint(run / "last.safetensors")
    model = build_model(ckpt)
    x = torch.rand(2, 3, 64, 64)
    ckpt2 = load_checkpoint(run / "last.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(model(x), build_model(ckpt2)(x))
        # the checkpoint holds exactly the weights that were trained: same outputs as saved state
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        assert all(torch.equal(sd[k], ckpt.model[k]) for k in sd)
    assert ckpt.config.model.base == 4 and ckpt.meta["epoch"] == 3


def test_same_seed_same_metrics(tiny_lgg, tmp_path):
    a = tiny_config(tiny_lgg, tmp_path / "a", val_frac=0.5)
    b = tiny_config(tiny_lgg, tmp_path / "b", val_frac=0.5)
    fit(a, progress=False, log=lambda *x: None)
    fit(b, progress=False, log=lambda *x: None)
    ma, mb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    for x, y in zip(ma, mb):
        assert x["train_loss"] == y["train_loss"]
        assert x["val_dice"] == y["val_dice"]


def first_epoch_losses(data, tmp_path, **runs):
    """Train one epoch per named run (its config overrides) and return each run's first-epoch loss."""
    for name, kw in runs.items():
        fit(tiny_config(data, tmp_path / name, epochs=1, **kw), progress=False, log=lambda *a: None)
    return {name: read_metrics(tmp_path / name)[0]["train_loss"] for name in runs}


def saved_config(run):
    return json.loads((run / "config.json").read_text())


def test_dim_lesions_reaches_the_training_loop(tiny_lgg, tmp_path):
    """--dim-lesions changes what the network sees, is saved with the run, and 0 leaves the run as it was."""
    loss = first_epoch_losses(tiny_lgg, tmp_path, off={}, zero={"dim_lesions": 0.0}, on={"dim_lesions": 1.0})
    assert loss["zero"] == loss["off"]
    assert loss["on"] != loss["off"]
    assert saved_config(tmp_path / "on")["dim_lesions"] == 1.0


def test_zoom_reaches_the_training_loop(tiny_lgg, tmp_path):
    """--zoom changes what the network sees and is saved with the run; its default is the old fixed 0.1."""
    loss = first_epoch_losses(tiny_lgg, tmp_path, default={}, same={"zoom": 0.1}, wide={"zoom": 0.3})
    assert loss["same"] == loss["default"]
    assert loss["wide"] != loss["default"]
    assert saved_config(tmp_path / "wide")["zoom"] == 0.3


def test_missing_sequences_reaches_the_training_loop(tiny_lgg, tmp_path):
    """--missing-sequences changes what the network sees and is saved with the run; 0 changes nothing,
    and a FLAIR-only model refuses it."""
    loss = first_epoch_losses(
        tiny_lgg, tmp_path, off={}, zero={"missing_sequences": 0.0}, on={"missing_sequences": 1.0}
    )
    assert loss["zero"] == loss["off"]
    assert loss["on"] != loss["off"]
    assert saved_config(tmp_path / "on")["missing_sequences"] == 1.0
    with pytest.raises(TumorsegError, match="missing_sequences needs channels='all'"):
        tiny_config(tiny_lgg, tmp_path / "flair", missing_sequences=0.2, model={"channels": "flair"})


def test_sequence_jitter_reaches_the_training_loop(tiny_lgg, tmp_path):
    """--sequence-jitter changes what the network sees and is saved with the run; --no-augment turns it off."""
    loss = first_epoch_losses(
        tiny_lgg, tmp_path, off={}, on={"sequence_jitter": True},
        plain={"augment": False}, plain_on={"augment": False, "sequence_jitter": True},
    )  # fmt: skip
    assert loss["on"] != loss["off"]
    assert loss["plain_on"] == loss["plain"]
    assert saved_config(tmp_path / "on")["sequence_jitter"] is True


def test_bias_field_reaches_the_training_loop(tiny_lgg, tmp_path):
    """--bias-field changes what the network sees and is saved with the run; 0 and --no-augment change nothing."""
    loss = first_epoch_losses(
        tiny_lgg, tmp_path, off={}, zero={"bias_field": 0.0}, on={"bias_field": 0.3},
        plain={"augment": False}, plain_on={"augment": False, "bias_field": 0.3},
    )  # fmt: skip
    assert loss["zero"] == loss["off"]
    assert loss["on"] != loss["off"]
    assert loss["plain_on"] == loss["plain"]
    assert saved_config(tmp_path / "on")["bias_field"] == 0.3


def test_histogram_shift_reaches_the_training_loop(tiny_lgg, tmp_path):
    """--histogram-shift changes what the network sees and is saved with the run; 0 and --no-augment change nothing."""
    loss = first_epoch_losses(
        tiny_lgg, tmp_path, off={}, zero={"histogram_shift": 0.0}, on={"histogram_shift": 1.0},
        plain={"augment": False}, plain_on={"augment": False, "histogram_shift": 1.0},
    )  # fmt: skip
    assert loss["zero"] == loss["off"]
    assert loss["on"] != loss["off"]
    assert loss["plain_on"] == loss["plain"]
    assert saved_config(tmp_path / "on")["histogram_shift"] == 1.0


def test_patient_balance_reaches_the_training_loop(tiny_lgg, tmp_path):
    """--patient-balance changes which slices the network sees and is saved with the run; 0 changes nothing."""
    loss = first_epoch_losses(tiny_lgg, tmp_path, off={}, zero={"patient_balance": 0.0}, on={"patient_balance": 1.0})
    assert loss["zero"] == loss["off"]
    assert loss["on"] != loss["off"]
    assert saved_config(tmp_path / "on")["patient_balance"] == 1.0
    cases = find_cases(tiny_lgg)
    data = SliceDataset(
        load_cases(
            tiny_config(tiny_lgg, tmp_path / "x"), [c.id for c in cases], {c.id: c for c in cases}, "", progress=False
        )
    )
    counts = [len(c.images) for c in cases]  # each slice knows its patient, in order
    np.testing.assert_array_equal(np.bincount(data.patient), counts)
    assert (np.diff(data.patient) >= 0).all()


def test_resume_continues_from_the_right_epoch(tiny_lgg, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    # a constant learning rate, so stopping at 2 of 3 epochs changes nothing but the stop
    fit(tiny_config(tiny_lgg, full, epochs=3, schedule="none", ema=0.9), progress=False, log=lambda *a: None)
    fit(tiny_config(tiny_lgg, part, epochs=2, schedule="none", ema=0.9), progress=False, log=lambda *a: None)
    logs = []
    cfg = tiny_config(tiny_lgg, part, epochs=3, schedule="none", ema=0.9)
    summary = fit(cfg, resume=True, progress=False, log=logs.append)
    assert any("resuming" in s and "epoch 3" in s for s in logs)
    lines = read_metrics(part)
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    # the run's training time counts the epochs before the resume too, and names the machine
    assert summary["train_seconds"] == pytest.approx(sum(x["epoch_seconds"] for x in lines))
    assert summary["train_seconds"] > lines[2]["epoch_seconds"] > 0
    assert json.loads((part / "summary.json").read_text())["machine"] == summary["machine"]
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["torch"] == torch.__version__
    assert summary["machine"]["device"] == "cpu" and summary["machine"]["cpu"] and summary["machine"]["processes"] == 1
    flags = next(x for x in open("/proc/cpuinfo") if x.startswith("flags")).split()
    assert ("avx2" in summary["machine"]["features"]) == ("avx2" in flags)
    ref = read_metrics(full)
    assert lines[2]["train_loss"] == pytest.approx(ref[2]["train_loss"], rel=1e-5)
    a, b = load_checkpoint(part / "last.safetensors"), load_checkpoint(full / "last.safetensors")
    for k in a.model:
        torch.testing.assert_close(a.model[k], b.model[k], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_trains_fp32_weights_close_to_fp32(tiny_lgg, tmp_path):
    runs = {}
    for p in ("fp32", "bf16"):
        logs = []
        fit(tiny_config(tiny_lgg, tmp_path / p, epochs=1, precision=p), progress=False, log=logs.append)
        assert any(s.startswith(f"precision: {p}") for s in logs)
        runs[p] = read_metrics(tmp_path / p)[0]
        assert runs[p]["precision"] == p
        ckpt = load_checkpoint(tmp_path / p / "last.safetensors")
        assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt.model.values())
    # autocast really ran in bf16 (the loss differs) and trains the same model (it is close)
    assert runs["bf16"]["train_loss"] != runs["fp32"]["train_loss"]
    assert runs["bf16"]["train_loss"] == pytest.approx(runs["fp32"]["train_loss"], rel=0.05)


def test_precision_auto_follows_the_hardware(tiny_lgg, tmp_path):
    cpu = torch.device("cpu")
    for p in ("fp32", "bf16"):
        assert resolve_precision(tiny_config(tiny_lgg, tmp_path, precision=p), cpu) == p
    flags = next(x for x in open("/proc/cpuinfo") if x.startswith("flags")).split()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert native_bf16(cpu) == native
    assert resolve_precision(tiny_config(tiny_lgg, tmp_path, precision="auto"), cpu) == ("bf16" if native else "fp32")
    assert tiny_config(tiny_lgg, tmp_path).precision == "fp32"  # the shipped model's recipe
    with pytest.raises(TumorsegError, match="precision"):
        tiny_config(tiny_lgg, tmp_path, precision="fp16")


def test_early_stopping(tiny_lgg, tmp_path):
    cfg = tiny_config(tiny_lgg, tmp_path / "r", epochs=6, val_frac=0.5, lr=1e-9, patience=1)
    summary = fit(cfg, progress=False, log=lambda *a: None)
    assert summary["epochs_done"] < 6


def test_epoch_indices_balance():
    has = np.array([True] * 10 + [False] * 50)
    idx = epoch_indices(has, 1.0, np.random.default_rng(0))
    assert len(idx) == 20 and has[idx].sum() == 10 and len(set(idx)) == 20
    assert len(epoch_indices(has, 0.5, np.random.default_rng(0))) == 15


def test_hard_empty_draws_the_most_marked_empty_slices():
    has = np.array([True] * 10 + [False] * 50)
    marked = np.zeros(60)
    marked[[12, 30, 47]] = 1e6  # three empty slices the model marks heavily
    # hard 0 draws as before, whatever is marked
    plain = epoch_indices(has, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(epoch_indices(has, 1.0, np.random.default_rng(0), 0.0, marked), plain)
    for seed in range(5):
        idx = epoch_indices(has, 0.5, np.random.default_rng(seed), 0.6, marked)  # 5 empty, 3 of them hard
        assert len(idx) == 15 and len(set(idx)) == 15 and has[idx].sum() == 10
        assert {12, 30, 47} <= set(idx)
    # a slice never seen (NaN) weighs as much as the most marked one, so it gets looked at
    unseen = np.full(60, 0.0)
    unseen[40] = np.nan
    unseen[41] = 1e6
    idx = epoch_indices(has, 0.2, np.random.default_rng(1), 1.0, unseen)
    assert sorted(set(idx) - set(range(10))) == [40, 41]


def test_patient_balance_evens_out_patients_tumor_slices():
    # patient 0: 2 tumor slices, patient 1: 18; 20 empty slices each
    has = np.array([True] * 2 + [False] * 20 + [True] * 18 + [False] * 20)
    patient = np.repeat([0, 1], [22, 38])
    plain = epoch_indices(has, 0.5, np.random.default_rng(0))
    # balance 0 (or no patients) draws as before
    np.testing.assert_array_equal(epoch_indices(has, 0.5, np.random.default_rng(0), patient=patient), plain)
    np.testing.assert_array_equal(epoch_indices(has, 0.5, np.random.default_rng(0), balance=1.0), plain)
    shares = {}
    for balance in (0.0, 0.5, 1.0):
        small = total = 0
        for seed in range(200):
            idx = epoch_indices(has, 0.5, np.random.default_rng(seed), patient=patient, balance=balance)
            assert len(idx) == 30 and has[idx].sum() == 20  # as many tumor slices, as many empty ones
            tumor = idx[has[idx]]
            small += int((patient[tumor] == 0).sum())
            total += len(tumor)
        shares[balance] = small / total
    # the small patient's share of tumor slices: n ** (1 - balance) over the sum
    assert abs(shares[0.0] - 2 / 20) < 1e-9
    assert abs(shares[0.5] - 2**0.5 / (2**0.5 + 18**0.5)) < 0.02
    assert abs(shares[1.0] - 0.5) < 0.03


def test_update_marked_averages_new_views_into_old():
    old = np.array([np.nan, 4.0, 10.0, np.nan])
    new = update_marked(old, np.array([6.0, 8.0, 0.0, 0.0]), np.array([2.0, 1.0, 0.0, 0.0]))
    np.testing.assert_array_equal(new[:3], [3.0, 6.0, 10.0])
    assert np.isnan(new[3])  # never seen, still unknown


def test_hard_empty_trains_ranks_empty_slices_and_resumes_unbroken(tiny_lgg, tmp_path):
    """--hard-empty keeps, in the checkpoint, the tumor marked per empty slice seen (none for tumor
    slices), changes the draw from epoch 2 on, and a resumed run draws as the unbroken one."""
    kw = {"schedule": "none", "ema": 0.9, "empty_ratio": 0.5}
    full, part = tmp_path / "full", tmp_path / "part"
    fit(tiny_config(tiny_lgg, full, epochs=3, hard_empty=1.0, **kw), progress=False, log=lambda *a: None)
    fit(tiny_config(tiny_lgg, part, epochs=2, hard_empty=1.0, **kw), progress=False, log=lambda *a: None)
    fit(tiny_config(tiny_lgg, part, epochs=3, hard_empty=1.0, **kw), resume=True, progress=False,
        log=lambda *a: None)  # fmt: skip
    fit(tiny_config(tiny_lgg, tmp_path / "off", epochs=3, **kw), progress=False, log=lambda *a: None)
    marked = load_checkpoint(full / "last.safetensors").extra["hard_empty.marked"].numpy()
    cfg = tiny_config(tiny_lgg, full)
    by_id = {c.id: c for c in find_cases(tiny_lgg)}
    train_ids = json.loads((full / "split.json").read_text())["train"]
    has = SliceDataset(load_cases(cfg, train_ids, by_id, "", progress=False)).has_tumor
    assert len(marked) == len(has)
    assert np.isnan(marked[has]).all()  # tumor slices are never ranked
    assert (np.isfinite(marked[~has]) & (marked[~has] >= 0)).sum() >= 4
    ref, got, off = read_metrics(full), read_metrics(part), read_metrics(tmp_path / "off")
    assert got[2]["train_loss"] == pytest.approx(ref[2]["train_loss"], rel=1e-5)
    assert ref[2]["train_loss"] != off[2]["train_loss"]
    assert saved_config(full)["hard_empty"] == 1.0


def test_k_fold_runs_pool_out_of_fold_scores(lgg_root, tmp_path):
    """Three fold runs validate disjoint patients; scripts/cv_summary.py pools every non-test patient."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import copy_slices

    data = tmp_path / "lgg"
    for pid in ("TCGA_CS_4941_19960909", "TCGA_CS_4943_20000902", "TCGA_CS_4944_20010208", "TCGA_CS_5393_19990606"):
        copy_slices(lgg_root / pid, data / pid, range(10, 16))
    runs = []
    for k in range(3):
        cfg = tiny_config(data, tmp_path / f"cv-{k}", epochs=1, test_frac=0.25, folds=3, fold=k)
        fit(cfg, progress=False, log=lambda *a: None)
        runs.append(tmp_path / f"cv-{k}")
    splits = [json.loads((r / "split.json").read_text()) for r in runs]
    assert len({s["test"][0] for s in splits}) == 1 and all(len(s["val"]) == 1 for s in splits)
    script = Path(__file__).parents[1] / "scripts" / "cv_summary.py"
    out = tmp_path / "cv.json"
    r = subprocess.run([sys.executable, str(script), *map(str, runs), "--json", str(out)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    pooled = json.loads(out.read_text())
    assert sorted(pooled["per_patient"]) == sorted(s["val"][0] for s in splits)
    expected = np.mean([read_metrics(r)[-1]["val_dice"] for r in runs])
    assert pooled["dice_mean"] == pytest.approx(expected) and pooled["patients"] == 3
    r = subprocess.run([sys.executable, str(script), str(runs[0]), str(runs[0])], capture_output=True, text=True)
    assert r.returncode != 0 and "given twice" in r.stderr
    # a fold of another seed holds other test patients: pooled, they were scored as out-of-fold (QA)
    fit(tiny_config(data, tmp_path / "seed1", epochs=1, test_frac=0.25, folds=3, fold=1, seed=1),
        progress=False, log=lambda *a: None)  # fmt: skip
    r = subprocess.run([sys.executable, str(script), str(runs[0]), str(tmp_path / "seed1"), str(runs[2])],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0 and "the runs differ in seed: pool the folds of one recipe and seed" in r.stderr
    shutil.copytree(runs[1], tmp_path / "moved")
    split = json.loads((tmp_path / "moved" / "split.json").read_text())
    split["test"], split["val"] = split["val"], split["test"]
    (tmp_path / "moved" / "split.json").write_text(json.dumps(split))
    r = subprocess.run(
        [sys.executable, str(script), str(runs[0]), str(tmp_path / "moved")], capture_output=True, text=True
    )
    assert r.returncode != 0 and "the runs hold different test patients" in r.stderr

    # The post-processing grid scores each run's own validation patients, and its settings give
    # what `evaluate` gives for the same setting on the same checkpoint.
    from tumorseg.evaluation import evaluate

    script = Path(__file__).parents[1] / "scripts" / "cv_postprocess.py"
    out = tmp_path / "grid.json"
    r = subprocess.run([sys.executable, str(script), *map(str, runs), "--data", str(data), "--json", str(out)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    grid = json.loads(out.read_text())
    assert sorted(grid["per_patient"]) == sorted(s["val"][0] for s in splits)
    assert len(grid["means"]) == 30 and "tta=1 thr=0.5 parts=largest" in grid["means"]
    for run, split in zip(runs, splits):
        scores = grid["per_patient"][split["val"][0]]
        for tta in (False, True):
            result = evaluate(data, run / "last.safetensors", "val", backend="torch", tta=tta, log=lambda *a: None)
            assert scores[f"tta={int(tta)} thr=0.5 parts=largest"] == pytest.approx(result["per_patient"][0]["dice"])
            if not tta:  # the same close calls as evaluate's notes
                assert bool(result["per_patient"][0]["notes"]) == (split["val"][0] in grid["close_calls"])


def test_deep_supervision_trains_saves_a_plain_unet_and_resumes_unbroken(tiny_lgg, tmp_path):
    """--deep-supervision changes training, keeps its heads out of the U-Net's weights (they go in
    last.safetensors' extra, for --resume), and a resumed run continues as the unbroken one."""
    kw = {"schedule": "none", "ema": 0.9, "deep_supervision": True}
    full, part, off = tmp_path / "full", tmp_path / "part", tmp_path / "off"
    fit(tiny_config(tiny_lgg, full, epochs=3, **kw), progress=False, log=lambda *a: None)
    fit(tiny_config(tiny_lgg, part, epochs=2, **kw), progress=False, log=lambda *a: None)
    fit(tiny_config(tiny_lgg, part, epochs=3, **kw), resume=True, progress=False, log=lambda *a: None)
    fit(tiny_config(tiny_lgg, off, epochs=3, schedule="none", ema=0.9), progress=False, log=lambda *a: None)
    ck, plain = load_checkpoint(full / "last.safetensors"), load_checkpoint(off / "last.safetensors")
    assert set(ck.model) == set(plain.model)
    assert {k for k in ck.extra if k.startswith("aux.")} == {"aux.0.weight", "aux.0.bias"}  # depth 2: one head
    build_model(load_checkpoint(full / "best.safetensors"))  # loads as a plain U-Net
    ref, got, base = read_metrics(full), read_metrics(part), read_metrics(off)
    assert got[2]["train_loss"] == pytest.approx(ref[2]["train_loss"], rel=1e-5)
    assert ref[0]["train_loss"] != base[0]["train_loss"]
    assert saved_config(full)["deep_supervision"] is True


def test_deep_supervision_needs_a_coarser_decoder_output(tmp_path):
    with pytest.raises(TumorsegError, match="deep_supervision needs depth >= 2"):
        tiny_config(tmp_path, tmp_path / "r", deep_supervision=True, model={"base": 4, "depth": 1, "image_size": 64})


def test_resume_trusts_the_checkpoints_config_over_an_edited_config_json(tiny_lgg, tmp_path):
    """config.json edited by hand (or another run's last.safetensors copied in) is refused with
    the differing options named, before the checkpoint is loaded into a mismatched model."""
    run = tmp_path / "run"
    fit(tiny_config(tiny_lgg, run, epochs=1), progress=False, log=lambda *a: None)
    before = (run / "last.safetensors").read_bytes()
    for change in ({"lr": 0.5}, {"model": {"base": 8, "depth": 2, "image_size": 64}}):
        with pytest.raises(TumorsegError, match=r"trained with other options than .*config.json says \((lr|model)\)"):
            fit(tiny_config(tiny_lgg, run, epochs=2, **change), resume=True, progress=False, log=lambda *a: None)
    assert (run / "last.safetensors").read_bytes() == before
    fit(tiny_config(tiny_lgg, run, epochs=2, precision="bf16"), resume=True, progress=False, log=lambda *a: None)


def test_resume_of_a_checkpoint_without_a_saved_split_keeps_its_data(tiny_lgg, tmp_path):
    """A checkpoint that saves no split (and no split.json beside it) cannot show that other data
    holds its patients: --data elsewhere is refused, its own data resumes."""
    import shutil

    from tumorseg.checkpoint import save_checkpoint

    run, copy = tmp_path / "run", tmp_path / "copy"
    fit(tiny_config(tiny_lgg, run, epochs=1), progress=False, log=lambda *a: None)
    ck = load_checkpoint(run / "last.safetensors")
    ck.meta.pop("split")
    save_checkpoint(run / "last.safetensors", ck)
    (run / "split.json").unlink()
    shutil.copytree(tiny_lgg, copy)
    with pytest.raises(TumorsegError, match=f"saves no split to check {copy} against"):
        fit(tiny_config(copy, run, epochs=2), resume=True, progress=False, log=lambda *a: None)
    fit(tiny_config(tiny_lgg, run, epochs=2), resume=True, progress=False, log=lambda *a: None)
    assert [x["epoch"] for x in read_metrics(run)] == [1, 2]


def test_members_with_a_member_index_is_refused(tmp_path):
    with pytest.raises(TumorsegError, match="member trains one ensemble member alone"):
        tiny_config(tmp_path, tmp_path / "r", member=1, model={"base": 4, "depth": 2, "image_size": 64, "members": 2})


def test_summary_names_the_saved_weights_and_the_metric_patience_watches(tiny_lgg, tmp_path):
    """summary.json's weights_sha256 was once the raw weights', not the EMA weights saved; --patience
    without validation patients stopped on the training loss without a word."""
    from tumorseg.runs import state_digest

    logs = []
    cfg = tiny_config(tiny_lgg, tmp_path / "r", epochs=6, val_frac=0.0, lr=1e-9, patience=1, ema=0.9)
    summary = fit(cfg, progress=False, log=logs.append)
    assert summary["weights_sha256"] == state_digest(load_checkpoint(tmp_path / "r" / "last.safetensors").model)
    assert any("no validation patients, so --patience 1 stops on the training loss" in x for x in logs)
    assert summary["best_metric"] == "train_loss" and summary["best_score"] > 0
    stopped = [x for x in logs if x.startswith("early stop:")]  # whether the loss stalled depends on the draws
    assert all(x.startswith("early stop: no improvement of the training loss") for x in stopped)
    assert bool(stopped) == (summary["epochs_done"] < 6)


def test_fit_checks_a_config_changed_after_it_was_made(tiny_lgg, tmp_path):
    """Changed in a notebook after it was built, a config once trained 0 epochs without a word,
    or failed deep in the U-Net ("Sizes of tensors must match")."""
    from tumorseg.config import ModelConfig, TrainConfig

    cfg = TrainConfig(data=tiny_lgg, out=tmp_path / "r", epochs=1, model=ModelConfig(base=4, depth=2, image_size=64))
    assert cfg.data == str(tiny_lgg)  # a pathlib.Path is taken
    cfg.epochs = 0
    with pytest.raises(TumorsegError, match="epochs: Input should be greater than or equal to 1"):
        fit(cfg, progress=False, log=lambda *a: None)
    cfg.epochs, cfg.model.image_size = 1, 66
    with pytest.raises(TumorsegError, match="image_size 66 must be divisible by 2\\*\\*depth = 4"):
        fit(cfg, progress=False, log=lambda *a: None)
    assert not (tmp_path / "r").exists()
    cfg.model.image_size, cfg.model.channels = 64, "flair"  # in_channels follows, as when it is built so
    fit(cfg, progress=False, log=lambda *a: None)
    assert load_checkpoint(tmp_path / "r" / "last.safetensors").config.model.in_channels == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_device_cuda_without_cuda_says_how_to_install_it(tiny_lgg, tmp_path):
    cfg = validate_config({"data": str(tiny_lgg), "out": str(tmp_path / "r"), "device": "cuda", "epochs": 1})
    with pytest.raises(
        TumorsegError,
        match=r"use --device cpu, or install PyTorch's CUDA build first, e\.g\. pip "
        r"install torch --index-url https://download\.pytorch\.org/whl/cu124",
    ):
        fit(cfg, progress=False, log=lambda *a: None)
    assert not (tmp_path / "r").exists()


def _signal_on(line_start: str, said: list[str]):
    """A `log` that keeps each line and sends this process SIGINT when one starts with `line_start`."""
    import os
    import signal

    def log(msg: str) -> None:
        said.append(msg)
        if msg.startswith(line_start):
            os.kill(os.getpid(), signal.SIGINT)

    return log


def test_a_signal_while_loading_or_after_the_last_epoch_stops_and_says_so(tiny_lgg, tmp_path):
    """Under torchrun a signal while the data loaded once ended the run without a word; in one
    process it waited for the data, the model and a batch. And a signal during the last epoch's
    validation or saving was passed over: the run (or an ensemble's combining) went on to exit 0."""
    from tumorseg.errors import Interrupted

    said: list[str] = []
    with pytest.raises(Interrupted):  # at once, from the log line after the patients were decoded
        fit(tiny_config(tiny_lgg, tmp_path / "a", epochs=1), progress=False, log=_signal_on("train slices:", said))
    assert said[-1].startswith("interrupted: nothing saved; start the run again"), said
    assert not list((tmp_path / "a").glob("*.safetensors"))
    said = []
    with pytest.raises(Interrupted):  # after the epoch's line: saved, then stopped
        fit(tiny_config(tiny_lgg, tmp_path / "b", epochs=1), progress=False, log=_signal_on("epoch 1:", said))
    assert said[-1] == f"interrupted after the last epoch: {tmp_path / 'b'} is complete", said
    assert (tmp_path / "b" / "last.safetensors").exists() and (tmp_path / "b" / "summary.json").exists()
