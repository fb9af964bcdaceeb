"""TIFF shapes read_image accepts and refuses, checked from the header before decoding."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tumorseg.errors import DataError
from tumorseg.io import image_pixels, read_image


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pixel decoding fails loudly (read_image turns it into 'cannot read image')."""

    def boom(*args, **kwargs):
        raise RuntimeError("pixels decoded")

    for cls in (tifffile.TiffFile, tifffile.TiffPageSeries, tifffile.TiffPage, tifffile.TiffFrame):
        monkeypatch.setattr(cls, "asarray", boom)


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_2000_samples_per_pixel_refused_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planar):
    shape = (256, 256, 2000) if planar == "contig" else (2000, 256, 256)
    bomb = tmp_path / "bomb.tif"
    tifffile.imwrite(bomb, np.zeros(shape, np.uint8), photometric="minisblack", planarconfig=planar,
                     compression="zlib")  # fmt: skip
    assert bomb.stat().st_size < 2_000_000  # 131 M values once decoded
    ok = tmp_path / "ok.tif"
    tifffile.imwrite(ok, np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    _no_decoding(monkeypatch)
    with pytest.raises(DataError, match="pixels decoded"):  # the patch does stop decoding
        read_image(ok)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"bomb\.tif: 2000 samples per pixel .*not one slice: at most 4 are read"):
        read_image(bomb)
    assert time.perf_counter() - t0 < 1


def test_5_samples_refused_2_to_4_still_read(tmp_path: Path):
    for n in (2, 3, 4, 5):
        arr = np.arange(8 * 8 * n, dtype=np.uint8).reshape(8, 8, n)
        tifffile.imwrite(tmp_path / f"s{n}.tif", arr, photometric="minisblack", planarconfig="contig")
    with pytest.raises(DataError, match=r"s2\.tif: 2 samples per pixel .*the second not marked as alpha"):
        read_image(tmp_path / "s2.tif")  # two sequences, say: not read as a grey (grey + alpha is, below)
    assert read_image(tmp_path / "s3.tif").shape == (8, 8, 3)
    assert read_image(tmp_path / "s4.tif").shape == (8, 8, 3)  # RGBA: alpha dropped
    with pytest.raises(DataError, match=r"s5\.tif: 5 samples per pixel \(TIFF axes YXS, shape 8x8x5\)"):
        read_image(tmp_path / "s5.tif")


