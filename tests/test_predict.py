import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_here, copy_slices
from PIL import Image

from tumorseg.checkpoint import load_checkpoint
from tumorseg.data.lgg import slice_number
from tumorseg.infer import DEFAULT_WEIGHTS, close_call, keep_largest_3d


def run_predict(*args):
    """`tumorseg predict ARGS`, by the CLI's main() in this process (a subprocess spends 3 s starting)."""
    return cli_here("predict", *args)


def test_patient_folder_pred_and_overlay_per_slice(tiny_run, lgg_root, tmp_path):
    src = lgg_root / "TCGA_CS_4941_19960909"
    n = len([p for p in src.glob("*.png") if not p.stem.endswith("_mask")])
    r = run_predict(src, "--out", tmp_path / "p", "--overlay", "--probabilities", "--weights",
                    tiny_run / "last.safetensors")  # fmt: skip
    assert r.returncode == 0, r.stderr
    preds = sorted((tmp_path / "p").glob("*_pred.png"))
    assert len(preds) == n and len(list((tmp_path / "p").glob("*_overlay.png"))) == n
    assert not list((tmp_path / "p").glob("*_mask_pred.png"))  # masks are truth, never inputs
    m = np.asarray(Image.open(preds[0]))
    assert m.shape == (256, 256) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
    prob = np.asarray(Image.open(tmp_path / "p" / preds[0].name.replace("_pred", "_prob")))
    assert prob.shape == (256, 256)
    ov = Image.open(tmp_path / "p" / preds[0].name.replace("_pred", "_overlay"))
    assert ov.width > 3 * 256  # MRI, truth, prediction, overlay side by side


def test_overlay_truths_of_a_series_share_one_mask_rule(lgg_root, tmp_path):
    """A series' 0/255 truths with stray 1s: a tumor-free slice's overlay once drew its 1s as truth,
    read as a 0/1 mask on its own. A lone slice still decides by its own values."""
    from conftest import copy_slices

    from tumorseg.predict import _overlay_truth, _truths_are_labels, find_truth

    folder = tmp_path / "s"
    copy_slices(lgg_root / "TCGA_CS_4941_19960909", folder, range(10, 14))  # slice 10: no tumor
    slices = sorted((p for p in folder.glob("*.png") if not p.stem.endswith("_mask")), key=slice_number)
    first = find_truth(slices[0])
    stray = np.asarray(Image.open(first)).copy()
    assert stray.max() == 0
    stray[::9, ::9] = 1
    Image.fromarray(stray).save(first)
    labels = _truths_are_labels(slices)
    assert not labels and _truths_are_labels(slices[:1])  # the tumor slices' 255s decide for the series
    assert not _overlay_truth(first, stray.shape, [], labels).any()  # in its series: 0/255, so 1 is not tumor
    assert _overlay_truth(first, stray.shape, []).sum() == (stray == 1).sum()  # alone: a 0/1 mask
    # the series saved as labels 0/2: its truths keep their tumor (they were read above 127: empty)
    for s in slices:
        t = find_truth(s)
        Image.fromarray(np.where(np.asarray(Image.open(t)) > 127, 2, 0).astype(np.uint8)).save(t)
    labels = _truths_are_labels(slices)
    last = find_truth(slices[-1])
    drawn = _overlay_truth(last, stray.shape, [], labels)
    assert labels and drawn.sum() == (np.asarray(Image.open(last)) == 2).sum() > 0


