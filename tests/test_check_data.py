"""`tumorseg check-data` on real slices with injected problems; `train` runs the same checks."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_here
from PIL import Image

from tumorseg.data.check import check_data
from tumorseg.errors import DataError


def run(*args):
    """`tumorseg ARGS`, by the CLI's main() in this process (a subprocess spends 2-4 s starting)."""
    return cli_here(*args)


def test_clean_data_reports_balance(tiny_lgg):
    report = check_data(tiny_lgg)
    assert report["patients"] == 2 and report["slices"] == 24 and not report["errors"]
    assert 0 < report["slices_with_tumor"] < 24 and 0 < report["tumor_pixel_fraction"] < 0.1


def test_every_problem_is_reported(tiny_lgg, tmp_path):
    a, b = sorted(p for p in tiny_lgg.iterdir())
    next(a.glob("*_8_mask.png")).unlink()  # image without mask
    next(b.glob("*_9.png")).unlink()  # mask without image
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(next(a.glob("*_10_mask.png")))  # size mismatch
    m = next(b.glob("*_11_mask.png"))
    arr = np.asarray(Image.open(m)).copy()
    arr[0, :5] = 77
    Image.fromarray(arr).save(m)  # non-binary
    src = next(a.glob("*_12.png"))
    shutil.copy(src, b / (b.name + "_40.png"))  # duplicate slice, with its mask
    shutil.copy(next(a.glob("*_12_mask.png")), b / (b.name + "_40_mask.png"))
    empty = tiny_lgg / "TCGA_XX_0000_20000101"  # a patient without tumor
    empty.mkdir()
    img = next(a.glob("*_13.png"))
    shutil.copy(img, empty / "TCGA_XX_0000_20000101_1.png")
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(empty / "TCGA_XX_0000_20000101_1_mask.png")
    (tiny_lgg / "TCGA_YY_0000_20000101").mkdir()  # a patient folder left empty
    (tiny_lgg / ".cache").mkdir()  # hidden folders are not patients
    report = check_data(tiny_lgg)
    text = "\n".join(report["errors"] + report["warnings"])
    assert ".cache" not in text
    for expected in ("_8.png: image has no mask", "_9_mask.png: mask has no image", "_10_mask.png: mask is 12x10",
                     "mask is not binary", "duplicate of", "TCGA_XX_0000_20000101: patient has no tumor",
                     "TCGA_YY_0000_20000101: no slices in this folder; it is skipped",
                     f"{b.name}: slices numbered 8-40 lack 21 number(s) (9, 20, 21, 22, 23 ...)"):  # fmt: skip
        assert expected in text, expected
    r = run("check-data", tiny_lgg)
    assert r.returncode == 1 and "image has no mask" in r.stdout
    r = run("train", "--data", tiny_lgg, "--out", tmp_path / "r", "--epochs", "1")
    assert r.returncode == 2 and "data errors" in r.stderr and "Traceback" not in r.stderr


def test_patients_lacking_a_sequence_are_listed(lgg_root, tmp_path):
    """The dataset fills a missing sequence with FLAIR: TCGA_HT_7877 lacks both T1s, TCGA_DU_7301 the
    post-contrast T1, TCGA_CS_4941 none. Found on every slice, not just one, and printed."""
    from conftest import copy_slices

    for pid in ("TCGA_HT_7877_19980917", "TCGA_DU_7301_19911112", "TCGA_CS_4941_19960909"):
        copy_slices(lgg_root / pid, tmp_path / "lgg" / pid, range(1, 6))
    report = check_data(tmp_path / "lgg")
    assert report["missing_sequences"] == {
        "TCGA_DU_7301_19911112": ["post-contrast T1"],
        "TCGA_HT_7877_19980917": ["pre-contrast T1", "post-contrast T1"],
    }
    # one slice whose post-contrast T1 differs from FLAIR is enough to show the sequence is there
    slice1 = next((tmp_path / "lgg" / "TCGA_DU_7301_19911112").glob("*_3.png"))
    arr = np.asarray(Image.open(slice1)).copy()
    arr[100, 100, 2] ^= 1
    Image.fromarray(arr).save(slice1)
    assert list(check_data(tmp_path / "lgg")["missing_sequences"]) == ["TCGA_HT_7877_19980917"]
    r = run("check-data", tmp_path / "lgg")
    assert r.returncode == 0, r.stderr
    assert (
        "1 patient lacks a sequence (a copy of FLAIR in its place): TCGA_HT_7877_19980917 (pre-contrast T1" in r.stdout
    )


