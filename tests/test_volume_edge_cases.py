"""Volume input edge cases found in review: NIfTI header forms, odd voxel types, DICOM series
oddities, and `predict` on several volumes. Synthetic volumes and the shipped model: no dataset needed."""

from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from conftest import cli_here  # noqa: E402

from tumorseg.dicom import read_dicom_series  # noqa: E402
from tumorseg.errors import DataError, TumorsegError  # noqa: E402
from tumorseg.infer import Predictor  # noqa: E402
from tumorseg.io import read_image  # noqa: E402
from tumorseg.predict import predict_files  # noqa: E402
from tumorseg.volume import in_voxel_order_of, read_nifti, stack_channels, write_nifti  # noqa: E402

AFFINE = np.array([[0.9, 0, 0, -100.0], [0, 0.8, 0, -110.0], [0, 0, 3.0, -40.0], [0, 0, 0, 1]])


def scan(shape=(24, 20, 5), dtype=np.int16):
    rng = np.random.default_rng(0)
    return (rng.random(shape) * 400).astype(dtype)


@pytest.fixture(scope="module")
def shipped():
    """The shipped model (torch backend): the real predictor `predict` uses by default."""
    return Predictor.from_checkpoint(backend="torch")


def round_trip(tmp_path, qform, qcode: int, sform, scode: int):
    """Save a scan with these forms, read it, write a mask for it: (the read Volume, the mask's image)."""
    img = nib.Nifti1Image(scan(), None)
    img.set_qform(qform, qcode)
    img.set_sform(sform, scode)
    nib.save(img, tmp_path / "in.nii.gz")
    vol = read_nifti(tmp_path / "in.nii.gz")
    write_nifti(tmp_path / "m.nii.gz", np.zeros(vol.array.shape, np.uint8), vol)
    return vol, nib.load(tmp_path / "m.nii.gz")


def test_qform_only_nifti_mask_keeps_its_affine(tmp_path):
    _, out = round_trip(tmp_path, AFFINE, 1, None, 0)
    np.testing.assert_allclose(out.affine, AFFINE, atol=1e-5)  # was an all-zero sform with code 1
    assert int(out.header["sform_code"]) == 0 and int(out.header["qform_code"]) == 1


def test_nifti_without_orientation_codes_round_trips(tmp_path):
    vol, out = round_trip(tmp_path, None, 0, None, 0)
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-5)


def unsized_nifti(path, pixdim=(0.5, 0.5, 0.0)):
    """A scan without sform and qform whose pixdim gives no size along some axis (nibabel takes 1 mm)."""
    img = nib.Nifti1Image(scan(), None)
    img.header.set_qform(None, code=0)  # the header's own: the image's would write its default affine back
    img.header.set_sform(None, code=0)
    img.header["pixdim"][1:4] = pixdim
    nib.save(img, path)
    return path


@pytest.mark.parametrize("name", ["z.nii", "z.nii.gz"])
def test_a_voxel_size_the_file_does_not_give_is_noted(tmp_path, name, capfd):
    """pixdim 0 without sform or qform: 1 mm is assumed, and the notes say so (nibabel's own warning,
    which names no file, is not printed); a file that gives every size gets no such note."""
    from tumorseg.volume import volume_slices

    vol = read_nifti(unsized_nifti(tmp_path / name))
    assert vol.spacing == (0.5, 0.5, 1.0) and vol.assumed == "z"
    (note,) = [n for n in volume_slices(vol)[1] if "voxel size" in n]
    assert note.startswith("the file gives no voxel size along z (pixdim 0 and no sform or qform): 1 mm is assumed")
    assert "should be non-zero" not in capfd.readouterr().err
    vol = read_nifti(unsized_nifti(tmp_path / f"ok-{name}", (0.5, 0.5, 3.0)))
    assert vol.assumed == "" and not [n for n in volume_slices(vol)[1] if "voxel size" in n]


