"""NIfTI volumes: geometry round trip, parity with the slice path, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from conftest import cli_here  # noqa: E402

from tumorseg.data.lgg import find_cases, load_case  # noqa: E402
from tumorseg.errors import DataError  # noqa: E402
from tumorseg.infer import Predictor  # noqa: E402
from tumorseg.metrics import confusion_counts, dice, score_volume  # noqa: E402
from tumorseg.volume import Volume, mask_to_volume, read_nifti, volume_slices  # noqa: E402

PID = "TCGA_CS_4941_19960909"


def oblique_affine(spacing=(0.8, 0.9, 3.0), angle=0.2):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.array([[1, 0, 0], [0, np.cos(0.1), -np.sin(0.1)],
                                                                     [0, np.sin(0.1), np.cos(0.1)]])  # fmt: skip
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = [-100.0, -120.0, -40.0]
    return a


def slices_to_array(slices: np.ndarray) -> np.ndarray:
    """(Z, C, H, W) LGG slices -> a RAS-ordered (X, Y, Z, C) array that volume_slices inverts."""
    return np.ascontiguousarray(slices.transpose(3, 2, 0, 1)[::-1, ::-1])


def flip_first_axis(arr, affine):
    """The same world geometry stored with the first voxel axis reversed (an L-ordered file)."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, arr.shape[0] - 1
    return np.ascontiguousarray(arr[::-1]), affine @ flip


@pytest.fixture(scope="module")
def lgg_case(lgg_root):
    return load_case(find_cases(lgg_root / PID)[0], None)


@pytest.fixture(scope="module")
def nifti(lgg_case, tmp_path_factory):
    arr, affine = flip_first_axis(slices_to_array(lgg_case.images), oblique_affine())
    path = tmp_path_factory.mktemp("nii") / "scan.nii.gz"
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def test_slices_come_back_exactly(lgg_case, nifti):
    vol = read_nifti(nifti)
    slices, notes = volume_slices(vol)
    assert notes == []
    np.testing.assert_array_equal(slices, lgg_case.images)


@pytest.mark.parametrize("codes", [(0, 1, 2), (1, 0, 2), (2, 1, 0)])
def test_mask_round_trip_any_axis_order(codes):
    arr = np.random.default_rng(0).integers(0, 255, (9, 10, 11), dtype=np.uint8).transpose(codes)
    vol = Volume(np.ascontiguousarray(arr), oblique_affine()[:, [*codes, 3]], (1.0, 1.0, 1.0))
    slices, _ = volume_slices(vol, "flair")
    np.testing.assert_array_equal(mask_to_volume(slices[:, 0] > 100, vol), (arr > 100).astype(np.uint8))


def test_predict_nifti_same_dice_as_slice_path(lgg_case, nifti, tmp_path):
    r = cli_here("predict", str(nifti), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = nib.load(str(tmp_path / "scan_pred.nii.gz"))
    src = nib.load(str(nifti))
    assert out.shape == src.shape[:3] and out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
    mask = np.asanyarray(out.dataobj)
    assert set(np.unique(mask)) <= {0, 1}
    # the same patient through the slice path
    pred = Predictor.from_checkpoint()
    slice_masks = pred.segment(lgg_case.images, volume=True)
    truth_vol = mask_to_volume(lgg_case.full_masks, Volume(np.asanyarray(src.dataobj)[..., 0], src.affine, (1, 1, 1)))
    d_volume = dice(confusion_counts(mask > 0, truth_vol > 0))
    d_slices = dice(confusion_counts(slice_masks, lgg_case.full_masks))
    assert d_volume == pytest.approx(d_slices, abs=1e-9)
    summary = json.loads((tmp_path / "scan_summary.json").read_text())
    expected_ml = mask.sum() * 0.8 * 0.9 * 3.0 / 1000
    assert summary["tumor_volume_ml"] == pytest.approx(expected_ml, rel=1e-5)
    assert summary["largest_cross_section"]["pixels"] == max(int(m.sum()) for m in slice_masks)
    area = summary["largest_cross_section"]["pixels"] * 0.8 * 0.9  # once 807.5699572134024, float noise
    assert summary["largest_cross_section"]["area_mm2"] == float(f"{area:.6g}")
    assert summary["disclaimer"] == "Not a medical device. For research use only."  # files leave the tool


def test_flair_alone_is_repeated_and_said(lgg_case, tmp_path):
    flair = slices_to_array(lgg_case.images[:, 1:2])[..., 0].astype(np.float32) * 3.7 + 100  # not 0..255
    path = tmp_path / "flair.nii"
    nib.save(nib.Nifti1Image(flair, oblique_affine()), str(path))
    r = cli_here("predict", "--flair", path, "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert "filled with FLAIR" in r.stdout
    assert r.stdout.count("equal FLAIR in every slice") == 1  # said once, with what it costs
    assert nib.load(str(tmp_path / "o" / "flair_pred.nii.gz")).shape == flair.shape
    written = len(list((tmp_path / "o").iterdir()))  # its closing line, as other predict runs end
    assert r.stdout.rstrip().endswith(f"1 of 1 inputs segmented; {written} files in {tmp_path / 'o'}"), r.stdout


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((16, 16), np.uint8, "expected a 3D volume"),
        ((8, 8, 4, 5), np.uint8, "5 channels"),
        ((8, 8, 4), np.float32, "NaN"),
        ((64, 64, 0), np.uint8, r"volume is empty \(64x64x0 voxels\)"),  # once "got shape (0,)"
    ],  # fmt: skip
)
def test_bad_volumes(tmp_path, shape, dtype, message):
    arr = np.zeros(shape, dtype)
    if dtype == np.float32:
        arr[0, 0, 0] = np.nan
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    with pytest.raises(DataError, match=message):
        read_nifti(path)