def test_copied_sequences_and_the_note_quotes_the_readme():
    from tumorseg.data.check import FEWER_SEQUENCES, copied_sequences

    x = np.random.default_rng(0).integers(0, 255, (2, 3, 8, 8), dtype=np.uint8)
    assert copied_sequences(x) == []
    x[:, 2] = x[:, 1]
    assert copied_sequences(x) == ["post-contrast T1"]
    x[1, 0] = x[1, 1]  # one slice with all three equal is not enough
    assert copied_sequences(x) == ["post-contrast T1"]
    x[0, 0] = x[0, 1]
    assert copied_sequences(x) == ["pre-contrast T1", "post-contrast T1"]
    assert copied_sequences(x[:, 1:2]) == [] and copied_sequences(x[:0]) == []
    # the numbers the note gives are the README's for the shipped model (as given, FLAIR for both T1s)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| shipped (int8) |"))
    given, _, _, flair_only = (c.strip() for c in row.strip("|").split("|")[1:5])
    assert f"{float(flair_only.split()[0]):.2f} against {float(given):.2f}" in FEWER_SEQUENCES


def test_max_patients_checks_only_the_patients_it_trains_on(tiny_lgg, tmp_path):
    """`train --max-patients N` reads only the first N patients (by id); a broken patient after
    them neither stops it nor costs the time of reading it. `check-data` still scans them all."""
    broken = tiny_lgg / "TCGA_ZZ_0000_20000101"  # sorts after both real patients
    broken.mkdir()
    (broken / "TCGA_ZZ_0000_20000101_1.png").write_bytes(b"not a png")
    (broken / "TCGA_ZZ_0000_20000101_1_mask.png").write_bytes(b"not a png")
    (tiny_lgg / "TCGA_AA_0000_20000101").mkdir()  # a folder without slices is not a patient: not counted
    assert check_data(tiny_lgg)["errors"]
    report = check_data(tiny_lgg, limit=2)
    assert report["patients"] == 2 and report["slices"] == 24 and not report["errors"]
    options = ("--epochs", "1", "--base", "4", "--depth", "2", "--image-size", "64", "--val-frac", "0",
               "--test-frac", "0.5", "--threads", "2")  # fmt: skip
    r = run("train", "--data", tiny_lgg, "--out", tmp_path / "two", "--max-patients", "2", *options)
    assert r.returncode == 0, r.stderr
    r = run("train", "--data", tiny_lgg, "--out", tmp_path / "all", *options)
    assert r.returncode == 2 and "data errors" in r.stderr and "TCGA_ZZ_0000_20000101_1.png" in r.stderr, r.stderr
    first = next(p for p in sorted(tiny_lgg.iterdir()) if any(p.iterdir()))
    next(first.glob("*_8_mask.png")).unlink()  # the limit never hides a problem in a patient it trains on
    assert any("_8.png: image has no mask" in e for e in check_data(tiny_lgg, limit=1)["errors"])