def test_predict_says_the_assumed_size_and_never_0_ml(tmp_path, shipped):
    """`predict` carries the note into the summary; a tumor under 0.01 mL is not printed as 0.00 mL."""
    import json

    from tumorseg.volume import millilitres

    said = []
    predict_files([unsized_nifti(tmp_path / "v.nii.gz")], tmp_path / "out", shipped, log=said.append)
    summary = json.loads((tmp_path / "out" / "v_summary.json").read_text())
    assert any(n.startswith("the file gives no voxel size along z") for n in summary["notes"])
    assert any("no voxel size along z" in line and "v.nii.gz" in line for line in said), said
    assert [millilitres(v) for v in (0, 0.004, 0.01, 2.345)] == ["0 mL", "under 0.01 mL", "0.01 mL", "2.35 mL"]


def test_degenerate_affine_is_refused_with_the_file_name(tmp_path):
    hdr = nib.Nifti1Image(scan(), AFFINE).header
    for row in ("srow_x", "srow_y", "srow_z"):
        hdr[row] = 0
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    path = tmp_path / "zero.nii.gz"
    nib.save(nib.Nifti1Image(scan(), None, header=hdr), path)
    with pytest.raises(DataError, match=r"zero\.nii\.gz: .*degenerate"):
        read_nifti(path)


@pytest.mark.parametrize("kind", ["rgb", "complex"])
def test_rgb_and_complex_voxels_are_refused(tmp_path, kind):
    data = scan(dtype=np.uint8)
    if kind == "rgb":
        arr = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        arr["R"] = arr["G"] = arr["B"] = data
    else:
        arr = data.astype(np.complex64)
    path = tmp_path / f"{kind}.nii.gz"
    nib.save(nib.Nifti1Image(arr, AFFINE), path)
    with pytest.raises(DataError, match=rf"{kind}\.nii\.gz: voxels of type .* not supported"):
        read_nifti(path)


def test_trailing_singleton_axes_are_dropped(tmp_path):
    path = tmp_path / "x11.nii.gz"
    nib.save(nib.Nifti1Image(scan()[..., None, None], AFFINE), path)
    assert read_nifti(path).array.shape == (24, 20, 5)


def test_flair_option_errors_name_flair_and_folders_are_explained(tmp_path):
    nib.save(nib.Nifti1Image(np.stack([scan()] * 3, -1), AFFINE), tmp_path / "three.nii.gz")
    with pytest.raises(DataError, match="--flair needs a single-sequence"):
        stack_channels(None, read_nifti(tmp_path / "three.nii.gz"), None)
    with pytest.raises(DataError, match=r"is a folder, not a NIfTI file \(.nii or .nii.gz\)$"):
        read_nifti(tmp_path)  # once pointed a CLI user (evaluate --mask FOLDER) at a Python function
    with pytest.raises(DataError, match=r"three.nii.gz: a NIfTI volume, not a 2D slice: read it with .*read_volume"):
        read_image(tmp_path / "three.nii.gz")  # once "not a valid NII file, or truncated"


