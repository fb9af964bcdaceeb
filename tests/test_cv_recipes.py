"""scripts/cv_recipes.py: the pack reproduces what training reads, and a fold's scores are those
of its checkpoint on the real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_slices

from tumorseg.checkpoint import build_model, load_checkpoint
from tumorseg.data.lgg import find_cases, load_case, split_cases
from tumorseg.data.transforms import resize
from tumorseg.infer import keep_largest_3d, postprocess, slice_probabilities
from tumorseg.metrics import confusion_counts, dice

SCRIPT = Path(__file__).parents[1] / "scripts" / "cv_recipes.py"
PATIENTS = ("TCGA_CS_4941_19960909", "TCGA_CS_4943_20000902", "TCGA_CS_4944_20010208", "TCGA_CS_5393_19990606",
            "TCGA_CS_5395_19981004")  # fmt: skip


def make_pack(lgg_root: Path, tmp_path: Path) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Five real patients, slices 10-14, packed at 64x64: (their folder, the pack, the pack's run)."""
    data = tmp_path / "lgg"
    for pid in PATIENTS:
        copy_slices(lgg_root / pid, data / pid, range(10, 15))
    pack = tmp_path / "pack.npz.xz"
    r = subprocess.run([sys.executable, str(SCRIPT), "pack", "--data", str(data), "--size", "64", "--out", str(pack)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return data, pack, r


def run_fold0(pack: Path, tmp: Path, out: Path, extra: dict) -> dict:
    """`cv_recipes.py run` of R0-shipped's fold 0 with `extra`; its results.json."""
    r = subprocess.run([sys.executable, str(SCRIPT), "run", "--pack", str(pack), "--tmp", str(tmp), "--out", str(out),
                        "--device", "cpu", "--workers", "1", "--recipes", "R0-shipped", "--folds", "0",
                        "--extra", json.dumps(extra)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads((out / "results.json").read_text())


def test_pack_and_one_fold_match_the_real_files(lgg_root, tmp_path):
    data, pack, r = make_pack(lgg_root, tmp_path)
    cases = {c.id: c for c in find_cases(data)}
    split = split_cases(list(cases), 0, 0.0, 0.2, folds=3, fold=0)
    assert "4 of 5 patients" in r.stdout  # the test patient stays out of the pack
    sys.path.insert(0, str(SCRIPT.parent))
    from cv_recipes import PackedData, unpack

    packed = PackedData(unpack(pack, tmp_path / "unpacked"))
    assert [c.id for c in packed.cases] == sorted(cases)  # every id, so the split is the folder's
    for pid in split["train"] + split["val"]:  # what training reads, exactly
        want, got = load_case(cases[pid], 64), packed.load_case(packed.by_id[pid])
        for name in ("images", "masks", "full_masks"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=f"{pid} {name}")
    with pytest.raises(KeyError, match="not in the pack"):
        packed.load_case(packed.by_id[split["test"][0]])

    extra = {"epochs": 1, "batch_size": 4, "model": {"base": 4, "depth": 2, "image_size": 64}}
    tmp, out = tmp_path / "work", tmp_path / "out"
    doc = run_fold0(pack, tmp, out, extra)
    assert not doc["failures"]
    scores = doc["results"]["R0-shipped-f0"]["scores"]
    assert sorted(scores["plain_largest"]) == split["val"]  # the fold of `tumorseg train --folds 3 --fold 0`

    weights = tmp / "runs" / "R0-shipped-f0" / "last.safetensors"
    ckpt = load_checkpoint(weights)
    assert ckpt.meta["split"] == split
    model = build_model(ckpt)
    for pid in split["val"]:
        case = load_case(cases[pid], 64)  # from the tif files, not the pack
        probs = slice_probabilities(model, ckpt.config.model, case.images)
        probs = resize(torch.from_numpy(probs)[:, None], case.full_masks.shape[-2:])[:, 0].numpy()
        mask = postprocess(probs, 0.5)
        # 5e-3: a pixel at p = 0.5 may flip with the thread count
        assert scores["plain_all"][pid] == pytest.approx(dice(confusion_counts(mask, case.full_masks)), abs=5e-3)
        want = dice(confusion_counts(keep_largest_3d(mask), case.full_masks))
        assert scores["plain_largest"][pid] == pytest.approx(want, abs=5e-3)
        # the stress score: both T1 sequences replaced by FLAIR, as the dataset fills missing ones
        flair = case.images.copy()
        flair[:, [0, 2]] = case.images[:, 1:2]
        probs = slice_probabilities(model, ckpt.config.model, flair)
        probs = resize(torch.from_numpy(probs)[:, None], case.full_masks.shape[-2:])[:, 0].numpy()
        want = dice(confusion_counts(keep_largest_3d(postprocess(probs, 0.5)), case.full_masks))
        assert scores["flair_largest"][pid] == pytest.approx(want, abs=5e-3)
    assert np.isfinite(list(scores["tta_largest"].values())).all()

    # another call (another machine, say) asked for folds 0 and 1 merges fold 0 from the first
    # results.json and trains fold 1 only
    earlier = tmp_path / "earlier.json"
    earlier.write_text((out / "results.json").read_text())
    assert doc["results"]["R0-shipped-f0"]["extra"] == extra and doc["results"]["R0-shipped-f0"]["device"] == "cpu"
    out2 = tmp_path / "out2"
    r = subprocess.run([sys.executable, str(SCRIPT), "run", "--pack", str(pack), "--tmp", str(tmp_path / "work2"),
                        "--out", str(out2), "--device", "cpu", "--workers", "1", "--recipes", "R0-shipped",
                        "--folds", "0,1", "--merge", str(earlier), "--extra", json.dumps(extra)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
    assert "merged R0-shipped-f0 from --merge (not trained again)" in r.stdout
    assert sorted(p.name for p in (tmp_path / "work2" / "runs").iterdir()) == ["R0-shipped-f1"]
    merged = json.loads((out2 / "results.json").read_text())
    assert merged["results"]["R0-shipped-f0"] == doc["results"]["R0-shipped-f0"]
    fold1 = split_cases(list(cases), 0, 0.0, 0.2, folds=3, fold=1)["val"]
    assert sorted(merged["results"]["R0-shipped-f1"]["scores"]["plain_largest"]) == fold1
    assert merged["aggregate"]["R0-shipped"]["folds_done"] == 2

    # compare: on the patients both files scored (fold 0's), the same scores
    r = subprocess.run([sys.executable, str(SCRIPT), "compare", str(earlier), str(out2 / "results.json")],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"{len(split['val'])} patients scored by both" in r.stdout and "better on 0, worse on 0" in r.stdout

    # a merged fold that scored other patients than this pack's fold is refused before any training
    wrong = json.loads(earlier.read_text())
    wrong["results"] = {"R0-shipped-f1": {**wrong["results"]["R0-shipped-f0"], "fold": 1}}
    earlier.write_text(json.dumps(wrong))
    r = subprocess.run([sys.executable, str(SCRIPT), "run", "--pack", str(pack), "--tmp", str(tmp_path / "work2"),
                        "--out", str(tmp_path / "out3"), "--recipes", "R0-shipped", "--folds", "2",
                        "--merge", str(earlier), "--extra", json.dumps(extra)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode != 0 and "scored other patients than this pack's fold 1" in r.stderr

    r = subprocess.run([sys.executable, str(SCRIPT), "run", "--pack", str(pack), "--tmp", str(tmp), "--out", str(out),
                        "--recipes", "R99"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode != 0 and "unknown recipes" in r.stderr

    # run again in the same --tmp with one more epoch: the fold resumes from its last epoch, not from scratch
    metrics = tmp / "runs" / "R0-shipped-f0" / "metrics.jsonl"
    first = json.loads(metrics.read_text().splitlines()[0])
    extra["epochs"] = 2
    r = subprocess.run([sys.executable, str(SCRIPT), "run", "--pack", str(pack), "--tmp", str(tmp), "--out", str(out),
                        "--device", "cpu", "--workers", "1", "--recipes", "R0-shipped", "--folds", "0",
                        "--extra", json.dumps(extra)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert lines[0] == first  # epoch 1 was kept, not trained again
    assert json.loads((out / "results.json").read_text())["results"]["R0-shipped-f0"]["epochs"] == 2
    assert json.loads((out / "results.json").read_text())["results"]["R0-shipped-f0"]["train_s"] == pytest.approx(
        sum(x["epoch_seconds"] for x in lines)
    )

    # the same --tmp with other options: the fold there is another run, refused rather than reused
    extra["lr"] = 5e-4
    r = subprocess.run([sys.executable, str(SCRIPT), "run", "--pack", str(pack), "--tmp", str(tmp), "--out", str(out),
                        "--device", "cpu", "--workers", "1", "--recipes", "R0-shipped", "--folds", "0",
                        "--extra", json.dumps(extra)], capture_output=True, text=True, timeout=300)  # fmt: skip
    failures = json.loads((out / "results.json").read_text())["failures"]
    assert "trained with other options" in failures["R0-shipped-f0"], r.stdout
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == [1, 2]  # left as it was


def test_every_recipe_is_a_valid_config():
    """A recipe with a misplaced option (image_size outside `model`) once failed only when its fold ran."""
    from tumorseg.config import validate_config

    sys.path.insert(0, str(SCRIPT.parent))
    from cv_recipes import RECIPES

    for name, recipe in RECIPES.items():
        cfg = validate_config({"data": "d", "out": "o", **recipe}, f"recipe {name}")
        budget = cfg.epochs * (1 + cfg.empty_ratio) * (cfg.model.image_size / 128) ** 2
        assert 100 < budget < 260, f"{name}: about {budget:.0f} slice-epochs at 128, far from the shipped 160"


def test_compare_counts_better_and_worse_on_shared_patients():
    sys.path.insert(0, str(SCRIPT.parent))
    from cv_recipes import compare

    a = {"p1": 0.8, "p2": 0.5, "p3": 0.9, "p4": 0.7}
    b = {"p1": 0.85, "p2": 0.3, "p3": 0.9005, "p5": 0.1}  # p3 within 0.001: neither; p4, p5 not shared
    c = compare(a, b)
    assert (c["n"], c["better"], c["worse"]) == (3, 1, 1)
    assert c["mean_a"] == pytest.approx(2.2 / 3) and c["mean_b"] == pytest.approx(2.0505 / 3)
    assert [pid for pid, _ in c["moved"]] == ["p2", "p1", "p3"]
    with pytest.raises(SystemExit, match="share no patient"):
        compare({"p1": 1.0}, {"p2": 1.0})


def test_merge_refuses_folds_that_could_not_come_from_this_run(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    from cv_recipes import fold_patients, merged

    npz = tmp_path / "pack.npz"  # fold_patients reads only the pack's meta
    ids = [f"TCGA_XX_{i:04d}_20000101" for i in range(12)]
    np.savez(npz, meta=json.dumps({"all_ids": ids, "seed": 0, "test_frac": 0.2}))
    folds = [fold_patients(npz, f) for f in range(3)]
    assert sorted(sum(folds, [])) == sorted(split_cases(ids, 0, 0.0, 0.2)["train"])  # the 3 folds tile training

    def result(recipe, fold, dice=0.8, extra=None):
        r = {"recipe": recipe, "fold": fold, "scores": {k: {p: dice for p in folds[fold]} for k in
             ("plain_all", "plain_largest", "tta_all", "tta_largest")}}  # fmt: skip
        return r if extra is None else {**r, "extra": extra}

    def write(name, results):
        path = tmp_path / name
        path.write_text(json.dumps({"results": {f"{r['recipe']}-f{r['fold']}": r for r in results}}))
        return str(path)

    a = write("a.json", [result("R5", 0), result("R5", 1), result("R0", 2)])
    got = merged([a], ["R5"], npz, {})
    assert sorted(got) == ["R5-f0", "R5-f1"]  # other recipes are left out
    assert got == merged([a, a], ["R5"], npz, {})  # the same fold twice is fine
    b = write("b.json", [result("R5", 1, dice=0.7)])
    with pytest.raises(SystemExit, match="R5-f1 differs from the R5-f1 in .*a.json"):
        merged([a, b], ["R5"], npz, {})
    c = write("c.json", [result("R5", 2, extra={"epochs": 1})])
    with pytest.raises(SystemExit, match='R5-f2 was trained with --extra {"epochs": 1}, this run with {}'):
        merged([c], ["R5"], npz, {})
    assert sorted(merged([c], ["R5"], npz, {"epochs": 1})) == ["R5-f2"]
    bad_key = tmp_path / "d.json"
    bad_key.write_text(json.dumps({"results": {"R5-f0": result("R5", 1)}}))
    with pytest.raises(SystemExit, match="d.json: not a results.json.*R5-f0 holds R5 fold 1"):
        merged([str(bad_key)], ["R5"], npz, {})
    for text in ("{", '{"results": {"R5-f0": {"recipe": "R5"}}}', '{"elapsed_s": 1}'):
        bad_key.write_text(text)
        with pytest.raises(SystemExit, match="d.json: not a results.json of this script"):
            merged([str(bad_key)], ["R5"], npz, {})


def test_a_2_5d_fold_scores_as_evaluate_does(lgg_root, tmp_path):
    """A recipe with --context: the pack's slices get their neighbours' FLAIR as `tumorseg evaluate`
    gives them, so a fold's scores are its checkpoint's on the real files."""
    from tumorseg.data.lgg import slice_numbers
    from tumorseg.infer import Predictor

    data, pack, _ = make_pack(lgg_root, tmp_path)
    extra = {"epochs": 1, "batch_size": 4, "model": {"base": 4, "depth": 2, "image_size": 64, "context": 1}}
    tmp, out = tmp_path / "work", tmp_path / "out"
    doc = run_fold0(pack, tmp, out, extra)
    assert not doc["failures"], doc["failures"]
    scores = doc["results"]["R0-shipped-f0"]["scores"]["plain_all"]
    predictor = Predictor.from_checkpoint(tmp / "runs" / "R0-shipped-f0" / "last.safetensors", backend="torch")
    assert predictor.config.context == 1
    cases = {c.id: c for c in find_cases(data)}
    for pid in scores:
        case = load_case(cases[pid], None)
        probs = predictor.probabilities(case.images, volume=True, numbers=slice_numbers(cases[pid].images))
        want = dice(confusion_counts(postprocess(probs, 0.5), case.full_masks))
        assert scores[pid] == pytest.approx(want, abs=5e-3)


def test_recipes_are_pinned_to_r0s_defaults_not_the_current_ones():
    """Each recipe is BASE (the train defaults R0 was run with) plus its changes, so a change of
    `tumorseg train`'s defaults does not silently change a recipe and its recorded results."""
    import importlib.util

    from tumorseg.config import validate_config

    spec = importlib.util.spec_from_file_location("cv_recipes", SCRIPT)
    cv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cv)
    cfgs = {r: validate_config(cv.recipe_config(r), r) for r in cv.RECIPES}
    r0, r5, r17, r21, r22 = (cfgs[k] for k in ("R0-shipped", "R5-empty0.25-e128", "R17-r5-seqjitter",
                                                "R21-r17-context1", "R22-r17-deepsup"))  # fmt: skip
    assert (r0.epochs, r0.empty_ratio, r0.sequence_jitter, r0.deep_supervision) == (80, 1.0, False, False)
    assert (r5.epochs, r5.empty_ratio, r5.sequence_jitter, r5.deep_supervision) == (128, 0.25, False, False)
    assert r17.sequence_jitter and not r17.deep_supervision and r22.sequence_jitter and r22.deep_supervision
    assert r21.model.context == 1 and r21.model.in_channels == 5 and r17.model.in_channels == 3
    assert all(c.model.image_size == 128 for k, c in cfgs.items() if k != "R13-r5-size160")
    assert {c.loss for c in (r0, r5, r17, r21, r22)} == {"bce+tversky"} and cfgs["R3-bce+dice"].loss == "bce+dice"
    # only the keys a recipe names differ from R0
    r0_dump = r0.model_dump()
    changed = {k for k, v in cfgs["R17-r5-seqjitter"].model_dump().items() if r0_dump[k] != v}
    assert changed == {"epochs", "empty_ratio", "sequence_jitter"}


def test_pack_refuses_a_destination_that_is_not_a_pack(tmp_path):
    """`pack` writes --out; without one (or with a folder name) it stops before reading any data."""
    r = subprocess.run([sys.executable, str(SCRIPT), "pack", "--data", str(tmp_path), "--pack", "x.npz.xz"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "must end in .npz.xz (got cv_recipes_out)" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_compare_pools_folds_from_several_files_with_a_paired_interval():
    """R26 against R0 over all three folds, each fold in its own file (the numbers the cv README gives)."""
    cv = SCRIPT.parents[1] / "benchmarks" / "results" / "cv"
    r0 = ",".join(str(cv / f) for f in ("R23-vs-R0-fold0-bf16.json", "R0-shipped-fold1-bf16.json",
                                        "R0-shipped-fold2-fp32.json"))  # fmt: skip
    r26 = ",".join(str(cv / f"R26-r0-seqjitter-fold{k}") + s for k, s in ((0, "-bf16.json"), (1, "-bf16.json"),
                                                                         (2, "-fp32.json")))  # fmt: skip
    r = subprocess.run([sys.executable, str(SCRIPT), "compare", r0, r26, "--a", "R0-shipped"], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "62 patients scored by both: R0-shipped 0.750, R26-r0-seqjitter 0.802" in r.stdout, r.stdout
    assert "better on 37, worse on 20" in r.stdout
    assert "paired difference +0.052, 95 % bootstrap interval [+0.010, +0.103]" in r.stdout, r.stdout
    twice = f"{cv / 'R0-shipped-fold1-bf16.json'},{cv / 'R0-shipped-fold1-bf16.json'}"
    r = subprocess.run([sys.executable, str(SCRIPT), "compare", twice, r26], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode != 0 and "scores patients that another file" in r.stderr, r.stderr