def test_truncated_nifti(nifti, tmp_path):
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(nifti.read_bytes()[:2000])
    with pytest.raises(DataError, match="cut.nii.gz: cannot read NIfTI"):
        read_nifti(bad)


def test_evaluate_volume_pairs_matches_slice_path(lgg_case, nifti, tmp_path):
    src = nib.load(str(nifti))
    truth = slices_to_array(lgg_case.full_masks[:, None].astype(np.uint8))[..., 0]
    truth, affine = flip_first_axis(truth, oblique_affine())
    np.testing.assert_allclose(affine, src.affine)
    mask_path = tmp_path / "scan_mask.nii.gz"
    nib.save(nib.Nifti1Image(truth, affine), str(mask_path))
    (tmp_path / "pairs.csv").write_text(f"image,mask\n{nifti},{mask_path.name}\n")
    r = cli_here("evaluate", "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "ev"))
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    row = res["per_patient"][0]
    masks = Predictor.from_checkpoint().segment(lgg_case.images, volume=True)
    expected = dice(confusion_counts(masks, lgg_case.full_masks))
    assert row["dice"] == pytest.approx(expected, abs=1e-9)
    assert res["hd95_unit"] == "mm" and np.isfinite(row["hd95"])
    # HD95 in mm from the volume's own spacing: voxels 0.8 (x, the slices' columns) x 0.9 (y, their rows) x 3 mm
    # (z, across slices), so (3, 0.9, 0.8) for (slice, row, column); the rows' and columns' spacings swapped once
    # passed, as did the slice spacing given to a pixel axis
    mm = score_volume(masks, lgg_case.full_masks, spacing=(3.0, 0.9, 0.8))
    assert row["hd95"] == pytest.approx(mm["hd95"], rel=1e-6)
    assert row["slice_hd95"] == pytest.approx(mm["slice_hd95"], rel=1e-6)
    swapped = score_volume(masks, lgg_case.full_masks, spacing=(3.0, 0.8, 0.9))["slice_hd95"]
    assert abs(swapped - mm["slice_hd95"]) > 0.05  # (this patient tells the two apart)


def test_a_mask_that_is_not_0_and_1_is_said(lgg_case, nifti, tmp_path):
    """The FLAIR given as the mask (--image and --mask swapped) scored a silent Dice; a label map
    (BraTS's 1, 2, 4) is read as tumor above 0, and now says so too."""
    from tumorseg.evaluation import evaluate_volumes

    truth = slices_to_array(lgg_case.full_masks[:, None].astype(np.uint8))[..., 0]
    truth, affine = flip_first_axis(truth, oblique_affine())
    labels = truth * np.where(np.arange(truth.shape[0]) % 2, 2, 4)[:, None, None].astype(np.uint8)
    _saved(labels, affine, tmp_path / "labels.nii.gz")
    flair = np.asarray(nib.load(str(nifti)).dataobj)[..., 1]
    flair_path = _saved(flair, affine, tmp_path / "flair.nii.gz")
    res = evaluate_volumes([(nifti, tmp_path / "labels.nii.gz"), (nifti, flair_path)], log=lambda *a: None)
    labelled, swapped = (r["notes"] for r in res["per_patient"])
    assert any("the mask holds the values 2, 4 (labels?): every voxel above 0 is read as tumor" in n
               for n in labelled), labelled  # fmt: skip
    assert any("like an image: were --image and --mask swapped?" in n for n in swapped), swapped
    smooth = truth * np.random.default_rng(0).uniform(0.05, 1, truth.shape).astype(np.float32)  # interpolated
    res = evaluate_volumes([(nifti, _saved(smooth, affine, tmp_path / "smooth.nii.gz"))], log=lambda *a: None)
    assert any("values between 0 and 1, as a mask resampled with interpolation does" in n
               for n in res["per_patient"][0]["notes"])  # fmt: skip
    binary = evaluate_volumes([(nifti, _saved(truth, affine, tmp_path / "m.nii.gz"))], log=lambda *a: None)
    assert not [n for n in binary["per_patient"][0]["notes"] if "the mask holds" in n]


def _saved(arr: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def test_evaluate_pairs_keep_what_was_scored_and_name_each_problem(lgg_case, nifti, tmp_path):
    """One bad pair once threw away the pairs scored before it; a 4D mask gave a traceback; a CSV
    from Excel (byte-order mark, spaces) was refused; volume mode wrote no evaluation.md."""
    truth = slices_to_array(lgg_case.full_masks[:, None].astype(np.uint8))[..., 0]
    truth, affine = flip_first_axis(truth, oblique_affine())
    nib.save(nib.Nifti1Image(truth, affine), str(tmp_path / "good_mask.nii.gz"))
    four = np.repeat(truth[..., None], 3, axis=-1)
    nib.save(nib.Nifti1Image(four, affine), str(tmp_path / "four_mask.nii.gz"))
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"\ufeffimage , mask\n{nifti} , good_mask.nii.gz\n{nifti},four_mask.nii.gz\n", encoding="utf-8")
    r = cli_here("evaluate", "--pairs", csv, "--out", tmp_path / "ev")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "four_mask.nii.gz: a mask is one 3D volume" in r.stdout and "1 of 2 volumes failed" in r.stdout
    res = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert res["volumes"] == 1 and res["per_patient"][0]["dice"] > 0.5
    assert res["failed"][0]["mask"].endswith("four_mask.nii.gz")
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert "| variant |" in md and "| volume |" in md and "Mean per-volume Dice" in md and "1 volume scored" in md
    csv.write_text(f"image,mask\n{nifti},\n{nifti},absent.nii.gz\n")
    r = cli_here("evaluate", "--pairs", str(csv))
    assert r.returncode == 2 and "line 2: no mask" in r.stderr and "line 3: mask" in r.stderr, r.stderr
    assert "Dice" not in r.stdout  # checked before any volume is scored
    r = cli_here("evaluate", "--image", nifti, "--mask", tmp_path / "good_mask.nii.gz", "--out", tmp_path / "r",
                 "--report")  # fmt: skip
    assert r.returncode == 2 and "--report draws kaggle_3m patients" in r.stderr
    for extra in (["--data", str(tmp_path)], ["--split", "val"]):  # once silently ignored
        r = cli_here("evaluate", "--image", nifti, "--mask", nifti, *extra)
        assert r.returncode == 2 and "give one or the other" in r.stderr, r.stderr


def test_evaluate_reorients_a_mask_stored_in_another_voxel_order(lgg_case, nifti, tmp_path):
    """A truth mask in the image's world space but another voxel order (here RAS beside the image's
    L-ordered file) scores as the aligned one, with a note; a shifted mask gets a warning."""
    from tumorseg.evaluation import evaluate_volumes

    truth = slices_to_array(lgg_case.full_masks[:, None].astype(np.uint8))[..., 0]
    aligned, affine = flip_first_axis(truth, oblique_affine())
    paths = {}
    for name, arr, aff in (("aligned", aligned, affine), ("ras", truth, oblique_affine()),
                           ("shifted", aligned, affine + np.pad([[5.0]], ((0, 3), (3, 0)))[:4, :4])):  # fmt: skip
        paths[name] = tmp_path / f"{name}_mask.nii.gz"
        nib.save(nib.Nifti1Image(arr, aff), str(paths[name]))
    lines = []
    res = evaluate_volumes([(nifti, p) for p in paths.values()], log=lines.append)
    dices = [row["dice"] for row in res["per_patient"]]
    assert dices[0] > 0.5 and dices[1] == pytest.approx(dices[0], abs=1e-12)
    assert any("ras_mask.nii.gz: stored as RAS" in x and "reoriented" in x for x in lines)
    assert any("warning" in x and "shifted_mask.nii.gz" in x for x in lines)
    assert not any("aligned_mask.nii.gz" in x and ("reoriented" in x or "warning" in x) for x in lines)
    assert any(x.startswith("per-volume Dice") and "interval over these 3 volumes" in x for x in lines)


def test_geometry_unlike_the_training_slices_is_said():
    """A sagittal acquisition (5 mm between sagittal slices: axial pixels 5 x 1 mm) and a volume tilted
    30 degrees each get a note; the fixture's 11-degree, 0.8 x 0.9 mm volume gets none."""
    arr = np.random.default_rng(0).integers(0, 255, (12, 40, 40), dtype=np.uint8)  # an MRI, not a blank one
    sagittal = Volume(arr, np.diag([5.0, 1.0, 1.0, 1.0]), (5.0, 1.0, 1.0))
    assert any("5 x 1 mm pixels" in n for n in volume_slices(sagittal, "flair")[1])
    tilted = Volume(arr.transpose(1, 2, 0), oblique_affine((1.0, 1.0, 1.0), angle=np.radians(30)), (1.0, 1.0, 1.0))
    assert any("tilted 30 degrees" in n for n in volume_slices(tilted, "flair")[1])
    plain = Volume(arr.transpose(1, 2, 0), oblique_affine(), (0.8, 0.9, 3.0))
    assert volume_slices(plain, "flair")[1] == []


def test_4d_volume_whose_t1s_copy_flair_is_said(lgg_root, tmp_path):
    """TCGA_HT_7877 lacks both T1s (the dataset copied FLAIR into them): as a 4D NIfTI it gets the
    FLAIR-alone note; a patient with all three sequences gets none."""
    from conftest import case_nifti

    path, _ = case_nifti(lgg_root, "TCGA_HT_7877_19980917", slice(10, 14), tmp_path / "flair_only.nii.gz")
    _, notes = volume_slices(read_nifti(path))
    assert len(notes) == 1 and notes[0].startswith("pre-contrast T1 and post-contrast T1 equal FLAIR")
    path, _ = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(10, 14), tmp_path / "all.nii.gz")
    assert volume_slices(read_nifti(path))[1] == []


