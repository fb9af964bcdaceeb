"""DICOM series: built from a real LGG patient's FLAIR slices, read back, segmented."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

from conftest import cli_here  # noqa: E402

from tumorseg.data.lgg import find_cases, load_case  # noqa: E402
from tumorseg.dicom import read_dicom_series  # noqa: E402
from tumorseg.errors import DataError  # noqa: E402
from tumorseg.volume import volume_slices  # noqa: E402

PID = "TCGA_CS_4941_19960909"


def write_series(folder, flair: np.ndarray, spacing=(0.9, 0.8), thickness=3.0, skip=None, shuffle=True, drop=()):
    """One MR slice per file, standard axial orientation, uint16 with slope 2 and intercept -10,
    named in scrambled order so sorting must use the position."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    order = np.random.default_rng(0).permutation(len(flair)) if shuffle else np.arange(len(flair))
    for name_idx, k in enumerate(order):
        if skip is not None and k == skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.PatientName = "MR", series, "Anonymous"
        ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.PatientID = study, frame, "anon"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20000101", "000000"
        ds.ReferringPhysicianName, ds.AccessionNumber, ds.StudyID = "", "", "1"
        ds.SeriesNumber, ds.InstanceNumber, ds.SliceThickness = 1, int(k) + 1, thickness
        ds.Rows, ds.Columns = flair.shape[1:]
        ds.PixelSpacing = list(spacing)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-100.0, -110.0, -40.0 + k * thickness]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -10
        ds.PixelData = ((flair[k].astype(np.uint16) + 5) * 3).tobytes()  # stored = (value + 5) * 3
        for attribute in drop:
            delattr(ds, attribute)
        ds.save_as(folder / f"IM{name_idx:04d}", enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def flair(lgg_root):
    return load_case(find_cases(lgg_root / PID)[0], None).images[:, 1]


def test_series_reads_sorted_with_geometry(flair, tmp_path):
    vol = read_dicom_series(write_series(tmp_path / "s", flair))
    assert vol.array.shape == (256, 256, len(flair))
    np.testing.assert_allclose(vol.spacing, (0.8, 0.9, 3.0))
    # LPS -> RAS: x and y flip sign
    np.testing.assert_allclose(vol.affine[:3, 3], [100.0, 110.0, -40.0])
    np.testing.assert_allclose(np.diag(vol.affine)[:3], [-0.8, -0.9, 3.0])
    # rescale applied: value = 2 * stored - 10 = 6 * flair + 20, a linear map of the original
    np.testing.assert_allclose(vol.array[:, :, 0].T, 6.0 * flair[0] + 20)
    slices, _ = volume_slices(vol, "flair")
    for k in (5, 12, 20):  # the slices come out as the LGG slices were shown, in position order
        assert np.corrcoef(slices[k, 0].ravel(), flair[k].ravel())[0, 1] > 0.99


def test_predict_series_writes_nifti_mask(flair, tmp_path):
    series = write_series(tmp_path / "series", flair)
    r = cli_here("predict", str(series), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "taken as FLAIR" in r.stdout
    assert r.stdout.count("scores lower on such input") == 1  # one note for one sequence, with its cost
    assert "Warning" not in r.stderr  # highdicom's advice on the copied PatientName is not the user's business
    out = nib.load(str(tmp_path / "o" / "series_pred.nii.gz"))
    assert out.shape == (256, 256, len(flair))
    np.testing.assert_allclose(out.affine, read_dicom_series(series).affine, atol=1e-5)
    # the DICOM SEG holds the same mask, frame by frame, referencing the source slices
    pytest.importorskip("highdicom")
    seg = pydicom.dcmread(tmp_path / "o" / "series_seg.dcm")
    assert seg.Modality == "SEG" and int(seg.NumberOfFrames) == len(flair)
    # what a PACS lists says what it is (once only ManufacturerModelName, which series lists rarely show)
    assert seg.SeriesDescription.endswith("RESEARCH USE ONLY") and "not a medical device" in seg.ContentDescription
    frames = seg.pixel_array.astype(bool)
    nifti_mask = np.asanyarray(out.dataobj).astype(bool)
    assert frames.sum() == nifti_mask.sum() > 0
    sources = {ds.SOPInstanceUID for ds in (pydicom.dcmread(p) for p in series.iterdir())}
    refs = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == sources


def test_three_series_as_t1_flair_t1c(lgg_root, tmp_path):
    """--t1/--flair/--t1c take DICOM series on one grid: no sequence is filled in, the mask matches
    the truth, and the SEG references the FLAIR series."""
    case = load_case(find_cases(lgg_root / PID)[0], None)
    series = {name: write_series(tmp_path / name, case.images[:, c]) for c, name in enumerate(("t1", "flair", "t1c"))}
    args = [a for name, folder in series.items() for a in (f"--{name}", str(folder))]
    r = cli_here("predict", *args, "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "filled with FLAIR" not in r.stdout and "taken as FLAIR" not in r.stdout
    mask = np.asanyarray(nib.load(str(tmp_path / "o" / "flair_pred.nii.gz")).dataobj).astype(bool)
    truth = case.full_masks.transpose(2, 1, 0)  # (S, H, W) -> the series' voxel order (column, row, slice)
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.7
    pytest.importorskip("highdicom")
    seg = pydicom.dcmread(tmp_path / "o" / "flair_seg.dcm")
    refs = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == {pydicom.dcmread(p).SOPInstanceUID for p in series["flair"].iterdir()}


def test_a_series_folder_as_its_own_out_can_be_segmented_again(flair, tmp_path):
    """The SEG a first run writes into the series folder is not taken for a slice by the second."""
    pytest.importorskip("highdicom")
    series = write_series(tmp_path / "series", flair[8:12])
    for _ in range(2):
        r = cli_here("predict", str(series), "--out", str(series))
        assert r.returncode == 0, r.stderr
    assert (series / "series_seg.dcm").is_file()


def test_series_without_slice_thickness_gets_its_nifti_and_a_plain_note(flair, tmp_path):
    pytest.importorskip("highdicom")
    series = write_series(tmp_path / "series", flair[:6], drop=("SliceThickness",))
    r = cli_here("predict", str(series), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "series_pred.nii.gz").is_file()
    assert not (tmp_path / "o" / "series_seg.dcm").exists()  # highdicom needs the attribute: said plainly
    notes = json.loads((tmp_path / "o" / "series_summary.json").read_text())["notes"]
    assert "no DICOM SEG written: the series lacks the DICOM attribute SliceThickness, which a SEG needs" in notes


def test_missing_slice_is_refused(flair, tmp_path):
    with pytest.raises(DataError, match="uneven slice spacing.*missing"):
        read_dicom_series(write_series(tmp_path / "s", flair[:8], skip=4))


def test_non_dicom_file_in_series(flair, tmp_path):
    folder = write_series(tmp_path / "s", flair[:3])
    (folder / "broken.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(DataError, match="broken.dcm: cannot read DICOM slice"):
        read_dicom_series(folder)


def test_dicomdir_multiframe_and_a_lone_slice_file(flair, tmp_path):
    """A DICOMDIR in the series folder once failed the whole series; a multi-frame file gave an
    AttributeError; a .dcm file named alone was called 'not a valid DCM file'."""
    import pydicom

    folder = write_series(tmp_path / "s", flair[:4])
    shutil.copy(next(folder.iterdir()), folder / "DICOMDIR")  # any content: the index is never a slice
    assert read_dicom_series(folder).array.shape[-1] == 4
    multi = write_series(tmp_path / "m", flair[:1])
    [one] = list(multi.iterdir())
    ds = pydicom.dcmread(one)
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3
    ds.save_as(one)
    with pytest.raises(DataError, match="multi-frame DICOM .3 frames in one file. is not read.*dcm2niix"):
        read_dicom_series(multi)
    lone = tmp_path / "slice.dcm"
    shutil.copy(next(iter(sorted((tmp_path / "s").glob("IM*")))), lone)
    r = cli_here("predict", str(lone), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "a DICOM slice alone is not read; pass its series folder" in r.stderr, r.stderr


def _edit(folder, change, only=None):
    """Rewrite the series' files (or only the one named `only`) with `change(ds)` applied."""
    for p in sorted(folder.iterdir()):
        if only is None or p.name == only:
            ds = pydicom.dcmread(p)
            change(ds)
            ds.save_as(p)
    return folder


def _rgb(ds):
    grey = ds.pixel_array.astype(np.uint8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.repeat(grey[..., None], 3, axis=-1).tobytes()


@pytest.mark.parametrize(
    "change, only, message",
    [
        (lambda ds: setattr(ds, "PixelSpacing", [0, 0]), None, r"IM0000: PixelSpacing must be two positive"),
        (lambda ds: setattr(ds, "PixelSpacing", [-1, -1]), None, r"IM0000: PixelSpacing must be two positive"),
        (lambda ds: setattr(ds, "ImageOrientationPatient", [2, 0, 0, 0, 2, 0]), None, r"IM0000: ImageOrientation"),
        (lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]), None, r"IM0000: ImageOrientation"),
        (lambda ds: setattr(ds, "ImageOrientationPatient", [0] * 6), None, r"IM0000: ImageOrientation"),
        (lambda ds: setattr(ds, "PixelSpacing", [1.8, 1.6]), "IM0002", r"differ in pixel spacing.*IM0002"),
        (_rgb, None, r"IM0000: a colour DICOM \(3 samples per pixel, RGB\) is not read"),
        (lambda ds: setattr(ds, "PhotometricInterpretation", "MONOCHROME1"), "IM0001", "differ in Photometric"),
    ],
    ids=[
        "zero-spacing",
        "negative-spacing",
        "orientation-x2",
        "orientation-parallel",
        "orientation-zero",
        "mixed-spacing",
        "rgb",
        "mixed-photometric",
    ],  # fmt: skip
)
def test_a_series_that_cannot_be_placed_or_is_not_grey_is_refused(flair, tmp_path, change, only, message):
    """Zero spacing or a degenerate orientation once ended in nibabel's traceback (the whole predict
    run lost); negative spacing mirrored the mask and a doubled orientation gave 4x the volume, both
    silently; an RGB series was read with its colours as x; mixed spacing took the first slice's."""
    folder = _edit(write_series(tmp_path / "s", flair[:4], shuffle=False), change, only)
    with pytest.raises(DataError, match=message):
        read_dicom_series(folder)


def test_monochrome1_is_read_with_bright_high(flair, tmp_path):
    """MONOCHROME1 (the lowest value shown white) was read as stored: the MRI upside down in
    brightness, no tumor found (Dice 0), exit 0."""
    plain = read_dicom_series(write_series(tmp_path / "a", flair[:4], shuffle=False)).array

    def invert(ds):
        ds.PixelData = (65535 - ds.pixel_array).astype(np.uint16).tobytes()
        ds.PhotometricInterpretation = "MONOCHROME1"

    mono1 = read_dicom_series(_edit(write_series(tmp_path / "b", flair[:4], shuffle=False), invert)).array
    assert np.corrcoef(plain.ravel(), mono1.ravel())[0, 1] > 0.999


def test_an_image_beside_the_series_is_refused_and_predicts_own_outputs_are_not(flair, tmp_path):
    """A PNG or NIfTI in a series folder was skipped without a word, against the README."""
    folder = write_series(tmp_path / "s", flair[:3])
    (folder / "s_pred.nii.gz").write_bytes(b"")  # what predict --out s writes there: never an input
    (folder / "notes.txt").write_text("other files are skipped")
    assert read_dicom_series(folder).array.shape[-1] == 3
    Image.fromarray(flair[0]).save(folder / "extra_12.png")
    with pytest.raises(DataError, match=r"s: holds images or volumes that are not DICOM \(extra_12.png\)"):
        read_dicom_series(folder)


def test_a_named_folder_with_nothing_to_segment_fails_and_the_others_are_written(flair, tmp_path):
    """An empty folder, or DICOM files without their preamble, named beside a good series were
    dropped without a word: "1 of 1 inputs segmented", exit 0."""
    good = write_series(tmp_path / "good", flair[:3])
    (tmp_path / "empty").mkdir()
    (tmp_path / "masks").mkdir()  # truth alone: skipped, as a `predict --out` folder is, not a failure
    Image.fromarray(flair[0]).save(tmp_path / "masks" / "s_1_mask.png")
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in sorted(good.iterdir()):  # the same datasets, without the 128-byte preamble and DICM
        (bare / p.name).write_bytes(p.read_bytes()[132:])
    out = tmp_path / "o"
    r = cli_here("predict", str(tmp_path / "empty"), str(bare), str(good), str(tmp_path / "masks"), "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "1 of 3 inputs segmented" in r.stdout, r.stdout
    assert f"failed: {tmp_path / 'empty'} holds no MRI slices" in r.stderr, r.stderr
    assert f"failed: {bare} holds no MRI slices" in r.stderr and "128-byte preamble" in r.stderr, r.stderr
    assert (out / "good_pred.nii.gz").is_file() and f"failed: {tmp_path / 'masks'}" not in r.stderr


def test_a_seg_that_cannot_be_written_fails_the_series_and_counts_its_mask(flair, tmp_path):
    """A write failure of the SEG (a full disk; here a folder in its place) was a note and exit 0,
    as if highdicom had refused the series."""
    pytest.importorskip("highdicom")
    series = write_series(tmp_path / "series", flair[:6])
    (tmp_path / "o" / "series_seg.dcm").mkdir(parents=True)
    r = cli_here("predict", str(series), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "cannot write" in r.stderr and "series_seg.dcm" in r.stderr, r.stderr
    assert "written before it: series_pred.nii.gz" in r.stderr and (tmp_path / "o" / "series_pred.nii.gz").is_file()
    assert "1 file" in r.stdout + r.stderr, r.stdout + r.stderr  # the mask on disk is counted