def test_series_keep_their_largest_3d_part_and_lone_slices_every_part(lgg_root, tmp_path):
    """The shipped model on a test patient: a numbered series is one volume whose mask is the
    largest 3D part of what --all-parts writes; a lone copy of a slice keeps every part."""
    folder = tmp_path / "in"
    shutil.copytree(lgg_root / "TCGA_CS_5395_19981004", folder)
    slice5 = folder / "TCGA_CS_5395_19981004_5.png"
    shutil.copy(slice5, folder / "lone.png")
    said = {}
    for flag, out in (("--largest", tmp_path / "a"), ("--all-parts", tmp_path / "b")):
        r = run_predict(folder, "--out", out, flag)
        assert r.returncode == 0, r.stderr
        said[flag] = r.stdout + r.stderr

    def stack(out):
        paths = sorted(out.glob("TCGA_*_pred.png"), key=lambda p: int(p.stem.removesuffix("_pred").rsplit("_")[-1]))
        return np.stack([np.asarray(Image.open(p)) > 0 for p in paths])

    largest, every = stack(tmp_path / "a"), stack(tmp_path / "b")
    assert len(largest) == 20 and every.sum() > 0
    assert np.array_equal(largest, keep_largest_3d(every))
    # The shipped model also marks tumor-free slices below this small tumor (model card), a
    # region nearly as large as the tumor's: the run says so, and --all-parts has nothing to say.
    note = close_call(every, numbers=list(range(1, 21)))
    assert note is not None and "kept " in note and " voxels in slices 11-14; dropped " in note
    assert f"TCGA_CS_5395_19981004_*: {note}" in said["--largest"] and "1 close call(s)" in said["--largest"]
    assert "close call" not in said["--all-parts"]
    lone = np.asarray(Image.open(tmp_path / "a" / "lone_pred.png"))
    assert np.array_equal(lone, np.asarray(Image.open(tmp_path / "b" / "lone_pred.png")))
    if load_checkpoint(DEFAULT_WEIGHTS).config.model.intensity != "volume":  # scaled per slice, as in the series
        every5 = np.asarray(Image.open(tmp_path / "b" / "TCGA_CS_5395_19981004_5_pred.png"))
        assert np.array_equal(lone, every5)  # the same slice alone gets the same mask, no 3D step


def test_chunks_keep_each_numbered_series_whole():
    """A numbered series is one chunk, whole and in slice order, however long; files without a
    trailing number set off by `_`, `-`, `.` or a space, groups of fewer than 3 and numbers with
    gaps go in batch-sized chunks as lone slices, the groups named in a note."""
    from tumorseg.predict import _chunks

    a = [Path(f"d/A_{n}.png") for n in (10, 2, 1, 7, 3, 4, 5, 6, 8, 9)]
    b = [Path(f"d/B-{n}.png") for n in (3, 1, 2)]
    lone = [Path(f"d/{n}.png") for n in ("x", "y", "z", "v", "w", "scan1", "scan2", "big512")]
    pair = [Path("d/P_1.png"), Path("d/P_2.png")]
    gappy = [Path(f"d/G_{n}.png") for n in (1, 2, 4)]
    chunks, notes = _chunks([*a, *lone, *b, *pair, *gappy], size=4)
    series = [c for c, is_series in chunks if is_series]
    assert series == [sorted(a, key=slice_number), sorted(b, key=slice_number)]
    assert [len(c) for c, is_series in chunks if not is_series] == [4, 4, 4, 1]
    assert sorted(p for c, _ in chunks for p in c) == sorted([*a, *b, *lone, *pair, *gappy])
    assert notes == [
        "d/P_*: 2 numbered slices (fewer than 3) segmented one by one, not as one volume: no largest-3D-part step",
        "d/G_*: 3 numbered slices (numbers 1-4 with gaps or repeats) segmented one by one, not as one volume: "
        "no largest-3D-part step",
    ]