def test_tumor_volume_of_a_sheared_grid_is_its_voxel_volume():
    """The mL count uses the voxel's true volume, |det| of the affine: on a sheared grid that is
    less than the product of the axis lengths."""
    from tumorseg.volume import mask_summary

    affine = np.eye(4)
    affine[:3, :3] = [[1.0, 0.5, 0], [0, 1.0, 0], [0, 0, 2.0]]  # the second axis leans into the first
    vol = Volume(np.zeros((8, 8, 4), np.uint8), affine, (1.0, float(np.hypot(1, 0.5)), 2.0))
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1, 2:4, 2:4] = 1
    assert mask_summary(mask, vol)["tumor_volume_ml"] == pytest.approx(4 * 2.0 / 1000)


def test_a_volume_gets_an_overlay_and_slice_only_outputs_are_said(nifti, lgg_case, tmp_path):
    """`--probabilities --overlay` on a NIfTI once wrote only the mask and summary, without a word;
    then a warning said both were for 2D slices only: a volume got no picture at all. Now it gets
    an overlay of its tumor's slices, and only --probabilities is said to be for slices."""
    r = cli_here("predict", str(nifti), "--out", str(tmp_path), "--probabilities", "--overlay")
    assert r.returncode == 0, r.stderr
    assert "warning: --probabilities: written for 2D slices only" in r.stderr and "--overlay" not in r.stderr
    names = ["scan_overlay.png", "scan_pred.nii.gz", "scan_summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    summary = json.loads((tmp_path / "scan_summary.json").read_text())
    assert summary["outputs"] == [str(tmp_path / n) for n in ("scan_pred.nii.gz", "scan_overlay.png")]
    shown = min(6, len(summary["slices_with_tumor"]))
    from PIL import Image

    height, width = np.asarray(Image.open(tmp_path / "scan_overlay.png")).shape[:2]
    assert width == 3 * 256 + 8  # MRI | prediction | overlay
    assert shown * 256 < height < shown * (256 + 60)  # one strip per slice shown, each under its title


def test_evaluate_pairs_say_a_tumor_free_volume_favours_the_baseline(lgg_case, nifti, tmp_path):
    """The tumor-free note was in evaluation.md but not on the console for volumes (review)."""
    from tumorseg.evaluation import evaluate_volumes

    truth = slices_to_array(lgg_case.full_masks[:, None].astype(np.uint8))[..., 0]
    truth, affine = flip_first_axis(truth, oblique_affine())
    pairs = [(nifti, _saved(truth, affine, tmp_path / "t_mask.nii.gz")),
             (nifti, _saved(np.zeros_like(truth), affine, tmp_path / "none_mask.nii.gz"))]  # fmt: skip
    lines: list[str] = []
    evaluate_volumes(pairs, log=lines.append)
    assert any(x.startswith("1 of 2 volumes have no tumor in their truth") and "over the 1 with tumor" in x
               for x in lines), lines  # fmt: skip


def test_a_volume_overlay_that_cannot_be_written_leaves_the_mask_counted(nifti, tmp_path):
    """A folder in the overlay's place once failed the volume: "0 of 1 inputs segmented", its mask
    left on disk uncounted and no summary. The overlay is now said to be missing, the rest stands.
    `--probabilities` with `--flair` was ignored without a word."""
    (tmp_path / "o" / "scan_overlay.png").mkdir(parents=True)
    r = cli_here("predict", str(nifti), "--out", str(tmp_path / "o"), "--overlay")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "o" / "scan_summary.json").read_text())
    assert any(n.startswith("no overlay written: ") for n in summary["notes"]), summary["notes"]
    assert summary["outputs"] == [str(tmp_path / "o" / "scan_pred.nii.gz")]
    src = nib.load(str(nifti))
    flair = tmp_path / "flair.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(src.dataobj)[..., 1], src.affine), str(flair))
    r = cli_here("predict", "--flair", str(flair), "--out", str(tmp_path / "f"), "--probabilities")
    assert r.returncode == 0 and "warning: --probabilities: written for 2D slices only" in r.stderr, r.stderr


