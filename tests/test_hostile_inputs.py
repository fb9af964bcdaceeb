"""Hostile and broken inputs: every one gets a DataError naming the file, never a crash."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import cli_here
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
    with pytest.raises(DataError, match=r"two.tif: expected HxW or HxWxC with 1 or 3 channels, got shape \(8, 8, 2\)"):
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

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "s.png").write_bytes((lgg_root / SLICE).read_bytes())
    os.symlink(folder / "loop.png", folder / "loop.png")
    os.symlink(tmp_path / "missing.png", folder / "dangling.png")
    r = cli_here("predict", str(folder), "--out", str(tmp_path / "o"), "--weights", str(tiny_run / "last.safetensors"))
    assert "Traceback" not in r.stderr
    assert (tmp_path / "o" / "s_pred.png").is_file()


def test_output_names_cannot_escape(tiny_run, lgg_root, tmp_path):
    """Outputs are named from the input's stem only: a name like '../../x' cannot leave --out."""

    odd = tmp_path / "in" / "..%2F..%2Fx.png"
    odd.parent.mkdir()
    odd.write_bytes((lgg_root / SLICE).read_bytes())
    out = tmp_path / "deep" / "out"
    r = cli_here("predict", str(odd), "--out", str(out), "--weights", str(tiny_run / "last.safetensors"))
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


def tumor_slices(lgg_root, n: int = 3) -> list[tuple]:
    """The first `n` (image, mask) pairs of TCGA_CS_4941 whose mask holds tumor."""
    folder = lgg_root / SLICE.split("/")[0]
    pairs = []
    for mask in sorted(folder.glob("*_mask.png")):
        if np.asarray(Image.open(mask)).any():
            pairs.append((mask.with_name(mask.name.replace("_mask", "")), mask))
    return pairs[:n]


@pytest.mark.parametrize("style", ["palette", "red"])
def test_a_palette_or_coloured_mask_is_read_with_its_tumor(lgg_root, tmp_path, style):
    """A palette mask whose tumor index is green, or a red-on-black RGB mask, was once read from its
    red channel alone: no tumor anywhere, silently (Dice 0, `check-data` ok)."""
    from tumorseg.data.check import check_data
    from tumorseg.data.lgg import find_cases, load_case
    from tumorseg.io import read_mask

    case_dir = tmp_path / "P1"
    case_dir.mkdir()
    want = []
    for i, (image, mask) in enumerate(tumor_slices(lgg_root)):
        (case_dir / f"P1_{i + 1}.png").write_bytes(image.read_bytes())
        truth = np.asarray(Image.open(mask)) > 127
        want.append(truth)
        if style == "palette":
            im = Image.fromarray(truth.astype(np.uint8), "P")
            im.putpalette([0, 0, 0, 0, 255, 0])
        else:
            im = Image.fromarray(np.stack([truth * 255, truth * 0, truth * 0], -1).astype(np.uint8))
        im.save(case_dir / f"P1_{i + 1}_mask.png")
    assert read_mask(case_dir / "P1_1_mask.png").max() == 255
    got = load_case(find_cases(tmp_path)[0], None).full_masks
    np.testing.assert_array_equal(got, np.stack(want))
    assert not any("no tumor" in w for w in check_data(tmp_path)["warnings"])


def write_png16(path, arr: np.ndarray) -> None:
    """A 16-bit PNG (colour type 2 for HxWx3, 6 for HxWx4), written by hand: Pillow cannot write one."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, c = arr.shape
    rows = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [3, 4])
def test_a_16_bit_colour_png_is_refused_not_read_with_8_bits(tmp_path, channels):
    """Pillow reads a 48-bit PNG as 8-bit RGB from the high bytes: a dark 10-bit MRI became 4 grey levels."""
    arr = np.random.default_rng(0).integers(0, 1024, (32, 32, channels))
    path = tmp_path / "rgb16.png"
    write_png16(path, arr)
    with pytest.raises(DataError, match=r"rgb16.png: a 16-bit RGBA? PNG"):
        read_image(path)


def run_as_nobody(code: str) -> subprocess.CompletedProcess:
    """Run `code` in this Python as an unprivileged user: root reads files without permission."""
    if os.geteuid() != 0:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_unreadable_files_and_folders_say_permission_denied(lgg_root):
    """A file without read permission was called corrupt; an unlistable folder in a data root (a
    root-owned `lost+found`) was a PermissionError traceback, even outside the patients used."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="tumorseg-perm-"))
    try:
        root.chmod(0o755)
        data = root / "data"
        patient = data / "P1"
        patient.mkdir(parents=True)
        for i, (image, mask) in enumerate(tumor_slices(lgg_root, 2)):
            shutil.copy(image, patient / f"P1_{i + 1}.png")
            shutil.copy(mask, patient / f"P1_{i + 1}_mask.png")
        for p in (data, patient, *patient.iterdir()):
            p.chmod(0o755 if p.is_dir() else 0o644)
        (data / "lost+found").mkdir(mode=0o700)
        locked = patient / "P1_2.png"
        locked.chmod(0o000)
        r = run_as_nobody(
            "import sys\n"
            "from tumorseg.data.lgg import find_cases\n"
            "from tumorseg.errors import DataError\n"
            "from tumorseg.io import read_image\n"
            f"cases = find_cases({str(data)!r})\n"
            "print('cases', [c.id for c in cases])\n"
            "from tumorseg.data.check import check_data\n"
            f"print('check', check_data({str(data)!r})['warnings'])\n"
            "try:\n"
            f"    read_image({str(locked)!r})\n"
            "except DataError as exc:\n"
            "    print('error', exc)\n"
        )
        assert r.returncode == 0, r.stderr
        assert "cases ['P1']" in r.stdout
        assert "lost+found: cannot list folder (permission denied); it is skipped" in r.stdout
        assert "lost+found: skipped: cannot list folder: permission denied" in r.stderr
        assert f"error {locked}: cannot read image: permission denied" in r.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_an_animated_png_is_refused_as_a_tiff_of_two_pages_is(tmp_path):
    """Its first frame was segmented without a word, while a 2-page TIFF is refused."""
    frames = [Image.fromarray(np.full((32, 32), v, np.uint8)) for v in (40, 200)]
    frames[0].save(tmp_path / "cine.png", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match=r"cine.png: an animated PNG of 2 frames, not one slice"):
        read_image(tmp_path / "cine.png")
    frames[0].save(tmp_path / "still.png")
    assert read_image(tmp_path / "still.png").shape == (32, 32)


def test_an_output_whose_name_fits_is_written_and_one_that_does_not_is_named(tmp_path):
    """The temporary file beside an output added 18 characters to its name, so `predict` could not
    write X_pred.png for inputs of 229-250 characters and named the hidden temporary file."""
    from tumorseg.io import atomic_write_bytes, atomic_write_text

    fits = tmp_path / ("L" * 246 + "_pred.png")  # 255 bytes, the most a Linux file name holds
    atomic_write_bytes(fits, b"png")
    assert fits.read_bytes() == b"png" and [p.name for p in tmp_path.iterdir()] == [fits.name]
    wide = tmp_path / ("é" * 120 + "_pred.png")  # 249 bytes in UTF-8: its temporary name is cut by bytes
    atomic_write_text(wide, "x")
    assert wide.read_text() == "x"
    too_long = tmp_path / ("L" * 246 + "_overlay.png")
    with pytest.raises(OSError) as err:
        atomic_write_bytes(too_long, b"png")
    assert err.value.filename == str(too_long)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fits.name, wide.name])