def test_max_patients_passes_an_orphan_in_a_patient_it_does_not_read(tiny_lgg, tmp_path):
    """An image without its mask in a later patient once stopped `train --max-patients` (the
    patients were all paired before the limit was applied)."""
    late = tiny_lgg / "TCGA_ZZ_0000_20000101"
    late.mkdir()
    shutil.copy(next(tiny_lgg.glob("*/*_12.png")), late / "TCGA_ZZ_0000_20000101_1.png")  # no mask beside it
    options = ("--epochs", "1", "--base", "4", "--depth", "2", "--image-size", "64", "--val-frac", "0",
               "--test-frac", "0.5", "--threads", "2")  # fmt: skip
    r = run("train", "--data", tiny_lgg, "--out", tmp_path / "two", "--max-patients", "2", *options)
    assert r.returncode == 0, r.stderr
    r = run("train", "--data", tiny_lgg, "--out", tmp_path / "all", *options)
    assert r.returncode == 2 and "TCGA_ZZ_0000_20000101_1.png: image has no mask" in r.stderr


def test_masks_of_0_and_1_keep_their_tumor(tiny_lgg):
    """A mask saved as 0/1 (not 0/255) was once binarised at 128 and lost all its tumor."""
    from tumorseg.data.lgg import find_cases, load_case

    case = find_cases(tiny_lgg)[0]
    before = load_case(case, 64).full_masks.sum()
    assert before > 0
    for m in case.masks:
        arr = np.asarray(Image.open(m))
        Image.fromarray((arr > 127).astype(np.uint8)).save(m)
    assert load_case(case, 64).full_masks.sum() == before
    report = check_data(tiny_lgg)
    assert not report["errors"] and any("mask holds 0 and 1, not 0 and 255; 1 is read as tumor" in w
                                        for w in report["warnings"])  # fmt: skip
    assert report["slices_with_tumor"] > 0


@pytest.mark.parametrize("value", [2, 100])
def test_label_masks_keep_their_tumor(tiny_lgg, value):
    """Masks saved as labels (0/2, 0/100) were binarised at 128 and read as empty: no tumor in
    check-data, Dice 0 in evaluate and an empty truth in overlays. A few values under 255 are labels."""
    from tumorseg.data.lgg import find_cases, load_case
    from tumorseg.io import binary_masks

    case = find_cases(tiny_lgg)[0]
    before = load_case(case, None).full_masks
    assert before.sum() > 0
    for m in case.masks:
        Image.fromarray(np.where(np.asarray(Image.open(m)) > 127, value, 0).astype(np.uint8)).save(m)
    assert np.array_equal(load_case(case, None).full_masks, before)
    report = check_data(tiny_lgg)
    assert not report["errors"] and report["slices_with_tumor"] > 0
    assert any(f"mask holds the labels [0, {value}], not 0 and 255; every value above 0 is read as tumor" in w
               for w in report["warnings"]), report["warnings"]  # fmt: skip
    # a grey mask (many values, as JPEG leaves them) is still read above 127, not above 0
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert binary_masks([grey])[0].sum() == 128
    # a one-pixel tumor saved as JPEG rings into a few values, none 255: not labels, or 30 pixels were tumor
    dot = np.zeros((32, 32), np.uint8)
    dot[17, 17] = 255  # here it decodes to 254 and 5 faint values
    buf = io.BytesIO()
    Image.fromarray(dot).save(buf, "JPEG", quality=95)
    ringing = np.asarray(Image.open(buf))
    assert 1 < len(np.unique(ringing)) <= 8 and ringing.max() < 255  # what the label rule once took for labels
    assert binary_masks([ringing])[0].sum() == 1


def test_jpeg_slices_are_read_and_one_slice_in_two_formats_is_refused(tiny_lgg):
    """JPEG slices beside PNG masks were "mask has no image", though `predict` reads JPEG; a slice
    saved twice (X.png and X.jpg) is refused by name rather than one of them dropped silently."""
    from tumorseg.data.lgg import find_cases, load_case

    case = find_cases(tiny_lgg)[0]
    for img in case.images:
        Image.open(img).save(img.with_suffix(".jpg"), quality=95)
        img.unlink()
    report = check_data(tiny_lgg)
    assert not report["errors"] and report["slices"] == 24 and report["slices_with_tumor"] > 0, report["errors"]
    jpeg = find_cases(tiny_lgg)[0]
    assert [p.suffix for p in jpeg.images] == [".jpg"] * 12 and load_case(jpeg, 64).full_masks.sum() > 0
    again = jpeg.images[3]
    Image.open(again).save(again.with_suffix(".png"))
    said = f"{again.with_suffix('.png')}: {again.name} is the same slice in another format; keep one of them"
    assert said in check_data(tiny_lgg)["errors"]
    with pytest.raises(DataError, match="the same slice in another format"):
        find_cases(tiny_lgg)