def test_a_volume_that_states_no_orientation_gets_no_left_right_letters(nifti, tmp_path):
    """Volume overlays carry R/L/A/P letters; a NIfTI whose qform and sform codes are 0 states no
    orientation (nibabel assumes one), so its letters and "the patient's right on the left" would
    claim a side the file never gave. It gets neither, and a note says why."""
    from PIL import Image

    arr = np.asarray(nib.load(nifti).dataobj)
    unstated = nib.Nifti1Image(arr, None)  # qform_code = sform_code = 0
    for name, affine in (("bare", None), ("placed", unstated.header.get_base_affine())):  # the same voxels
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(arr, affine), tmp_path / name / "scan.nii.gz")  # one name: titles alike
        r = cli_here("predict", str(tmp_path / name / "scan.nii.gz"), "--out", str(tmp_path / name), "--overlay")
        assert r.returncode == 0, r.stderr
    summaries = {n: json.loads((tmp_path / n / "scan_summary.json").read_text()) for n in ("bare", "placed")}
    notes = {n: summary["notes"] for n, summary in summaries.items()}
    assert any("states no orientation" in n for n in notes["bare"]), notes
    assert not any("most inferior" in n for n in notes["bare"]), notes  # close calls count in the file's order
    orders = {n: summary["slice_order"] for n, summary in summaries.items()}
    assert "the file's own slice order" in orders["bare"] and "most inferior" in orders["placed"], orders
    assert not any("states no orientation" in n for n in notes["placed"]), notes
    bare, placed = (np.asarray(Image.open(tmp_path / n / "scan_overlay.png")) for n in ("bare", "placed"))
    assert bare.shape == placed.shape
    assert (bare[:, :24] != placed[:, :24]).any()  # the R at the MRI panel's left edge, on the placed one only
    assert read_nifti(tmp_path / "bare" / "scan.nii.gz").oriented is False
    assert read_nifti(tmp_path / "placed" / "scan.nii.gz").oriented
