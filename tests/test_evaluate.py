import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_here, copy_slices
from PIL import Image

from tumorseg.errors import DataError
from tumorseg.evaluation import evaluate
from tumorseg.infer import (
    Predictor,
    close_call,
    drop_minor_components_3d,
    fill_holes,
    keep_largest_3d,
    largest_3d_noted,
    postprocess,
    regions_3d,
    remove_small_components,
)
from tumorseg.metrics import confusion_counts, dice


def test_evaluate_uses_saved_test_split_and_writes_outputs(tiny_run, tmp_path):
    split = json.loads((tiny_run / "split.json").read_text())
    assert len(split["test"]) == 1
    data = Path(json.loads((tiny_run / "config.json").read_text())["data"])
    said: list[str] = []
    res = evaluate(data, tiny_run / "last.safetensors", "test", tmp_path / "ev", report=True, log=said.append)
    assert [r["patient"] for r in res["per_patient"]] == split["test"]
    assert said[-1] == f"wrote evaluation.json, evaluation.md, report.html in {tmp_path / 'ev'}"  # once unsaid
    for name in ("evaluation.json", "evaluation.md", "report.html"):
        assert (tmp_path / "ev" / name).is_file()
    text = (tmp_path / "ev" / "evaluation.json").read_text()
    saved = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))  # NaN was once written
    assert saved["summary"]["baseline"]["hd95"]["mean"] is None  # n/a: the baseline marks nothing, there is tumor
    assert saved["hd95_unit"] == "px"  # once given for volumes (mm) only
    assert saved["summary"]["baseline"]["dice"]["mean"] == 0.0  # this patient has tumor
    assert saved["summary"]["baseline"]["accuracy"]["mean"] > 0.9
    html = (tmp_path / "ev" / "report.html").read_text()
    # the histogram and curves as PNG, the overlays as lossless WebP (a third smaller)
    assert html.count("data:image/png;base64,") == 2 and html.count("data:image/webp;base64,") >= 1
    assert split["test"][0] in html
    said = "over 0 of 1 patients"  # how many patients each HD95 mean is over, when some are n/a
    assert said in html and said in (tmp_path / "ev" / "evaluation.md").read_text()
    alone = 'Each variant is scored on its own: "+" adds its steps to the plain model at threshold 0.5'
    assert alone in html.replace("&quot;", '"') and alone in (tmp_path / "ev" / "evaluation.md").read_text()
    assert "training curves" in html  # the run folder's curves.png is found beside the weights


def test_evaluate_matches_independent_scoring_of_predict_outputs(tiny_run, tmp_path):
    """Per-patient Dice from `evaluate` equals Dice recomputed from `predict`'s PNGs at 256x256."""
    data = Path(json.loads((tiny_run / "config.json").read_text())["data"])
    pid = json.loads((tiny_run / "split.json").read_text())["test"][0]
    weights = tiny_run / "last.safetensors"
    res = evaluate(data, weights, "test", log=lambda *a: None)
    r = cli_here("predict", str(data / pid), "--out", str(tmp_path / "p"), "--weights", str(weights))
    assert r.returncode == 0, r.stderr
    tp = fp = fn = 0
    for mask_path in sorted((data / pid).glob("*_mask.png")):
        stem = mask_path.stem[: -len("_mask")]
        pred = np.asarray(Image.open(tmp_path / "p" / f"{stem}_pred.png")) > 0
        truth = np.asarray(Image.open(mask_path)) > 0
        assert pred.shape == truth.shape == (256, 256)
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
    expected = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    assert res["per_patient"][0]["dice"] == pytest.approx(expected, abs=1e-9)


def test_evaluate_cli_prints_table_with_baseline(tiny_run):
    data = json.loads((tiny_run / "config.json").read_text())["data"]
    r = cli_here("evaluate", "--data", data, "--weights", str(tiny_run / "last.safetensors"), "--split", "test")
    assert r.returncode == 0, r.stderr
    assert re.search(r'always "no tumor" baseline\s+0\.000', r.stdout)
    assert "median" in r.stdout and "std" in r.stdout
    assert 'Each variant is scored on its own: "+" adds its steps' in r.stdout  # "+ flip TTA" read as cumulative