def test_uint8_sequences_stay_uint8_as_a_4d_uint8_file_does(tmp_path):
    parts = [read_nifti(_save(tmp_path / f"{n}.nii.gz", scan(dtype=np.uint8) // (i + 1))) for i, n in enumerate("abc")]
    vol, _ = stack_channels(*parts)
    assert vol.array.dtype == np.uint8  # uint8 is used as it is; it was cast to float and rescaled
    np.testing.assert_array_equal(vol.array[..., 1], parts[1].array)


def _save(path, arr, affine=AFFINE):
    nib.save(nib.Nifti1Image(arr, affine), path)
    return path


def write_series(folder, n=4, thickness=3.0, **extra):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    series = generate_uid()
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.SliceThickness = "MR", series, thickness
        ds.Rows, ds.Columns, ds.PixelSpacing = 16, 12, [0.5, 0.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, k * thickness]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = (np.arange(16 * 12, dtype=np.uint16) + k).tobytes()
        for key, value in extra.items():
            setattr(ds, key, value)
        ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)
    assert pydicom
    return folder


def test_single_slice_series_takes_its_slice_thickness(tmp_path):
    vol = read_dicom_series(write_series(tmp_path / "one", n=1, thickness=5.0))
    assert vol.spacing[2] == 5.0  # was 1.0, so the tumor volume in mL came out 5x too small
    assert np.isclose(abs(np.linalg.det(vol.affine[:3, :3])), 0.5 * 0.5 * 5.0)


def test_hidden_files_in_a_series_folder_are_skipped(tmp_path):
    folder = write_series(tmp_path / "s")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 64)
    (folder / "._IM0000").write_bytes(b"\0" * 64)  # an AppleDouble file from a macOS copy
    assert read_dicom_series(folder).array.shape == (12, 16, 4)


def test_duplicated_slice_is_named_as_such(tmp_path):
    folder = write_series(tmp_path / "s")
    (folder / "IM9999").write_bytes((folder / "IM0001").read_bytes())
    with pytest.raises(DataError, match="IM0001 and IM9999 lie at the same position"):
        read_dicom_series(folder)


def test_predict_skips_nifti_truth_masks_in_a_folder(tmp_path, shipped):
    folder = tmp_path / "in"
    folder.mkdir()
    _save(folder / "scan.nii.gz", scan())
    _save(folder / "scan_mask.nii.gz", np.zeros((24, 20, 5), np.uint8))
    res = predict_files([folder], tmp_path / "out", shipped, log=lambda m: None)
    assert res.inputs == 1 and not res.failed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scan_pred.nii.gz", "scan_summary.json"]


def test_volumes_with_one_name_are_refused_before_anything_is_written(tmp_path, shipped):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    with pytest.raises(TumorsegError, match="share the name 'scan'"):
        predict_files([_save(a / "scan.nii.gz", scan()), _save(b / "scan.nii", scan())], tmp_path / "out",
                      shipped, log=lambda m: None)  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_a_volume_that_cannot_be_written_fails_alone(tmp_path, monkeypatch, shipped):
    import tumorseg.predict as predict_mod

    real = predict_mod.predict_volume

    def flaky(vol, prefix, *args, **kwargs):
        if prefix.name == "bad":
            raise OSError(28, "No space left on device")
        return real(vol, prefix, *args, **kwargs)

    monkeypatch.setattr(predict_mod, "predict_volume", flaky)
    errors = []
    res = predict_files([_save(tmp_path / "bad.nii.gz", scan()), _save(tmp_path / "good.nii.gz", scan())],
                        tmp_path / "out", shipped, log=lambda m: None, err=errors.append)  # fmt: skip
    assert [p.name for p, _ in res.failed] == ["bad.nii.gz"] and "bad.nii.gz" in errors[0]
    assert (tmp_path / "out" / "good_pred.nii.gz").is_file()


def test_spacing_comes_from_the_affine_not_a_stale_pixdim(tmp_path):
    """A NIfTI whose sform says 0.9 x 0.8 x 3 mm but whose pixdim was left at 1 mm once gave
    summaries where the volume in mL (from the affine) and the areas and spacing (from pixdim) disagreed."""
    img = nib.Nifti1Image(scan(), AFFINE)
    img.set_qform(None, code=0)
    img.header.set_zooms((1.0, 1.0, 1.0))
    nib.save(img, str(tmp_path / "s.nii.gz"))
    assert read_nifti(tmp_path / "s.nii.gz").spacing == pytest.approx((0.9, 0.8, 3.0))


def test_a_flair_output_name_taken_by_an_input_volume_is_refused(tmp_path):
    """`--flair a/flair.nii.gz b/flair.nii.gz` once wrote both to out/flair_pred.nii.gz, the second
    over the first, and counted one input."""

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        nib.save(nib.Nifti1Image(scan(), AFFINE), str(tmp_path / d / "flair.nii.gz"))
    r = cli_here(
        "predict",
        "--flair",
        str(tmp_path / "a" / "flair.nii.gz"),
        str(tmp_path / "b" / "flair.nii.gz"),
        "--out",
        str(tmp_path / "o"),
    )
    assert r.returncode == 2 and "share the name 'flair'" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
    r = cli_here(
        "predict", "--flair", str(tmp_path / "a" / "flair.nii.gz"), str(tmp_path / "b"), "--out", str(tmp_path / "o")
    )
    assert r.returncode == 2 and "share the name 'flair'" in r.stderr, r.stderr  # b/ holds flair.nii.gz too
    (tmp_path / "o" / "flair_pred.nii.gz").mkdir(parents=True)  # an output that cannot be written
    r = cli_here("predict", "--flair", str(tmp_path / "a" / "flair.nii.gz"), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "failed: " in r.stderr, r.stderr


@pytest.mark.parametrize("row, col, value", [(2, 0, -1e38), (1, 0, 1e30)])
def test_an_affine_with_no_axis_for_each_voxel_axis_is_refused(tmp_path, row, col, value):
    """One huge term (its determinant is fine) once passed the check and failed later in nibabel's
    reorientation: a 500 `OrientationError` from the server, a traceback from `predict`."""
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[row, col] = value
    path = _save(tmp_path / "sheared.nii.gz", scan(), affine)
    with pytest.raises(DataError, match=r"sheared.nii.gz: its voxel-to-world matrix .* is degenerate"):
        read_nifti(path)
    r = cli_here("predict", str(path), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "is degenerate" in r.stderr, r.stderr


def test_sequences_in_another_voxel_order_are_reoriented_to_the_flair(tmp_path):
    """A T1 on the FLAIR's grid but stored LPS (or axes swapped) was refused ("register or resample
    it"); it is reoriented to the FLAIR's voxel order, with a note. Another grid is still refused."""
    flair, t1 = scan(), scan() // 2 + 7
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # the same voxels, stored with x and y reversed
    lps[:2, 3] = [t1.shape[0] - 1, t1.shape[1] - 1]
    stored = AFFINE @ lps
    swapped = stored[:, [1, 0, 2, 3]]  # and with the first two axes swapped
    f = read_nifti(_save(tmp_path / "flair.nii.gz", flair))
    for name, arr, affine in (("lps", t1[::-1, ::-1], stored), ("swap", t1[::-1, ::-1].transpose(1, 0, 2), swapped)):
        t = read_nifti(_save(tmp_path / f"t1-{name}.nii.gz", np.ascontiguousarray(arr), affine))
        vol, notes = stack_channels(t, f, None)
        np.testing.assert_array_equal(vol.array[..., 0], t1)  # the T1 channel, voxel for voxel on the FLAIR's grid
        np.testing.assert_array_equal(vol.array[..., 1], flair)
        assert any(n.startswith(f"T1: {tmp_path / f't1-{name}.nii.gz'}: stored as ") and "reoriented" in n
                   for n in notes), notes  # fmt: skip
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    with pytest.raises(DataError, match="affine .* differs from the FLAIR volume"):
        stack_channels(read_nifti(_save(tmp_path / "t1-shifted.nii.gz", t1, shifted)), f, None)
    # the reoriented volume drops the header of its old voxel order (written, it once kept the swapped
    # affine on the reordered voxels) and renames the axes whose size the file did not give
    t = read_nifti(tmp_path / "t1-swap.nii.gz")
    t.assumed = "x"
    moved, _ = in_voxel_order_of(t, f)
    write_nifti(tmp_path / "written.nii.gz", moved.array > 50, moved)
    np.testing.assert_allclose(nib.load(tmp_path / "written.nii.gz").affine, f.affine, atol=1e-4)
    assert moved.assumed == "y" and moved.header is None and moved.source == t.source


def test_series_named_by_uid_or_ima_and_folders_named_by_uid_or_dot(tmp_path, shipped, monkeypatch):
    """PACS exports name files by UID (`1.2.826....12`, no .dcm) and Siemens `X.IMA`: neither was
    seen as DICOM. Folders named by SeriesInstanceUID were cut at the last dot (two series 'shared'
    a name), and `predict .` wrote its outputs beside --out, as `out_pred.nii.gz`."""
    uid = write_series(tmp_path / "in" / "1.2.840.113619.2.55.3")
    for i, p in enumerate(sorted(uid.iterdir())):
        p.rename(uid / f"1.2.826.0.1.3680043.8.498.{i + 1}")
    ima = write_series(tmp_path / "in" / "1.2.840.113619.2.55.4")
    for p in ima.iterdir():
        p.rename(p.with_suffix(".IMA"))
    res = predict_files([uid, ima], tmp_path / "out", shipped, log=lambda m: None)
    assert not res.failed, res.failed
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "1.2.840.113619.2.55.3_pred.nii.gz" in written and "1.2.840.113619.2.55.4_pred.nii.gz" in written
    monkeypatch.chdir(uid)
    res = predict_files([Path(".")], tmp_path / "dot", shipped, log=lambda m: None)
    assert not res.failed and (tmp_path / "dot" / "1.2.840.113619.2.55.3_pred.nii.gz").is_file()
    assert not list(tmp_path.glob("dot_*"))  # nothing beside the output folder
    r = cli_here("predict", str(uid / "1.2.826.0.1.3680043.8.498.1"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "a DICOM slice alone is not read; pass its series folder" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "shape, said",
    [
        ((256, 1, 256), r"256 x 1 pixels \(256 of them\): it holds 1 slice in another plane .coronal or sagittal.*"
                        r"give the axial series, or save the slice as a 2D image"),
        ((3, 256, 256), r"3 x 256 pixels \(256 of them\): it holds 3 slices in another plane .coronal or "
                        r"sagittal.*give the axial series$"),
        ((6, 6, 40), r"6 x 6 pixels \(40 of them\), too small to segment \(at least 8 x 8\)$"),
    ],
)  # fmt: skip
def test_a_coronal_or_sagittal_slice_is_not_cut_into_one_pixel_axial_slices(tmp_path, shape, said):
    """A single coronal slice was segmented as 256 axial slices one pixel high ("0.09 mL in 8 of 256
    axial slices"); it is refused, saying what the volume holds and what to give instead."""
    from tumorseg.volume import volume_slices

    path = _save(tmp_path / "cor.nii.gz", scan(shape), np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(DataError, match="cor.nii.gz: its axial slices would be " + said):
        volume_slices(read_nifti(path))
    r = cli_here("predict", str(path), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "axial slices would be" in r.stderr and not list((tmp_path / "o").glob("*_pred*"))


def _rewrite(path, change):
    import pydicom

    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def test_dicom_objects_without_pixels_one_unsized_slice_several_series_and_metres(tmp_path):
    """From a hospital's exports (QA): a presentation state beside the slices failed the whole
    series ('no Pixel Data'); one slice without SliceThickness took 1 mm without a word; 'more than
    one series' named none of them; a NIfTI in metres gave a tumor volume 1e9 times too small."""
    from tumorseg.volume import volume_slices

    folder = write_series(tmp_path / "s", SeriesDescription="T2 FLAIR")
    (folder / "PR0001").write_bytes((folder / "IM0000").read_bytes())
    _rewrite(folder / "PR0001", lambda ds: (delattr(ds, "PixelData"), setattr(ds, "SeriesInstanceUID", "1.2.3")))
    assert read_dicom_series(folder).array.shape == (12, 16, 4)  # the presentation state is not a slice
    only = tmp_path / "pr"
    only.mkdir()
    (only / "PR0001").write_bytes((folder / "PR0001").read_bytes())
    with pytest.raises(DataError, match=r"pr: its 1 DICOM file\(s\) hold no pixel data .*PR0001\), so no MRI slice"):
        read_dicom_series(only)
    other = write_series(tmp_path / "t1", n=3, SeriesDescription="T1")
    for p in other.iterdir():
        p.rename(folder / f"T1_{p.name}")
    with pytest.raises(DataError, match=r"holds 2 series .*: 'T2 FLAIR' \(4 slices, e.g. IM0000\), 'T1' \(3 slices, "
                       r"e.g. T1_IM0000\); put each series in a folder of its own"):  # fmt: skip
        read_dicom_series(folder)
    one = write_series(tmp_path / "one", n=1)
    _rewrite(one / "IM0000", lambda ds: delattr(ds, "SliceThickness"))
    notes = volume_slices(read_dicom_series(one))[1]
    assert any("no voxel size along z (one slice, with no SliceThickness or SpacingBetweenSlices)" in n for n in notes)
    img = nib.Nifti1Image(scan(), AFFINE * [[0.001], [0.001], [0.001], [1]])
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "metres.nii.gz")
    with pytest.raises(DataError, match=r"metres.nii.gz: its header gives lengths in meters .*save it in mm"):
        read_nifti(tmp_path / "metres.nii.gz")


def test_a_summary_that_cannot_be_written_still_counts_the_mask_written(tmp_path, shipped):
    """The mask was written, the summary was not (a folder in its way, a full disk), and the run
    said "0 files" without naming the mask left on disk (QA)."""
    out = tmp_path / "out"
    (out / "scan_summary.json").mkdir(parents=True)
    res = predict_files([_save(tmp_path / "scan.nii.gz", scan())], out, shipped, log=lambda m: None, err=lambda m: None)
    assert res.written == [out / "scan_pred.nii.gz"] and (out / "scan_pred.nii.gz").is_file()
    [(path, why)] = res.failed
    assert path.name == "scan.nii.gz" and why.startswith(f"cannot write {out / 'scan_summary.json'}: ")
    assert why.endswith("; written before it: scan_pred.nii.gz")
    r = cli_here("predict", "--flair", str(tmp_path / "scan.nii.gz"), "--out", str(out))
    assert r.returncode == 1 and "0 of 1 inputs segmented; 1 file in" in r.stdout, r.stdout + r.stderr


def test_a_mask_or_label_volume_given_to_predict_is_said_to_be_one(tmp_path):
    """A BraTS-style P001_seg.nii.gz (0/1) was segmented as an MRI: "tumor 0 mL", without a word (QA)."""
    from tumorseg.volume import volume_slices

    labels = np.zeros((24, 20, 5), np.uint8)
    labels[5:9, 5:9, 1:3] = 1
    labels[10:12, 4:6, 2] = 4
    said = volume_slices(read_nifti(_save(tmp_path / "P001_seg.nii.gz", labels)))[1]
    assert any(n.startswith("the volume holds only the values 0, 1 and 4: it looks like a mask") for n in said)
    said = volume_slices(read_nifti(_save(tmp_path / "blank.nii.gz", np.zeros((24, 20, 5), np.int16))))[1]
    assert "the volume holds only the value 0: it is blank, so its result means nothing" in said
    assert not [n for n in volume_slices(read_nifti(_save(tmp_path / "mri.nii.gz", scan())))[1] if "holds only" in n]


def test_a_nifti_pair_fails_named_with_how_to_convert_it(tmp_path):
    """`predict pair.hdr pair.img` once stopped the whole run: 'two inputs share the name pair'."""
    nib.save(nib.Nifti1Pair(scan(), AFFINE), tmp_path / "pair.img")
    r = cli_here("predict", str(tmp_path / "pair.hdr"), str(tmp_path / "pair.img"), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "share the name" not in r.stderr, r.stderr
    for name in ("pair.hdr", "pair.img"):
        assert f"{name}: a NIfTI or Analyze pair (.hdr and .img) is not read: save it as one .nii.gz" in r.stderr
    assert f"nib.save(nib.load('{tmp_path / 'pair.hdr'}'), '{tmp_path / 'pair.nii.gz'}')" in r.stderr


def test_a_uid_named_slice_that_cannot_be_opened_is_not_dropped(tmp_path, monkeypatch):
    """Its DICM marker could not be read (permission denied), so it stopped counting as a slice and
    the series came out a slice short without a word (review): a UID-named file is a slice by its
    name, as a suffix-less one is."""
    uid = write_series(tmp_path / "s", n=5)
    for i, p in enumerate(sorted(uid.iterdir())):
        p.rename(uid / f"1.2.826.0.1.3680043.8.498.{i + 1}")
    opened = Path.open

    def denied(self, *a, **kw):
        if self.name == "1.2.826.0.1.3680043.8.498.5":
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *a, **kw)

    monkeypatch.setattr(Path, "open", denied)
    assert read_dicom_series(uid).array.shape == (12, 16, 5)  # kept: the reader names it if it truly cannot read it


def test_a_vox_offset_far_into_the_file_is_refused_before_nibabel_reads_the_extensions(tmp_path, monkeypatch):
    """nibabel inflates and keeps every extension up to vox_offset: a 261 KB .nii.gz with the
    extension flag set took 1 GB before the check that came after it (review)."""
    import gzip

    import nibabel

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8, 8, 8))
    hdr["vox_offset"] = 256 * 2**20
    (tmp_path / "ext.nii.gz").write_bytes(gzip.compress(hdr.binaryblock + b"\1\0\0\0" + b"\0" * 4096))
    monkeypatch.setattr(nibabel, "load", lambda *a, **k: pytest.fail("nibabel read the file"))
    with pytest.raises(DataError, match=r"ext.nii.gz: its header puts the voxels 256 MiB into the file"):
        read_nifti(tmp_path / "ext.nii.gz")
