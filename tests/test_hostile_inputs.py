"""Hostile and broken inputs: every one gets a DataError naming the file, never a crash."""

import io
import os

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tumorseg.data.lgg import select_channels
from tumorseg.errors import DataError
from tumorseg.io import read_image

SLICE = "TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_12.png"


def real_files(lgg_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("seeds")
    png = (lgg_root / SLICE).read_bytes()
    img = np.asarray(Image.open(io.BytesIO(png)))
    buf = io.BytesIO()
    tifffile.imwrite(buf, img)
    return d, {".png": png, ".tif": buf.getvalue()}


@pytest.fixture(scope="module")
def seeds(lgg_root, tmp_path_factory):
    return real_files(lgg_root, tmp_path_factory)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".png", ".tif"]),
    cut=st.integers(0, 4000),
    flips=st.lists(st.integers(0, 10**6), max_size=8),
)
def test_fuzzed_images_raise_data_error_or_decode(seeds, suffix, cut, flips):
    folder, data = seeds
    raw = bytearray(data[suffix])
    for f in flips:
        raw[f % len(raw)] ^= 0xFF
    raw = raw[: max(0, len(raw) - cut)]
    path = folder / f"fuzz{suffix}"
    path.write_bytes(bytes(raw))
    try:
        arr = read_image(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    assert arr.dtype == np.uint8 and arr.ndim in (2, 3) and arr.size > 0


@pytest.mark.parametrize(
    ("make", "check"),
    [
        (lambda p: Image.fromarray(np.array([[0, 40000]], np.uint16)).save(p.with_suffix(".png")), (0, 255)),
        (lambda p: tifffile.imwrite(p.with_suffix(".tif"), np.array([[0.0, 0.5]], np.float32)), (0, 255)),
        (lambda p: tifffile.imwrite(p.with_suffix(".tif"), np.array([[0, 4095]], np.uint16)), (0, 255)),
        (lambda p: tifffile.imwrite(p.with_suffix(".tif"), np.array([[False, True]])), (0, 255)),
    ],
    ids=["uint16-png", "float-tiff", "16bit-tiff", "bool-tiff"],
)
def test_other_dtypes_are_scaled_to_uint8(tmp_path, make, check):
    make(tmp_path / "x")
    path = next(tmp_path.iterdir())
    arr = read_image(path)
    assert arr.dtype == np.uint8 and (int(arr.min()), int(arr.max())) == check


def test_nan_tiff(tmp_path):
    p = tmp_path / "nan.tif"
    tifffile.imwrite(p, np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(DataError, match="nan.tif: image holds NaN or Inf"):
        read_image(p)


def test_zero_size_image(tmp_path):
    p = tmp_path / "empty.tif"
    tifffile.imwrite(p, np.zeros((0, 5), np.uint8))
    with pytest.raises(DataError, match="empty.tif"):
        read_image(p)


def test_channels_one_for_three_and_four_for_three(tmp_path):
    gray = np.zeros((8, 8), np.uint8)
    assert select_channels(gray, "all").shape == (3, 8, 8)  # FLAIR repeated, as the dataset does
    assert select_channels(np.zeros((8, 8, 3), np.uint8), "flair").shape == (1, 8, 8)
    with pytest.raises(DataError, match="expected 1 or 3 channels, got 2"):
        select_channels(np.zeros((8, 8, 2), np.uint8), "all", tmp_path / "two.tif")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 7, 255
    tifffile.imwrite(tmp_path / "rgba.tif", rgba)
    read = read_image(tmp_path / "rgba.tif")  # a 4th channel is taken as alpha and dropped
    assert read.shape == (8, 8, 3) and (read[..., 1] == 7).all()
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(DataError, match="five.tif: holds 8x8x5 values.*not one slice"):
        select_channels(read_image(tmp_path / "five.tif"), "all", tmp_path / "five.tif")


def test_truncated_tiff_says_so_and_logs_nothing_unnamed(tmp_path, caplog):
    tifffile.imwrite(tmp_path / "ok.tif", np.full((64, 64, 3), 9, np.uint8))
    data = (tmp_path / "ok.tif").read_bytes()
    for name, cut in (("half.tif", data[: len(data) // 2]), ("head.tif", data[:100]), ("none.tif", data[:8])):
        (tmp_path / name).write_bytes(cut)
        with pytest.raises(DataError, match=rf"{name}: (cannot read image: not a valid TIFF file, or truncated|not a "
                                            "complete TIFF file)"):  # fmt: skip
            read_image(tmp_path / name)
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]


def test_symlink_loop_and_dangling_link_in_input_folder(tiny_run, lgg_root, tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "s.png").write_bytes((lgg_root / SLICE).read_bytes())
    os.symlink(folder / "loop.png", folder / "loop.png")
    os.symlink(tmp_path / "missing.png", folder / "dangling.png")
    r = subprocess.run([sys.executable, "-m", "tumorseg", "predict", str(folder), "--out", str(tmp_path / "o"),
                        "--weights", str(tiny_run / "last.safetensors")], capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert "Traceback" not in r.stderr
    assert (tmp_path / "o" / "s_pred.png").is_file()


def test_output_names_cannot_escape(tiny_run, lgg_root, tmp_path):
    """Outputs are named from the input's stem only: a name like '../../x' cannot leave --out."""
    import subprocess
    import sys

    odd = tmp_path / "in" / "..%2F..%2Fx.png"
    odd.parent.mkdir()
    odd.write_bytes((lgg_root / SLICE).read_bytes())
    out = tmp_path / "deep" / "out"
    r = subprocess.run([sys.executable, "-m", "tumorseg", "predict", str(odd), "--out", str(out),
                        "--weights", str(tiny_run / "last.safetensors")], capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    written = [p for p in tmp_path.rglob("*_pred.png")]
    assert written and all(p.parent == out for p in written)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 3000), flips=st.lists(st.integers(0, 10**5), max_size=6), gz=st.booleans())
def test_fuzzed_nifti_raise_data_error_or_read(tmp_path_factory, cut, flips, gz):
    nib = pytest.importorskip("nibabel")
    from tumorseg.volume import read_nifti

    folder = tmp_path_factory.mktemp("nii")
    arr = (np.arange(16 * 16 * 6, dtype=np.float32).reshape(16, 16, 6) % 97) * 3.0
    seed = folder / ("seed.nii.gz" if gz else "seed.nii")
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(seed))
    raw = bytearray(seed.read_bytes())
    for f in flips:
        raw[f % len(raw)] ^= 0xFF
    raw = raw[: max(0, len(raw) - cut)]
    path = folder / ("fuzz.nii.gz" if gz else "fuzz.nii")
    path.write_bytes(bytes(raw))
    try:
        vol = read_nifti(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    assert vol.array.ndim in (3, 4) and vol.affine.shape == (4, 4)


def test_one_hot_pixel_does_not_flatten_a_16_bit_slice(tmp_path):
    """Min-max scaling once put a 16-bit brain with one hot pixel into a few grey levels."""
    rng = np.random.default_rng(0)
    brain = rng.integers(200, 1200, (64, 64)).astype(np.uint16)
    brain[3, 3] = 65535
    tifffile.imwrite(tmp_path / "hot.tif", brain)
    arr = read_image(tmp_path / "hot.tif")
    assert len(np.unique(arr)) > 200 and arr[3, 3] == 255
    mask = np.zeros((64, 64), np.uint16)
    mask[10, 10] = 65535  # one tumor pixel, under 0.1 % of the slice: still read as tumor
    tifffile.imwrite(tmp_path / "m.tif", mask)
    assert read_image(tmp_path / "m.tif")[10, 10] == 255 and read_image(tmp_path / "m.tif").sum() == 255


def test_a_jpeg_is_read_the_way_its_exif_orientation_shows_it(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (30, 20), (90, 90, 90))
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90": viewers show it 20 wide and 30 high
    img.save(tmp_path / "turned.jpg", exif=exif)
    assert read_image(tmp_path / "turned.jpg").shape == (30, 20, 3)
    img.save(tmp_path / "plain.jpg")
    assert read_image(tmp_path / "plain.jpg").shape == (20, 30, 3)