def test_evaluate_that_cannot_write_one_file_writes_the_others_and_says_so(tiny_run, tmp_path):
    """A folder where evaluation.json goes (or a full disk) once ended a finished evaluation in a
    traceback, with nothing saved."""
    data = json.loads((tiny_run / "config.json").read_text())["data"]
    (tmp_path / "ev" / "evaluation.json").mkdir(parents=True)
    r = cli_here(
        "evaluate",
        "--data",
        data,
        "--weights",
        str(tiny_run / "last.safetensors"),
        "--split",
        "test",
        "--out",
        str(tmp_path / "ev"),
        "--report",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{tmp_path / 'ev' / 'evaluation.json'}: cannot write (exists and is not a regular file" in r.stderr
    assert "The scores above were printed" in r.stderr and "mean" in r.stdout
    assert (tmp_path / "ev" / "evaluation.md").is_file() and (tmp_path / "ev" / "report.html").is_file()


@pytest.mark.parametrize(
    "env, both",
    [({"PYTHONUNBUFFERED": "1"}, False), ({}, False), ({"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "ascii"}, True)],
)
def test_evaluate_whose_reader_goes_away_still_writes_its_files(tiny_run, tmp_path, env, both):
    """`evaluate ... | head -1` once stopped at the first line that met the closed pipe: exit 1,
    no message and nothing written. Unbuffered, every line meets it; buffered, the flush at exit;
    with `2>&1 | head` (and an ASCII stdout), stderr meets it too."""
    import os

    data = json.loads((tiny_run / "config.json").read_text())["data"]
    cmd = [sys.executable, "-m", "tumorseg", "evaluate", "--data", data, "--weights",
           str(tiny_run / "last.safetensors"), "--split", "test", "--out", str(tmp_path / "ev")]  # fmt: skip
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    p = subprocess.Popen(cmd, stdout=write, stderr=write if both else subprocess.PIPE, text=True,
                         env={**os.environ, **env})  # fmt: skip
    os.close(write)
    err = p.communicate(timeout=300)[1] or ""
    assert p.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert len(saved["per_patient"]) == 1


def test_evaluate_split_missing_from_data(tiny_run, tmp_path, lgg_root):
    from conftest import copy_slices

    from tumorseg.errors import TumorsegError

    copy_slices(lgg_root / "TCGA_CS_5393_19990606", tmp_path / "other" / "TCGA_CS_5393_19990606", range(1, 4))
    with pytest.raises(TumorsegError, match="missing"):
        evaluate(tmp_path / "other", tiny_run / "last.safetensors", "test", log=lambda *a: None)
    res = evaluate(tmp_path / "other", tiny_run / "last.safetensors", "all", log=lambda *a: None)
    assert res["patients"] == 1


def test_evaluate_scores_missing_sequences_as_the_dataset_fills_them(tiny_run, tmp_path):
    """--missing-sequences scores each patient again with T1 channels replaced by FLAIR; each variant's
    per-patient Dice equals a direct segmentation of the altered slices, and the CLI prints them."""
    from tumorseg.data.lgg import find_cases, load_case
    from tumorseg.evaluation import MISSING, without_sequences
    from tumorseg.metrics import score_volume

    data = Path(json.loads((tiny_run / "config.json").read_text())["data"])
    weights = tiny_run / "last.safetensors"
    res = evaluate(data, weights, "test", missing=True, log=lambda *a: None)
    assert res["settings"]["missing_sequences"] is True
    pid = res["per_patient"][0]["patient"]
    case = load_case(find_cases(data / pid)[0], None)
    pred = Predictor.from_checkpoint(weights)
    for name, chans in MISSING.items():
        img = without_sequences(case.images, chans)
        assert all(np.array_equal(img[:, c], case.images[:, 1]) for c in chans)
        kept = [c for c in range(3) if c not in chans]
        assert all(np.array_equal(img[:, c], case.images[:, c]) for c in kept)
        want = score_volume(pred.segment(img, volume=True), case.full_masks)["dice"]
        assert res["summary"][name]["dice"]["mean"] == pytest.approx(want, abs=1e-9)
    assert "no_pre_t1" not in evaluate(data, weights, "test", log=lambda *a: None)["summary"]
    r = cli_here("evaluate", "--data", str(data), "--weights", str(weights), "--missing-sequences")
    assert r.returncode == 0, r.stderr
    for label in ("FLAIR for pre-contrast T1", "FLAIR for post-contrast T1", "FLAIR for both T1s"):
        assert label in r.stdout


def test_remove_small_components():
    m = np.zeros((2, 10, 10), bool)
    m[0, 0:2, 0:2] = True  # 4 px
    m[0, 5:9, 5:9] = True  # 16 px
    m[1, 3, 3] = True
    out = remove_small_components(m, 5)
    assert out[0, 5:9, 5:9].all() and not out[0, 0:2, 0:2].any() and not out[1].any()
    assert np.array_equal(remove_small_components(m, 0), m)


def test_remove_small_components_is_8_connected_and_keeps_exactly_min_size():
    """Parts touching at a corner are one part (8-connected), and a part of exactly `min_size` pixels
    stays: only parts smaller than it go."""
    diagonal = np.eye(3, dtype=bool)[None]  # three pixels touching corner to corner
    assert np.array_equal(remove_small_components(diagonal, 3), diagonal)
    assert not remove_small_components(diagonal, 4).any()
    m = np.zeros((1, 12, 12), bool)
    m[0, 1:3, 1:4] = True  # 6 px
    m[0, 6:11, 6] = True  # 5 px
    out = remove_small_components(m, 6)
    assert out[0, 1:3, 1:4].all() and out.sum() == 6  # exactly min_size: kept; min_size - 1: dropped


def test_fill_holes_fills_enclosed_holes_only():
    m = np.zeros((2, 12, 12), bool)
    m[0, 2:9, 2:9] = True
    m[0, 4:7, 4:7] = False  # an enclosed hole: filled
    m[1, 0:6, 0:6] = True
    m[1, 0:3, 2:4] = False  # a notch open to the border: not a hole
    out = fill_holes(m)
    assert out[0, 2:9, 2:9].all() and out[0].sum() == 49
    assert np.array_equal(out[1], m[1])
    assert np.array_equal(fill_holes(m[0]), out[0])  # a single slice (H, W) too
    ring = np.zeros((10, 10), np.float32)
    ring[2:8, 2:8] = 0.9
    ring[4:6, 4:6] = 0.1
    assert postprocess(ring).sum() == 36 and postprocess(ring, holes=False).sum() == 32
    assert postprocess(ring, threshold=0.95).sum() == 0
    # holes are filled before small parts go: the ring alone (32 px) is under 34, the filled square (36) is not
    assert postprocess(ring, min_size=34).sum() == 36 and postprocess(ring, min_size=36).sum() == 36
    assert postprocess(ring, min_size=34, holes=False).sum() == 0 and postprocess(ring, min_size=37).sum() == 0


def test_predictor_fills_holes_unless_told_not_to(tiny_run):
    probs = np.zeros((1, 16, 16), np.float32)
    probs[0, 3:12, 3:12] = 0.8
    probs[0, 6:9, 6:9] = 0.2
    on = Predictor.from_checkpoint(tiny_run / "last.safetensors", backend="torch")
    off = Predictor.from_checkpoint(tiny_run / "last.safetensors", backend="torch", fill_holes=False)
    assert on.mask(probs)[0, 3:12, 3:12].all()
    assert off.mask(probs).sum() == 81 - 9


def test_drop_minor_components_3d():
    m = np.zeros((4, 10, 10), bool)
    m[0:3, 2:6, 2:6] = True  # 48 voxels across 3 slices: the tumor
    m[3, 8, 8] = True  # 1 voxel, diagonal neighbour of nothing: a false alarm
    m[0, 8:10, 0:3] = True  # 6 voxels = 12.5 % of the largest: kept at 10 %
    out = drop_minor_components_3d(m, 0.1)
    assert out[0:3, 2:6, 2:6].all() and not out[3, 8, 8] and out[0, 8:10, 0:3].all()
    assert out.sum() == 48 + 6
    assert not drop_minor_components_3d(m, 0.5)[0, 8:10, 0:3].any()
    m[2, 6, 6] = m[3, 7, 7] = True  # a diagonal bridge joins the lone voxel to the tumor in 3D
    assert drop_minor_components_3d(m, 0.5)[3, 8, 8]
    assert not drop_minor_components_3d(np.zeros((2, 4, 4), bool), 0.1).any()


def test_keep_largest_3d():
    m = np.zeros((6, 12, 12), bool)
    m[0:2, 1:5, 1:5] = True  # 32 voxels in slices 0-1: a false-alarm block
    m[3:6, 4:9, 4:9] = True  # 75 voxels in slices 3-5: the tumor
    out = keep_largest_3d(m)
    assert out.sum() == 75 and out[3:6, 4:9, 4:9].all() and not out[0:2].any()
    m[2, 5, 5] = True  # one voxel in slice 2 touches both blocks (26-connected): one part
    assert keep_largest_3d(m).sum() == 32 + 75 + 1
    assert not keep_largest_3d(np.zeros((3, 4, 4), bool)).any()


def test_close_call_names_the_kept_and_the_dropped_regions():
    m = np.zeros((8, 12, 12), bool)
    m[1:3, 1:5, 1:5] = True  # 32 voxels, slices 1-2 (from 0)
    m[5:8, 4:9, 4:9] = True  # 75 voxels, slices 5-7
    assert close_call(m, ratio=0.5) is None  # 32 < 0.5 * 75
    kept, note = largest_3d_noted(m, ratio=0.4)
    assert np.array_equal(kept, keep_largest_3d(m))
    assert "(slices counted from 0): kept 75 voxels in slices 5-7; dropped 32 voxels in slices 1-2." in note
    assert "slice numbers): kept 75 voxels in slices 15-17;" in close_call(m, list(range(10, 18)), 0.4)
    m[0, 10:12, 10:12] = True  # a third, small region is not named
    assert close_call(m, ratio=0.4) == note
    m[1:3, 5:6, 1:5] = m[1:3, 1:5, 5:6] = True  # the block grows to 48 voxels
    m[6, 0, 0] = True  # a lone voxel in slice 6: below the ratio, not named
    assert "dropped 48 voxels in slices 1-2; 4 voxels in slice 0. The dropped regions may" in close_call(m, ratio=0.05)
    m[1:3, 5:8, 5:9] = m[1:3, 8, 1:9] = True  # now 88 voxels: the tumor is the one dropped
    assert "kept 88 voxels in slices 1-2; dropped 75 voxels in slices 5-7." in close_call(m, ratio=0.8)
    twins = np.zeros((6, 8, 8), bool)
    twins[0, 0:2, 0:2] = twins[5, 5:7, 5:7] = True  # equal largest regions are both kept
    twins[3, 0, 7] = True
    assert close_call(twins, ratio=0.1) == (
        "close call of the largest-region step (slices counted from 0): kept 4 voxels in slice 0; "
        "4 voxels in slice 5; dropped 1 voxel in slice 3. The dropped region may be tumor too"
    )
    assert close_call(twins, ratio=0.5) is None
    assert close_call(np.zeros((3, 4, 4), bool)) is None and close_call(m[6:7]) is None
    one = np.zeros((1, 8, 8), bool)
    one[0, 0:2, 0:2] = one[0, 5:7, 5:7] = True  # a single slice is a volume of one slice here
    assert close_call(one) is None  # two equal regions: both kept
    one[0, 5:7, 7] = True
    assert "kept 6 voxels in slice 0; dropped 4 voxels in slice 0." in close_call(one)


def test_predictor_notes_close_calls_of_volumes_only(tiny_run):
    probs = np.zeros((4, 16, 16), np.float32)
    probs[0, 1:7, 1:7] = 0.9  # 36 px, slice 0
    probs[2:4, 8:14, 8:14] = 0.9  # 72 px, slices 2-3
    pred = Predictor.from_checkpoint(tiny_run / "last.safetensors", backend="torch")
    masks, notes = pred.mask_with_notes(probs, volume=True, numbers=[5, 6, 7, 8])
    assert masks.sum() == 72 and len(notes) == 1 and "dropped 36 voxels in slice 5." in notes[0]
    assert pred.mask_with_notes(probs)[1] == []  # lone slices keep every region: nothing to note
    every, notes = pred.mask_with_notes(probs, volume=True, largest=False)
    assert every.sum() == 108 and notes == []
    probs[0] = 0
    probs[0, 1:3, 1:3] = 0.9  # 4 px: far from a close call
    assert pred.mask_with_notes(probs, volume=True)[1] == []


def test_evaluate_reports_the_shipped_models_close_call(lgg_root, tmp_path):
    """The shipped model marks tumor-free slices below TCGA_CS_5395's small tumor (slices 11-14),
    a region nearly as large as the tumor: evaluate keeps the tumor and notes the close call in
    its printout, evaluation.json, evaluation.md and the HTML report."""
    copy_slices(lgg_root / "TCGA_CS_5395_19981004", tmp_path / "data" / "TCGA_CS_5395_19981004", range(1, 21))
    lines = []
    result = evaluate(tmp_path / "data", split="all", out=tmp_path / "ev", report=True, log=lines.append)
    (row,) = result["per_patient"]
    assert len(row["notes"]) == 1 and "(slice numbers): kept " in row["notes"][0]
    assert " voxels in slices 11-14; dropped " in row["notes"][0] and row["dice"] > 0.5
    assert any(row["notes"][0] in line for line in lines)
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["per_patient"][0]["notes"] == row["notes"]
    assert row["notes"][0] in (tmp_path / "ev" / "evaluation.md").read_text()
    assert "largest-region step (slice numbers)" in (tmp_path / "ev" / "report.html").read_text()


def test_a_gap_in_the_slice_numbers_parts_the_regions_either_side(lgg_root, tmp_path):
    """Slices 7-10 of TCGA_CS_5395 missing: 6 and 11 were once stacked as neighbours, so the shipped
    model's false-alarm block (5-6) joined the tumor (11-14) into one part, kept whole (Dice 0.55).
    Now the gap parts them and the score is the one with every slice there."""
    src = lgg_root / "TCGA_CS_5395_19981004"
    copy_slices(src, tmp_path / "all" / src.name, range(1, 21))
    for part in (range(1, 7), range(11, 21)):
        copy_slices(src, tmp_path / "gap" / src.name, part)
    whole, gap = (evaluate(tmp_path / d, split="all", log=lambda *a: None)["per_patient"][0] for d in ("all", "gap"))
    assert gap["dice"] == pytest.approx(whole["dice"], abs=0.01) and gap["dice"] > 0.7
    assert whole["notes"][0].startswith("close call") and not any("lack" in n for n in whole["notes"])
    assert (
        gap["notes"][0].startswith("slices 1-20 lack 7, 8, 9, 10: scored as one patient")
        and "predict" in gap["notes"][0]
    )
    assert "kept 3202 voxels in slices 11-14; dropped 2356 voxels in slices 5-6" in gap["notes"][1]
    every = evaluate(tmp_path / "gap", split="all", largest=False, log=lambda *a: None)["per_patient"][0]
    assert every["notes"] == []  # --all-parts drops nothing, as predict on these files: no note
    # what the note says of predict holds: on these files it keeps the false-alarm block the score dropped
    r = cli_here("predict", str(tmp_path / "gap" / src.name), "--out", str(tmp_path / "pred"))
    assert r.returncode == 0 and "segmented one by one" in r.stdout, r.stdout + r.stderr
    kept = [(np.asarray(Image.open(tmp_path / "pred" / f"{src.name}_{n}_pred.png")) > 0).sum() for n in (5, 6)]
    assert min(kept) > 0, kept
    m = np.zeros((4, 8, 8), bool)
    m[0:2, 1:4, 1:4] = m[2:4, 2:5, 2:5] = True  # touching when stacked: one part of 18 + 18
    assert keep_largest_3d(m).sum() == 36 and keep_largest_3d(m, [5, 6, 9, 10]).sum() == 36  # equal: both
    m[3, 5, 5] = True
    assert keep_largest_3d(m, [5, 6, 9, 10]).sum() == 19 and keep_largest_3d(m, [5, 6, 7, 8]).sum() == 37
    assert keep_largest_3d(m, [5, 6, 6, 7]).sum() == 19  # a repeated number is a break too


def test_regions_3d_labels_within_the_bounding_box_as_over_the_whole_stack():
    """Labelled within the mask's bounding box for speed (a 512x512x160 volume: 1.6 s -> 0.06 s):
    the labels, count and sizes are those of labelling the whole stack, slice-number breaks too."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for k in range(200):
        m = rng.random(tuple(rng.integers(1, 10, 3))) < rng.random() * 0.3
        m = np.pad(m, [(int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(3)])
        numbers = list(np.cumsum(rng.integers(0, 3, len(m)))) if k % 2 else None
        labels, n, sizes = regions_3d(m, numbers)
        breaks = [] if numbers is None else [i for i in range(1, len(m)) if numbers[i] - numbers[i - 1] != 1]
        parts = np.split(m, breaks)
        want, total = [], 0
        for part in parts:  # each run of consecutive numbers labelled on its own, numbered on from the last
            got, count = ndimage.label(part, structure=np.ones((3, 3, 3)))
            want.append(np.where(got > 0, got + total, 0))
            total += count
        assert n == total and np.array_equal(labels, np.concatenate(want)), k
        assert np.array_equal(sizes[1:], np.bincount(labels.ravel(), minlength=n + 1)[1:]) and sizes[0] == 0


def test_predictor_keeps_the_largest_part_of_volumes_only(tiny_run):
    probs = np.zeros((4, 16, 16), np.float32)
    probs[0, 1:4, 1:4] = 0.9  # 9 px, slice 0
    probs[2:4, 8:14, 8:14] = 0.9  # 72 px, slices 2-3
    weights = tiny_run / "last.safetensors"
    pred = Predictor.from_checkpoint(weights, backend="torch")
    assert pred.mask(probs, volume=True).sum() == 72  # a volume: the largest 3D part
    assert pred.mask(probs).sum() == 81  # slices not known to be one volume keep every part
    assert pred.mask(probs[:1], volume=True).sum() == 9  # a one-slice volume is a lone slice
    assert Predictor.from_checkpoint(weights, backend="torch", largest=False).mask(probs, volume=True).sum() == 81


def test_tta_is_mean_of_plain_and_flipped(tiny_run, lgg_root):
    pred = Predictor.from_checkpoint(tiny_run / "last.safetensors", tta=True)
    img = np.asarray(Image.open(next((lgg_root / "TCGA_CS_4941_19960909").glob("*_12.png"))))
    x = img.transpose(2, 0, 1)[None]
    both = pred.predict(x)
    plain, flipped = pred.probabilities(x), pred.probabilities(x, flip=True)
    np.testing.assert_allclose(both, (plain + flipped) / 2, atol=1e-6)
    assert both.shape == (1, 256, 256)
    d = dice(confusion_counts(plain > 0.5, plain > 0.5))
    assert d == 1.0


def test_pairs_csv_names_the_file_line_of_each_problem(tmp_path):
    """A trailing comma once gave an AttributeError traceback; blank lines once shifted the line
    numbers the errors name."""
    from tumorseg.errors import TumorsegError
    from tumorseg.evaluation import read_pairs_csv

    for name in ("a.nii.gz", "a_mask.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    csv = tmp_path / "pairs.csv"
    csv.write_text("image,mask,patient\n\na.nii.gz,a_mask.nii.gz,\n a.nii.gz , a_mask.nii.gz ,P1\n")
    assert read_pairs_csv(csv) == [(tmp_path / "a.nii.gz", tmp_path / "a_mask.nii.gz")] * 2
    csv.write_text("image,mask\na.nii.gz,a_mask.nii.gz,\n\n\na.nii.gz,a_mask.nii.gz,extra\na.nii.gz\n")
    with pytest.raises(TumorsegError) as err:
        read_pairs_csv(csv)
    msg = str(err.value)
    assert "line 2" not in msg and "line 5: 3 cells, the header names 2" in msg and "line 6: no mask" in msg
    # a quoted cell that holds a line break: the row is named by the line it starts on
    csv.write_text('image,mask,note\nc.nii.gz,a_mask.nii.gz,"two\nlines"\nb.nii.gz,a_mask.nii.gz,x\n')
    with pytest.raises(TumorsegError) as err:
        read_pairs_csv(csv)
    assert re.search(r"line 2: image \S*c.nii.gz does not exist; line 4: image \S*b.nii.gz", str(err.value))
    csv.write_text("image,mask\n")
    with pytest.raises(TumorsegError, match="expected a header line"):
        read_pairs_csv(csv)


def test_a_broken_patient_outside_the_split_stops_nothing(tiny_run, tmp_path):
    import shutil

    data = Path(json.loads((tiny_run / "config.json").read_text())["data"])
    pid = json.loads((tiny_run / "split.json").read_text())["test"][0]
    shutil.copytree(data / pid, tmp_path / "lgg" / pid)
    broken = tmp_path / "lgg" / "ZZ_BROKEN"
    broken.mkdir()
    shutil.copy(next(p for p in sorted((data / pid).iterdir()) if "_mask" not in p.name), broken / "ZZ_BROKEN_1.png")
    res = evaluate(tmp_path / "lgg", tiny_run / "last.safetensors", "test", log=lambda *a: None)
    assert [r["patient"] for r in res["per_patient"]] == [pid]
    # scoring every patient reads it, and says what is wrong (the project's own error, not any exception)
    with pytest.raises(DataError, match=r"ZZ_BROKEN_1\.png: image has no mask \(expected ZZ_BROKEN_1_mask\.png\)"):
        evaluate(tmp_path / "lgg", tiny_run / "last.safetensors", "all", log=lambda *a: None)


def test_a_patient_that_fails_to_load_is_named_and_the_others_are_scored_and_written(tiny_run, tmp_path):
    """A mask of the wrong size in one patient once stopped `evaluate --data` with exit 2 and threw away
    every patient scored before it; `--pairs` already went on with the others."""
    import shutil

    data = Path(json.loads((tiny_run / "config.json").read_text())["data"])
    split = json.loads((tiny_run / "split.json").read_text())
    good, bad = sorted([split["test"][0], split["train"][0]])
    for pid in (good, bad):
        shutil.copytree(data / pid, tmp_path / "lgg" / pid)
    mask = sorted((tmp_path / "lgg" / bad).glob("*_mask.*"))[0]
    Image.open(mask).resize((64, 64)).save(mask)
    out = tmp_path / "ev"
    r = cli_here(
        "evaluate",
        "--data",
        str(tmp_path / "lgg"),
        "--weights",
        str(tiny_run / "last.safetensors"),
        "--split",
        "all",
        "--out",
        str(out),
        "--report",
    )
    assert r.returncode == 1, r.stderr
    assert f"{bad}: failed: {mask}" in r.stdout and "1 of 2 patients failed" in r.stdout, r.stdout
    res = json.loads((out / "evaluation.json").read_text())
    assert [p["patient"] for p in res["per_patient"]] == [good] and res["patients"] == 1
    assert res["failed"][0]["image"] == str(tmp_path / "lgg" / bad) and mask.name in res["failed"][0]["error"]
    assert "Not scored" in (out / "evaluation.md").read_text() and "Not scored" in (out / "report.html").read_text()
    said = "1 of 2 patients scored"  # the titles once said "1 patients", as if one had been asked for
    assert said in (out / "evaluation.md").read_text().splitlines()[0] and said in (out / "report.html").read_text()


def test_missing_sequence_rows_keep_the_largest_part_within_a_gap_free_run(lgg_root, tmp_path):
    """The --missing-sequences rows once joined the slices on either side of a gap in the slice
    numbers (the chosen row keeps them apart). With one grayscale image per slice, replacing a T1
    by FLAIR changes nothing, so every row must score as the chosen one."""
    case = "TCGA_CS_4941_19960909"
    folder = tmp_path / "d" / "P_gap"
    folder.mkdir(parents=True)
    for i, n in zip(range(10, 15), (1, 2, 3, 7, 8)):
        flair = np.asarray(Image.open(lgg_root / case / f"{case}_{i}.png"))[..., 1]
        Image.fromarray(flair).save(folder / f"P_gap_{n}.png")
        Image.open(lgg_root / case / f"{case}_{i}_mask.png").save(folder / f"P_gap_{n}_mask.png")
    r = cli_here(
        "evaluate", "--data", str(tmp_path / "d"), "--split", "all", "--missing-sequences", "--out", str(tmp_path / "e")
    )
    assert r.returncode == 0, r.stderr
    rows = {line[:36].strip(): line[36:].split() for line in r.stdout.splitlines() if "chosen" in line}
    assert len(rows) == 4 and len({tuple(v) for v in rows.values()}) == 1, r.stdout


def test_slice_dice_mean_says_how_many_patients_it_covers(lgg_root, tmp_path):
    """A patient without a tumor slice has no slice_dice (n/a): evaluation.md and the report once gave
    its mean without saying it covers fewer patients than the headline."""
    for name, numbers in (("TCGA_CS_4941_19960909", range(1, 5)), ("TCGA_CS_5395_19981004", range(10, 16))):
        copy_slices(lgg_root / name, tmp_path / "data" / name, numbers)
    result = evaluate(tmp_path / "data", split="all", out=tmp_path / "ev", report=True, log=lambda *a: None)
    rows = {r["patient"]: r for r in result["per_patient"]}
    assert np.isnan(rows["TCGA_CS_4941_19960909"]["slice_dice"]) and rows["TCGA_CS_5395_19981004"]["tumor_slices"]
    said = "slice_dice means are over the 1 of 2 patients with a tumor slice (n/a for the 1 without one)"
    assert said in (tmp_path / "ev" / "evaluation.md").read_text()
    html = (tmp_path / "ev" / "report.html").read_text()
    assert said in html and "slice_dice mean" in html  # the mean the note is about is on the page


def test_markdown_escapes_names_that_would_break_its_table(tiny_run):
    """A patient folder named `E |pipe| <img src=x onerror=alert(1)>` once added table columns and live HTML
    to evaluation.md (report.html escaped it)."""
    from tumorseg.evaluation_text import markdown

    res = evaluate(Path(json.loads((tiny_run / "config.json").read_text())["data"]), tiny_run / "last.safetensors",
                   "test", log=lambda *a: None)  # fmt: skip
    name = "E |pipe| <img src=x onerror=alert(1)>"
    res["per_patient"][0]["patient"] = name
    from markdown_it import MarkdownIt

    row = next(line for line in markdown(res).splitlines() if line.startswith("| `E "))
    header = next(line for line in markdown(res).splitlines() if line.startswith("| patient"))
    assert row.count(" | ") == header.count(" | ")  # as many cells as the header
    shown = MarkdownIt("commonmark").enable("table").render(markdown(res))
    assert "<img" not in shown and "<td><code>E |pipe| &lt;img src=x onerror=alert(1)&gt;</code></td>" in shown


def test_evaluate_names_grey_masks_that_hold_no_tumor(tiny_run, tiny_lgg):
    """A grey mask whose tumor was saved under 128 (0-100, many values: not labels) is read as no
    tumor, as check-data says; evaluate once scored such a patient's Dice 0 without a word."""
    pid = sorted(p.name for p in tiny_lgg.iterdir())[0]
    masks = sorted((tiny_lgg / pid).glob("*_mask.png"))
    tumor = [m for m in masks if np.asarray(Image.open(m)).max() > 127]
    assert len(tumor) >= 2
    ramp = np.arange(256 * 256).reshape(256, 256) % 40  # 40 values: grey, not labels
    for m in tumor:
        Image.fromarray(np.where(np.asarray(Image.open(m)) > 127, 60 + ramp, 0).astype(np.uint8)).save(m)
    said: list[str] = []
    res = evaluate(tiny_lgg, tiny_run / "last.safetensors", "all", log=said.append)
    assert res["patients"] == 2
    warned = [s for s in said if "no value above 127, so read as no tumor" in s]
    assert len(warned) == 1, said
    assert str(tumor[0]) in warned[0] and f"and {len(tumor) - 1} more of {pid}'s masks" in warned[0]


def test_names_that_are_markdown_or_not_utf8_are_written_as_they_are(tiny_run, lgg_root, tmp_path):
    """A patient folder named like a Markdown link became a link and a remote image in
    evaluation.md; one whose name is not UTF-8 (Latin-1 bytes) made the report a traceback with
    only evaluation.json written."""
    import os

    from markdown_it import MarkdownIt

    data = tmp_path / "data"
    names = ["[open me](evil.example) ![px](https:tracker.example) *it*", os.fsdecode(b"M\xfcller")]
    for name in names:
        copy_slices(lgg_root / "TCGA_CS_4941_19960909", data / name, range(16, 18))
    out = tmp_path / "ev"
    res = evaluate(data, tiny_run / "last.safetensors", "all", out, report=True, log=lambda *a: None)
    assert res["patients"] == 2
    md = (out / "evaluation.md").read_text(encoding="utf-8")
    assert "M\\xfcller" in md and "M\\xfcller" in (out / "report.html").read_text(encoding="utf-8")
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert "<a " not in rendered and "<img" not in rendered and "<em>" not in rendered
    assert f"<code>{names[0]}</code>" in rendered


def test_tumor_free_patients_are_said_to_favour_the_baseline(tiny_run, lgg_root, tmp_path):
    """With tumor-free patients scored, the always "no tumor" baseline beat the model on mean Dice
    and had a "perfect" HD95 mean, and nothing said why (QA)."""
    data = tmp_path / "lgg"
    copy_slices(lgg_root / "TCGA_CS_4941_19960909", data / "TCGA_CS_4941_19960909", range(1, 4))  # no tumor
    copy_slices(lgg_root / "TCGA_CS_4944_20010208", data / "TCGA_CS_4944_20010208", range(6, 22))
    said: list[str] = []
    res = evaluate(data, tiny_run / "last.safetensors", "all", tmp_path / "ev", log=said.append)
    rows = {r["patient"]: r for r in res["per_patient"]}
    assert rows["TCGA_CS_4941_19960909"]["tumor_slices"] == 0 and rows["TCGA_CS_4944_20010208"]["tumor_slices"] > 0
    want = (f'1 of 2 patients have no tumor in their truth: by the empty-mask rule each scores Dice 1 and HD95 0 when '
            f'nothing is marked, as the always "no tumor" baseline does, and Dice 0 when anything is, so means over '
            f"every patient favour the baseline; over the 1 with tumor the model's mean Dice is "
            f"{rows['TCGA_CS_4944_20010208']['dice']:.3f}, the baseline's 0.000")  # fmt: skip
    assert want in said
    assert want in (tmp_path / "ev" / "evaluation.md").read_text()