def test_unrelated_numbered_files_are_not_stacked_into_one_volume(lgg_root, tmp_path):
    """Two slices of two patients named scan1 and scan2 were once one volume, and the smaller
    tumor was dropped as a minor 3D part: each keeps its own tumor now."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, src in (("scan1", "TCGA_CS_4944_20010208/TCGA_CS_4944_20010208_10"),
                      ("scan2", "TCGA_CS_6188_20010812/TCGA_CS_6188_20010812_15")):  # fmt: skip
        shutil.copy(lgg_root / f"{src}.png", folder / f"{name}.png")
    r = run_predict(folder, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    for name in ("scan1", "scan2"):
        assert (np.asarray(Image.open(tmp_path / "out" / f"{name}_pred.png")) > 0).sum() > 300, name


def test_any_size_grayscale_rgb_and_jpeg(tiny_run, lgg_root, tmp_path):
    img = Image.open(next((lgg_root / "TCGA_CS_4941_19960909").glob("*_12.png")))
    img.resize((300, 200)).convert("L").save(tmp_path / "gray.png")
    img.resize((173, 97)).save(tmp_path / "rgb.jpg", quality=95)
    img.save(tmp_path / "orig.tif")
    r = run_predict(tmp_path / "gray.png", tmp_path / "rgb.jpg", tmp_path / "orig.tif", "--out", tmp_path / "o",
                    "--weights", tiny_run / "last.safetensors", "--overlay")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "o" / "gray_pred.png")).shape == (200, 300)
    assert np.asarray(Image.open(tmp_path / "o" / "rgb_pred.png")).shape == (97, 173)
    assert np.asarray(Image.open(tmp_path / "o" / "orig_pred.png")).shape == (256, 256)
    # the grayscale image is FLAIR alone, and the output says what that costs; the colour ones are not
    out = r.stdout + r.stderr
    assert out.count("equal FLAIR in every slice") == 1
    assert "gray.png: pre-contrast T1 and post-contrast T1 equal FLAIR" in out and "Missing sequences" in out
    assert "close call" not in out  # a missing-sequence note is not counted as one


def test_grayscale_lone_slices_are_named_beside_colour_ones_of_their_size(tiny_run, lgg_root, tmp_path):
    """Two grayscale slices beside a colour one of the same size once got no note (the three
    were judged together), and two alone were named by the first one's name only."""
    img = Image.open(next((lgg_root / "TCGA_CS_4941_19960909").glob("*_12.png")))
    folder = tmp_path / "in"
    folder.mkdir()
    img.save(folder / "a_rgb.png")
    img.convert("L").save(folder / "b_gray.png")
    img.convert("L").save(folder / "c_gray.png")
    r = run_predict(folder, "--out", tmp_path / "o", "--weights", tiny_run / "last.safetensors")
    assert r.returncode == 0, r.stderr
    assert f"{folder}: b_gray.png, c_gray.png: pre-contrast T1 and post-contrast T1 equal FLAIR" in r.stdout


def test_lone_slices_are_read_within_a_pixel_budget(tmp_path):
    from tumorseg.predict import _budgeted

    sizes = [(100, 100), (100, 100), (300, 300), (10, 10), (10, 10)]
    files = []
    for i, (w, h) in enumerate(sizes):
        files.append(tmp_path / f"s{i}.png")
        Image.new("L", (w, h)).save(files[-1])
    (tmp_path / "bad.png").write_bytes(b"not a png")  # unreadable: counted as 0, reported when read
    chunks = _budgeted([*files, tmp_path / "bad.png"], size=3, budget=50_000)
    assert [[f.name for f in c] for c in chunks] == [["s0.png", "s1.png"], ["s2.png"], ["s3.png", "s4.png", "bad.png"]]