def test_grey_with_alpha_tiff_reads_as_the_same_png(tmp_path: Path):
    """A grey+alpha TIFF was refused ("expected 1 or 3 channels, got 2") while the same PNG was read."""
    from PIL import Image

    rng = np.random.default_rng(0)
    la = np.stack([rng.integers(0, 256, (16, 12), dtype=np.uint8), np.full((16, 12), 200, np.uint8)], axis=-1)
    tifffile.imwrite(tmp_path / "la.tif", la, photometric="minisblack", extrasamples=["unassalpha"])
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    tif, png = read_image(tmp_path / "la.tif"), read_image(tmp_path / "la.png")
    assert np.array_equal(tif, la[..., 0]) and np.array_equal(png[..., 0], la[..., 0])
    planes = np.stack([la[..., 0], la[..., 0] // 2])  # two planes with no alpha tag: refused, not read as plane 0
    tifffile.imwrite(tmp_path / "two.tif", planes, photometric="minisblack", planarconfig="separate")
    with pytest.raises(DataError, match=r"two\.tif: 2 samples per pixel \(TIFF axes SYX.*not marked as alpha"):
        read_image(tmp_path / "two.tif")


@pytest.mark.parametrize("pages", [2, 4, 5])
def test_pages_other_than_1_or_3_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pages: int):
    path = tmp_path / f"p{pages}.tif"
    tifffile.imwrite(path, np.full((pages, 8, 6), 9, np.uint8), photometric="minisblack")
    assert len(tifffile.TiffFile(path).pages) == pages
    _no_decoding(monkeypatch)
    with pytest.raises(DataError) as err:
        read_image(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: holds {pages}x8x6 values"), msg
    assert f"{pages} pages of 6x8 pixels, not one slice" in msg
    assert "expected 1 page (grayscale or RGB) or exactly 3 pages (one per MRI sequence)" in msg


def test_3_pages_are_channels_in_page_order(tmp_path: Path):
    planes = np.stack([np.full((5, 7), v, np.uint8) for v in (10, 20, 30)])
    planes[1, 2, 3] = 99
    path = tmp_path / "three.tif"
    tifffile.imwrite(path, planes, photometric="minisblack")
    assert len(tifffile.TiffFile(path).pages) == 3
    arr = read_image(path)
    assert arr.shape == (5, 7, 3) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, planes.transpose(1, 2, 0))
    assert image_pixels(path) == 5 * 7


def test_one_page_rgb_planar_rgb_and_grayscale_still_read(tmp_path: Path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", rgb.transpose(2, 0, 1).copy(), photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "gray.tif", rgb[..., 0])
    for name in ("rgb.tif", "planar.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name), rgb)
        assert image_pixels(tmp_path / name) == 6 * 9
    np.testing.assert_array_equal(read_image(tmp_path / "gray.tif"), rgb[..., 0])
    assert image_pixels(tmp_path / "gray.tif") == 6 * 9


def test_image_pixels_counts_pixels_whatever_the_channels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    tifffile.imwrite(tmp_path / "p3.tif", np.zeros((3, 40, 50), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "s4.tif", np.zeros((40, 50, 4), np.uint8), photometric="rgb")
    tifffile.imwrite(tmp_path / "many.tif", np.zeros((7, 200, 300), np.uint8))
    (tmp_path / "bad.tif").write_bytes(b"II*\x00 not really")
    _no_decoding(monkeypatch)
    assert image_pixels(tmp_path / "p3.tif") == 40 * 50  # each slice is held as 3 channels, as a PNG's
    assert image_pixels(tmp_path / "s4.tif") == 40 * 50
    assert image_pixels(tmp_path / "many.tif") == 200 * 300
    assert image_pixels(tmp_path / "bad.tif") == 0


def test_real_lgg_tif_slices_and_masks_read_as_before(tif_root: Path):
    files = sorted(tif_root.rglob("*.tif"))[:6]
    assert files
    for path in files:
        arr = read_image(path)
        expected = (256, 256) if path.stem.endswith("_mask") else (256, 256, 3)
        assert arr.shape == expected and arr.dtype == np.uint8, path
        assert image_pixels(path) == 256 * 256


def test_pages_written_as_separate_images_are_read_or_refused(tmp_path: Path):
    """Pages written one call at a time form separate TIFF series: 4 of them were once read as the
    first page alone, and 3 (one per sequence) as a grayscale slice."""
    planes = np.arange(3 * 6 * 5, dtype=np.uint8).reshape(3, 6, 5)

    def write(name, arrays):
        with tifffile.TiffWriter(tmp_path / name) as tw:
            for a in arrays:
                tw.write(a)
        return tmp_path / name

    np.testing.assert_array_equal(read_image(write("three.tif", planes)), planes.transpose(1, 2, 0))
    with pytest.raises(DataError, match=r"four\.tif: holds 4 separate images \(6x5, 6x5, 6x5, 6x5\)"):
        read_image(write("four.tif", [*planes, planes[0]]))
    with pytest.raises(DataError, match=r"mixed\.tif: holds 3 separate images \(6x5, 6x5, 3x5\)"):
        read_image(write("mixed.tif", [planes[0], planes[1], planes[2][:3]]))


@pytest.mark.parametrize("compression", ["tiff_lzw", "jpeg"])
def test_lzw_and_jpeg_tiffs_are_read_without_imagecodecs(tmp_path: Path, compression: str):
    """tifffile needs imagecodecs (not installed) for these common compressions; they were refused
    as 'not a valid TIFF file, or truncated'. Pillow decodes them now: RGB, 3 pages and 16-bit."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), 4, 0), 4, 1)  # smooth for JPEG
    Image.fromarray(rgb).save(tmp_path / "rgb.tif", compression=compression)
    pages = [Image.fromarray(rgb[..., c]) for c in range(3)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:], compression=compression)
    tolerance = 0 if compression == "tiff_lzw" else 40
    for name in ("rgb.tif", "pages.tif"):
        got = read_image(tmp_path / name)
        assert got.shape == rgb.shape and np.abs(got.astype(int) - rgb).max() <= tolerance, name
    if compression == "tiff_lzw":
        deep = rgb[..., 1].astype(np.uint16) * 200 + 7
        Image.fromarray(deep).save(tmp_path / "deep.tif", compression=compression)
        assert np.array_equal(read_image(tmp_path / "deep.tif"), read_image(_tiff(tmp_path / "plain.tif", deep)))


def _tiff(path: Path, arr: np.ndarray) -> Path:
    tifffile.imwrite(path, arr)
    return path


def _literal_lzw(data: bytes) -> bytes:
    """TIFF LZW of `data` as literal codes only, with a clear code every 200 so codes stay 9 bits."""
    codes = [256]
    for i, b in enumerate(data):
        codes += [b, 256] if i % 200 == 199 else [b]
    bits = "".join(f"{c:09b}" for c in [*codes, 257])
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def _lzw_tiff(path: Path, arr: np.ndarray, planar: str, compression: int = 5) -> Path:
    """An LZW TIFF written without imagecodecs: strips encoded here, the Compression tag set to 5
    (or to `compression`, to make a file of a compression neither reader decodes)."""
    import struct

    bands = list(arr.transpose(2, 0, 1)) if planar == "separate" else [arr]
    data = arr.transpose(2, 0, 1) if planar == "separate" else arr
    with tifffile.TiffWriter(path) as t:
        t.write(iter([_literal_lzw(np.ascontiguousarray(b).tobytes()) for b in bands]), shape=data.shape,
                dtype=arr.dtype, compression="zlib", planarconfig=planar, photometric="rgb",
                rowsperstrip=arr.shape[0])  # fmt: skip
    with tifffile.TiffFile(path) as t:
        offset = t.pages[0].tags["Compression"].offset
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, offset + 8, compression)  # the tag's value: 5 is LZW
    path.write_bytes(bytes(raw))
    return path


def test_band_by_band_lzw_rgb_is_read_in_place_and_16_bit_colour_refused(tmp_path: Path):
    """Pillow decodes an RGB TIFF stored band by band as HxWx3, which was once reshaped (not moved)
    to tifffile's 3xHxW: scrambled pixels, silently. 16-bit colour, which Pillow reads as 8-bit, is
    refused with what to install."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    for planar in ("separate", "contig"):
        got = read_image(_lzw_tiff(tmp_path / f"{planar}.tif", rgb, planar))
        assert np.array_equal(got, rgb), planar
    deep = (rgb.astype(np.uint16) * 257) ^ 0x55
    with pytest.raises(DataError, match=r"deep.tif: .*needs the imagecodecs package .*uint16.*pip install imagecodecs"):
        read_image(_lzw_tiff(tmp_path / "deep.tif", deep, "contig"))
    with pytest.raises(DataError, match=r"lerc.tif: cannot read image: .*LERC.* requires .*: pip install imagecodecs"):
        read_image(_lzw_tiff(tmp_path / "lerc.tif", rgb, "contig", compression=34887))  # LERC


@pytest.mark.parametrize("orientation", [3, 6])
def test_a_compressed_tiff_with_an_orientation_tag_is_refused_without_imagecodecs(tmp_path: Path, orientation):
    """Pillow, which decodes LZW and JPEG TIFFs without imagecodecs, turns them by their Orientation
    tag where tifffile reads every other TIFF as stored: tag 3 came out upside down, tag 6 scrambled
    (its W x H pixels forced into H x W). Such a file is refused, saying how to read it as stored."""
    from PIL import Image

    pytest.importorskip("PIL.TiffImagePlugin")
    try:
        import imagecodecs  # noqa: F401

        pytest.skip("imagecodecs is installed: tifffile reads the file as stored")
    except ImportError:
        pass
    arr = np.zeros((40, 60), np.uint8)
    arr[:10, :10] = 255
    Image.fromarray(arr).save(tmp_path / "t.tif", compression="tiff_lzw", tiffinfo={274: orientation})
    with pytest.raises(DataError, match=rf"t.tif: a compressed TIFF with an Orientation tag \({orientation}\)"):
        read_image(tmp_path / "t.tif")
    Image.fromarray(arr).save(tmp_path / "plain.tif", compression="tiff_lzw", tiffinfo={274: 1})
    assert np.array_equal(read_image(tmp_path / "plain.tif"), arr)