def test_stray_1s_in_a_0_255_patient_are_not_tumor(tiny_lgg):
    """Masks of 0/255 with stray pixels of 1: decided slice by slice, the tumor-free slices (0 and 1
    only) were read as 0/1 masks and their 1s as tumor, so evaluate and train saw tumor there. One
    rule for the patient reads them all at 128, as check-data now says."""
    from tumorseg.data.lgg import find_cases, load_case

    case = find_cases(tiny_lgg)[0]
    clean, tumor_slices = load_case(case, None).full_masks, check_data(tiny_lgg)["slices_with_tumor"]
    rng = np.random.default_rng(0)
    for m in case.masks:
        arr = np.asarray(Image.open(m)).copy()
        arr[(rng.random(arr.shape) < 0.01) & (arr == 0)] = 1
        Image.fromarray(arr).save(m)
    assert np.array_equal(load_case(case, None).full_masks, clean)
    assert load_case(case, None).blank_masks == []  # not the grey masks evaluate warns of
    report = check_data(tiny_lgg)
    assert report["slices_with_tumor"] == tumor_slices
    assert any("its 1s are not tumor: this patient's other masks go above 1" in w for w in report["warnings"])


def test_check_data_finds_what_train_would_refuse(tiny_lgg, tmp_path):
    """Slices of one patient of two sizes, and a 2-channel slice, once passed `check-data` and
    then stopped `train`."""
    a, b = sorted(tiny_lgg.iterdir())
    img, mask = next(a.glob("*_12.png")), next(a.glob("*_12_mask.png"))
    for path in (img, mask):
        Image.open(path).crop((0, 0, 128, 128)).save(path)
    two = next(b.glob("*_13.png"))
    import tifffile

    tifffile.imwrite(two.with_suffix(".tif"), np.zeros((256, 256, 2), np.uint8), photometric="minisblack",
                     planarconfig="contig")  # fmt: skip
    two.unlink()
    shutil.move(next(b.glob("*_13_mask.png")), two.with_name(two.stem + "_mask.png"))
    errors = check_data(tiny_lgg)["errors"]
    assert any(f"{a}: slices of one patient differ in size: 256x256" in e and "128x128" in e for e in errors), errors
    said = f"{two.with_suffix('.tif')}: 2 samples per pixel (TIFF axes YXS, shape 256x256x2), the second not marked as"
    assert any(e.startswith(said) for e in errors), errors
    r = run("train", "--data", tiny_lgg, "--out", tmp_path / "r", "--epochs", "1")
    assert r.returncode == 2 and "data errors" in r.stderr and not (tmp_path / "r" / "config.json").exists()