def test_corrupt_file_in_folder_others_still_written(tiny_run, lgg_root, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((lgg_root / "TCGA_CS_4941_19960909").glob("*_1[0-3]*.png")):
        shutil.copy(p, folder / p.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "notes.png").write_text("a text file renamed")
    r = run_predict(folder, "--out", tmp_path / "o", "--weights", tiny_run / "last.safetensors")
    assert r.returncode == 1
    assert "broken.png: cannot read image: not a valid PNG file" in r.stderr and "notes.png" in r.stderr
    assert r.stderr.count("broken.png: cannot read image") == 1 and "failed" not in r.stdout  # each said once
    assert "error: 2 input(s) failed" in r.stderr
    assert len(list((tmp_path / "o").glob("*_pred.png"))) == 4
    assert "Traceback" not in r.stderr


def test_out_that_is_a_file_or_nothing_to_read(tiny_run, lgg_root, tmp_path):
    weights = tiny_run / "last.safetensors"
    src = next((lgg_root / "TCGA_CS_4941_19960909").glob("*_12.png"))
    (tmp_path / "notes.txt").write_text("keep me")
    r = run_predict(src, "--out", tmp_path / "notes.txt", "--weights", weights)
    assert r.returncode == 2 and "notes.txt: --out must be a folder, and this is a file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tumorseg", "evaluate", "--data", lgg_root, "--weights", weights,
                        "--out", tmp_path / "notes.txt"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "notes.txt: --out must be a folder" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    r = run_predict(tmp_path / "absent.png", "--out", tmp_path / "o", "--weights", weights)
    assert r.returncode == 2 and "absent.png: no such file" in r.stderr
    assert not (tmp_path / "o").exists()  # nothing to do, nothing made
    assert not list(tmp_path.glob(".tumorseg-probe-*"))  # the writability probe is gone too
    # under a file, or where nothing can be written: one error before any work, no traceback
    for out, words in (
        (tmp_path / "notes.txt" / "sub", "notes.txt is a file"),
        (Path("/proc/tumorseg-x"), "cannot write"),
    ):
        r = run_predict(src, "--out", out, "--weights", weights)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
        r = subprocess.run([sys.executable, "-m", "tumorseg", "evaluate", "--data", lgg_root, "--weights", weights,
                            "--out", out], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "Dice" not in r.stdout  # refused before scoring


def test_overlay_with_a_wrong_sized_truth_still_writes_the_prediction(tiny_run, lgg_root, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    src = next((lgg_root / "TCGA_CS_4941_19960909").glob("*_12.png"))
    shutil.copy(src, folder / "s.png")
    Image.fromarray(np.zeros((180, 200), np.uint8)).save(folder / "s_mask.png")
    r = run_predict(folder, "--out", tmp_path / "o", "--weights", tiny_run / "last.safetensors", "--overlay")
    assert r.returncode == 0, r.stderr
    assert "s_mask.png: mask is 200x180 but its image is 256x256; overlay drawn without it" in r.stderr
    assert (tmp_path / "o" / "s_pred.png").is_file() and (tmp_path / "o" / "s_overlay.png").is_file()


def test_missing_input_and_bad_weights(tmp_path):
    r = run_predict(tmp_path / "nothing.png", "--out", tmp_path / "o", "--weights", tmp_path / "w.safetensors")
    assert r.returncode == 2 and "w.safetensors: cannot read checkpoint" in r.stderr
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 10)
    r = run_predict(tmp_path, "--out", tmp_path / "o", "--weights", tmp_path / "w.safetensors")
    assert r.returncode == 2 and "not a valid safetensors checkpoint" in r.stderr


def test_a_second_run_into_the_input_folder_skips_the_first_runs_outputs(lgg_root, tmp_path):
    """--out = the input folder, run twice: the second run reads the 3 slices again, not the first
    run's X_pred/X_prob/X_overlay files; a `_pred` image with no source beside it is still an input."""
    from tumorseg.infer import Predictor
    from tumorseg.predict import collect_inputs, predict_files

    folder = tmp_path / "p"
    folder.mkdir()
    for n in (10, 11, 12):
        shutil.copy(lgg_root / "TCGA_CS_4941_19960909" / f"TCGA_CS_4941_19960909_{n}.png", folder)
    predictor = Predictor.from_checkpoint(backend="torch")
    for _ in range(2):
        res = predict_files([folder], folder, predictor, probabilities=True, overlays=True, log=lambda m: None)
        assert res.inputs == 3 and not res.failed
    assert not list(folder.glob("*_pred_pred*")) and len(list(folder.glob("*_pred.png"))) == 3
    shutil.copy(lgg_root / "TCGA_CS_4941_19960909" / "TCGA_CS_4941_19960909_13.png", folder / "scan_pred.png")
    assert folder / "scan_pred.png" in collect_inputs([folder])


def test_predict_into_a_patient_folder_leaves_it_readable_as_data(lgg_root, tmp_path):
    """--out = a kaggle_3m patient folder: its X_pred/X_prob/X_overlay files (and a macOS `._X.png`)
    were read as slices without masks, so check-data, evaluate and train refused the folder."""
    from conftest import copy_slices

    from tumorseg.data.check import check_data
    from tumorseg.data.lgg import find_cases
    from tumorseg.infer import Predictor
    from tumorseg.predict import collect_inputs, predict_files

    folder = tmp_path / "lgg" / "TCGA_CS_4941_19960909"
    copy_slices(lgg_root / folder.name, folder, range(10, 14))
    before = find_cases(tmp_path / "lgg")
    predictor = Predictor.from_checkpoint(backend="torch")
    res = predict_files([folder], folder, predictor, probabilities=True, overlays=True, log=lambda m: None)
    assert res.inputs == 4 and len(list(folder.glob("*_overlay.png"))) == 4
    (folder / "._TCGA_CS_4941_19960909_10.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert find_cases(tmp_path / "lgg") == before
    report = check_data(tmp_path / "lgg")
    assert not report["errors"] and report["slices"] == 4, report["errors"]
    assert any("12 file(s) that `predict` wrote here" in w for w in report["warnings"]), report["warnings"]
    assert len(collect_inputs([folder])) == 4  # nor is `._X.png` an input
    pred = folder / "TCGA_CS_4941_19960909_10_pred.png"  # a slice so named, with its truth beside it
    shutil.copy(folder / "TCGA_CS_4941_19960909_10_mask.png", folder / "TCGA_CS_4941_19960909_10_pred_mask.png")
    assert pred in find_cases(tmp_path / "lgg")[0].images and not check_data(tmp_path / "lgg")["errors"]


def test_an_earlier_runs_prob_and_overlay_files_are_said_to_be_stale(lgg_root, tmp_path):
    """A run without --overlay into an --out holding an earlier run's overlays left them beside the new
    masks, unflagged: they no longer matched (another threshold, other weights)."""
    from tumorseg.infer import Predictor
    from tumorseg.predict import predict_files

    src = lgg_root / "TCGA_CS_4941_19960909" / "TCGA_CS_4941_19960909_12.png"
    predictor = Predictor.from_checkpoint(backend="torch")
    first = predict_files([src], tmp_path, predictor, probabilities=True, overlays=True, log=lambda m: None)
    assert not first.warnings
    said: list[str] = []
    again = predict_files([src], tmp_path, predictor, overlays=True, log=lambda m: None, err=said.append)
    assert len(again.warnings) == 1 and "TCGA_CS_4941_19960909_12_prob.png: from an earlier run" in again.warnings[0]
    assert said == [f"warning: {again.warnings[0]}"]
    assert (tmp_path / "TCGA_CS_4941_19960909_12_prob.png").is_file()  # the user's file: kept


def test_nothing_found_says_what_the_user_may_have_meant(lgg_root, tmp_path):
    mask = tmp_path / "x_mask.png"
    shutil.copy(next((lgg_root / "TCGA_CS_4941_19960909").glob("*_12_mask.png")), mask)
    r = run_predict(mask, "--out", tmp_path / "o")
    assert r.returncode == 2 and "x_mask.png is named as a truth mask" in r.stderr, r.stderr
    r = run_predict(lgg_root, "--out", tmp_path / "o")  # the kaggle_3m root: patient folders, no slices
    assert r.returncode == 2 and "holds folders, which are not searched" in r.stderr
    assert f"tumorseg evaluate --data {lgg_root}" in r.stderr
    spaced = tmp_path / "my scans"  # the hint is a command to copy: its path is quoted
    (spaced / "TCGA_CS_4941_19960909").mkdir(parents=True)
    shutil.copy(lgg_root / "TCGA_CS_4941_19960909" / "TCGA_CS_4941_19960909_12.png", spaced / "TCGA_CS_4941_19960909")
    r = run_predict(spaced, "--out", tmp_path / "o")
    assert f"tumorseg evaluate --data '{spaced}'`" in r.stderr, r.stderr


def test_a_file_named_twice_is_read_once(lgg_root, tmp_path):
    """Named alone and within its folder (or through a link), a slice was refused as two inputs
    sharing one name."""
    from tumorseg.predict import collect_inputs

    folder = tmp_path / "c1"
    folder.mkdir()
    for n in (10, 11):
        shutil.copy(lgg_root / "TCGA_CS_4941_19960909" / f"TCGA_CS_4941_19960909_{n}.png", folder)
    one = folder / "TCGA_CS_4941_19960909_10.png"
    (tmp_path / "link.png").symlink_to(one)
    assert collect_inputs([folder, one, tmp_path / "c1" / ".." / "c1" / one.name, tmp_path / "link.png"]) == sorted(
        folder.glob("*.png"), key=slice_number
    )


def test_a_series_missing_a_slice_or_of_two_sizes_is_not_one_volume(lgg_root, tmp_path):
    """A series whose slice 13 could not be read (or was another size) was once still one volume:
    slices 12 and 14 stacked as neighbours, and the tumor around them dropped by the largest-part step."""
    src = lgg_root / "TCGA_CS_5395_19981004"
    for case in ("corrupt", "resized"):
        folder = tmp_path / case
        folder.mkdir()
        for n in range(1, 21):
            shutil.copy(src / f"TCGA_CS_5395_19981004_{n}.png", folder / f"S_{n}.png")
        if case == "corrupt":
            (folder / "S_13.png").write_bytes((folder / "S_13.png").read_bytes()[:3000])
        else:
            Image.open(folder / "S_13.png").resize((512, 512)).save(folder / "S_13.png")
        r = run_predict(folder, "--out", tmp_path / f"{case}_out")
        assert r.returncode == (1 if case == "corrupt" else 0), r.stderr
        why = "a slice could not be read" if case == "corrupt" else "slices of different sizes"
        assert f"S_*: 20 numbered slices ({why}) segmented one by one" in r.stdout, r.stdout
        assert "close call" not in r.stdout + r.stderr  # no largest-part step ran
        tumor = [(np.asarray(Image.open(tmp_path / f"{case}_out" / f"S_{n}_pred.png")) > 0).sum() for n in (12, 14)]
        assert min(tumor) > 0, tumor  # each slice keeps its own tumor


def test_ctrl_c_says_so_and_leaves_only_complete_files(lgg_root, tmp_path):
    """Typer once turned Ctrl-C into a silent exit 130."""
    import signal
    import time

    folders = sorted(p for p in lgg_root.iterdir() if p.is_dir())[:8]
    # as from a terminal: a suite started in the background (`cmd &`) passes SIGINT on ignored, which predict respects
    proc = subprocess.Popen([sys.executable, "-m", "tumorseg", "predict", *map(str, folders), "--out", str(tmp_path),
                             "--overlay"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*_overlay.png")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    for png in tmp_path.glob("*.png"):
        Image.open(png).load()  # every file written is whole
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".png")]  # no temporary files left


def test_a_full_disk_counts_the_files_it_did_write(tiny_run, lgg_root, tmp_path):
    """A slice whose _pred.png was written before its overlay hit a full disk once had that file
    left out of the summary's count, though it was on disk."""
    import resource
    import signal

    def limit() -> None:  # a write past 30 kB fails with EFBIG, as a full disk fails it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((lgg_root / "TCGA_CS_4941_19960909").glob("*_1[0-2].png")):
        shutil.copy(p, folder / p.name)
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "tumorseg", "predict", str(folder), "--out", str(out), "--overlay",
                        "--weights", str(tiny_run / "last.safetensors")], capture_output=True, text=True, timeout=300,
                       preexec_fn=limit)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    on_disk = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    assert len(on_disk) == 3 and all(p.name.endswith("_pred.png") for p in on_disk)  # every overlay failed
    assert "0 of 3 inputs segmented; 3 files in" in r.stdout, r.stdout
    assert r.stderr.count("File too large") == 3 and "_overlay.png" in r.stderr


def test_outputs_of_an_input_with_a_mixed_case_suffix_are_not_read_back(lgg_root, tmp_path):
    """`Y.Png` with --out its own folder: a second run once segmented Y_pred.png and Y_overlay.png
    too (4 of 4 inputs), since only `.png` and `.PNG` were looked for beside them."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(lgg_root / "TCGA_CS_4941_19960909" / "TCGA_CS_4941_19960909_12.png", folder / "Y.Png")
    for _ in range(2):
        r = run_predict(folder, "--out", folder, "--overlay")
        assert r.returncode == 0 and "1 of 1 inputs segmented; 2 files" in r.stdout, r.stdout + r.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["Y.Png", "Y_overlay.png", "Y_pred.png"]


def test_a_predict_out_folder_inside_the_data_is_not_a_patient(lgg_root, tmp_path):
    """`predict P --out DATA/predictions` (or `--out P/preds`) once made check-data, evaluate and
    train take the outputs for a patient whose slices have no masks."""
    from tumorseg.data.lgg import find_cases

    data = tmp_path / "d"
    src = lgg_root / "TCGA_CS_4941_19960909"
    for name in ("A", "B"):
        (data / name).mkdir(parents=True)
        for p in src.glob("TCGA_CS_4941_19960909_1[0-2]*.png"):
            shutil.copy(p, data / name / p.name.replace("TCGA_CS_4941_19960909", name))
    assert run_predict(data / "A", "--out", data / "predictions", "--overlay", "--probabilities").returncode == 0
    assert run_predict(data / "B", "--out", data / "B" / "preds").returncode == 0
    assert [c.id for c in find_cases(data)] == ["A", "B"]
    assert [c.id for c in find_cases(data / "B")] == ["B"]
    r = subprocess.run([sys.executable, "-m", "tumorseg", "check-data", str(data)], capture_output=True, text=True)
    assert r.returncode == 0 and "2 patients, 6 slices" in r.stdout and "predictions" not in r.stdout + r.stderr, (
        r.stdout + r.stderr
    )


def test_a_folder_of_masks_only_says_so(tmp_path):
    """A folder holding only truth masks once got a bare 'no input images found'."""
    from tumorseg.errors import TumorsegError
    from tumorseg.predict import collect_inputs

    folder = tmp_path / "masks"
    folder.mkdir()
    for n in (1, 2, 3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"P_{n}_mask.png")
    with pytest.raises(TumorsegError, match=r"masks holds only 3 truth mask\(s\) \(`_mask`\), which are never segm"):
        collect_inputs([folder])
    r = run_predict(folder, "--out", tmp_path / "out")
    assert r.returncode != 0 and "holds only 3 truth mask(s)" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_predict_out_folder_is_not_segmented_again(lgg_root, tmp_path):
    """Its X_pred.png, X_prob.png and X_overlay.png, with no X.png beside them, were once read as MRI
    slices and segmented (X_pred_pred.png)."""
    from tumorseg.errors import TumorsegError
    from tumorseg.predict import collect_inputs

    src = lgg_root / "TCGA_CS_4941_19960909"
    for n in (10, 11, 12):
        shutil.copy(src / f"{src.name}_{n}.png", tmp_path / f"{src.name}_{n}.png")
    r = run_predict(*(tmp_path / f"{src.name}_{n}.png" for n in (10, 11, 12)), "--out", tmp_path / "out",
                    "--probabilities", "--overlay")  # fmt: skip
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == 9 and all(n.endswith(("_pred.png", "_prob.png", "_overlay.png")) for n in written)
    with pytest.raises(TumorsegError, match=r"out holds only 9 output\(s\) of an earlier `tumorseg predict`"):
        collect_inputs([tmp_path / "out"])
    r = run_predict(tmp_path / "out", "--out", tmp_path / "again")
    assert r.returncode != 0 and "output(s) of an earlier" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list((tmp_path / "again").glob("*_pred_pred.png"))


def test_overlays_outline_what_the_largest_region_step_dropped(lgg_root, tmp_path):
    """The shipped model marks tumor-free slices 5-6 of TCGA_CS_5395; the largest-region step drops
    them and the note names them, but the overlays once showed nothing there ("Dice 1.000")."""
    from tumorseg.infer import Predictor
    from tumorseg.predict import predict_files

    patient = "TCGA_CS_5395_19981004"
    folder = tmp_path / patient
    copy_slices(lgg_root / patient, folder, range(4, 16))
    res = predict_files([folder], tmp_path / "o", Predictor.from_checkpoint(), overlays=True, log=lambda m: None)
    assert any("close call" in n for n in res.notes), res.notes
    ov = np.asarray(Image.open(tmp_path / "o" / f"{patient}_5_overlay.png").convert("RGB")).astype(int)
    top = ov.shape[0] - 256 + 30  # below the title bar and the legend
    mri, drawn = ov[top:, :256], ov[top:, -256:]
    outline = (drawn == 255).all(-1) & ~(mri == 255).all(-1)
    assert outline.sum() > 50  # the dropped region's border, in white