def test_a_folder_of_previews_beside_the_patients_is_not_a_patient(tiny_lgg, caplog):
    """A folder of screenshots beside the patients (no mask, no `<folder>_<n>` name) once made
    check-data, evaluate and train refuse the whole data folder ("image has no mask"); a patient
    folder that lost a mask is still an error."""
    from tumorseg.data.lgg import find_cases

    before = [c.id for c in find_cases(tiny_lgg)]
    shots = tiny_lgg / "previews"
    shots.mkdir()
    for i in range(2):
        shutil.copy(next(tiny_lgg.glob("*/*_12.png")), shots / f"shot{i}.png")
    with caplog.at_level("WARNING"):
        assert [c.id for c in find_cases(tiny_lgg)] == before
    said = f"{shots}: skipped: 2 image(s) but no mask and none named previews_<n>, so not a patient"
    assert said in caplog.text
    report = check_data(tiny_lgg)
    assert not report["errors"] and report["patients"] == 2 and said in report["warnings"]
    from tumorseg.data.lgg import holds_patients

    only = tiny_lgg.parent / "only-previews"
    only.mkdir()
    shutil.move(shots, only / "previews")  # a folder holding previews alone holds no patients
    assert holds_patients(tiny_lgg) and not holds_patients(only)
    shutil.move(only / "previews", shots)
    lost = tiny_lgg / "TCGA_ZZ_0000_20000101"  # named as a patient's slices: its missing mask is an error
    lost.mkdir()
    shutil.copy(next(tiny_lgg.glob("*/*_12.png")), lost / "TCGA_ZZ_0000_20000101_1.png")
    assert any("TCGA_ZZ_0000_20000101_1.png: image has no mask" in e for e in check_data(tiny_lgg)["errors"])
    with pytest.raises(DataError, match="image has no mask"):
        find_cases(tiny_lgg)


def test_slices_in_the_root_beside_a_folder_of_previews_are_one_patient(tiny_lgg, tmp_path):
    """With slices in the data folder itself and a folder of screenshots beside them, find_cases read
    the root as the patient while check-data (and so train) found "no slices"."""
    from tumorseg.data.lgg import find_cases

    one = tmp_path / "one"
    shutil.copytree(sorted(tiny_lgg.iterdir())[0], one)
    (one / "shots").mkdir()
    shutil.copy(next(one.glob("*_12.png")), one / "shots" / "shot0.png")
    assert [c.id for c in find_cases(one)] == ["one"]
    report = check_data(one)
    assert not report["errors"] and report["patients"] == 1 and report["slices"] == 12, report


def test_check_data_takes_the_folder_as_train_does(tiny_lgg):
    """`check-data --data DIR`, as `train` and `evaluate` take it, was "No such option: --data"."""
    plain, named = run("check-data", tiny_lgg), run("check-data", "--data", tiny_lgg)
    assert plain.returncode == named.returncode == 0 and plain.stdout == named.stdout, named.stderr
    both = run("check-data", tiny_lgg, "--data", tiny_lgg)
    assert both.returncode == 2 and "give the data folder once" in both.stderr


def test_train_says_every_skipped_folder_beyond_its_first_ten_warnings(tiny_lgg, tmp_path):
    """train shows 10 check-data warnings and counts the rest; a folder it leaves out, listed after
    them, was once only counted in "and N more"."""
    from tumorseg.config import validate_config
    from tumorseg.train import fit

    tumor = [p for p in sorted(tiny_lgg.glob("*/*_mask.png")) if np.asarray(Image.open(p)).max() > 127]
    for path in tumor[:11]:  # masks of 0 and 1: one warning each
        Image.fromarray((np.asarray(Image.open(path)) > 127).astype(np.uint8)).save(path)
    shots = tiny_lgg / "zz-previews"  # listed last
    shots.mkdir()
    shutil.copy(next(tiny_lgg.glob("*/*_12.png")), shots / "shot.png")
    report = check_data(tiny_lgg)
    assert len(report["warnings"]) == 12 and report["skipped_folders"] == [report["warnings"][-1]]
    tiny = {"base": 4, "depth": 2, "image_size": 32}
    cfg = validate_config({"data": str(tiny_lgg), "out": str(tmp_path / "run"), "epochs": 1, "batch_size": 4,
                           "test_frac": 0.0, "threads": 1, "model": tiny})  # fmt: skip
    logs: list[str] = []
    fit(cfg, progress=False, log=logs.append)
    said = [s for s in logs if s.startswith("warning: ")]
    assert sum("mask holds 0 and 1" in s for s in said) == 10
    assert f"warning: {report['skipped_folders'][0]}" in said
    assert "warning: and 1 more (`tumorseg check-data" in "\n".join(said)
