import numpy as np
import pytest

from tumorseg.viz import overlay


def _strip(width: int, title: str = "") -> np.ndarray:
    black = np.zeros((3, 120, width), np.uint8)  # no MRI and no tumor: only the labels are drawn
    empty = np.zeros((120, width), bool)
    return overlay(black, empty, empty, title=title)


def test_the_legend_of_a_narrow_overlay_is_drawn_whole():
    """On panels under about 170 px the legend ("green TP  red FP  blue FN") was cut at the edge."""
    ink = [int(_strip(w)[-120:, -w:].sum()) for w in (90, 400)]  # the overlay panel, last in the strip
    assert ink[1] > 0 and abs(ink[0] - ink[1]) <= 0.02 * ink[1], ink


def test_titles_in_other_scripts_are_drawn_as_letters_not_boxes():
    """Pillow's default font drew Cyrillic and Greek file names as rows of identical boxes."""
    titles = ["ПЁТР_01.tif", "ИВАН_01.tif", "ΩΜΕΓΑ_01.tif", "ΑΛΦΑΣ_01.tif"]
    bars = [_strip(256, t)[:-120] for t in titles]
    assert not np.array_equal(bars[0], bars[1]) and not np.array_equal(bars[2], bars[3])


def test_names_in_scripts_dejavu_lacks_are_told_apart():
    """Chinese or Japanese file names were drawn as rows of identical boxes (DejaVu Sans has no CJK
    glyphs): an installed font that has them draws them, else each is written as its code point."""
    from pathlib import Path

    import matplotlib

    from tumorseg.viz import _drawable, _glyphs

    bars = [_strip(256, t)[:-120] for t in ("患者_01.tif", "病人_01.tif")]
    assert not np.array_equal(bars[0], bars[1])
    assert _drawable("患者_01.tif", ())[1] == "U+60A3U+8005_01.tif"  # no font has them
    stix = str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "STIXGeneral.ttf")
    dejavu = _glyphs(str(Path(stix).with_name("DejaVuSans.ttf")))
    rare = chr(min(_glyphs(stix) - dejavu))  # a character STIX draws and DejaVu Sans does not
    font, text = _drawable(f"a{rare}", (stix,))
    assert text == f"a{rare}" and font.path == stix


def test_a_long_file_name_wraps_within_the_title_and_keeps_its_slice_number():
    """Titles broke only at double spaces, so a 200-letter file name ran off the strip's edge and
    its slice number and Dice were lost."""
    from tumorseg.viz import _lines

    title = "L" * 200 + "_12.png  Dice 0.812"
    font, lines = _lines(title, 400)
    assert len(lines) > 2 and all(font.getlength(line) <= 400 for line in lines)
    assert "".join(lines).replace("  ", "") == title.replace("  ", "") and lines[-1].endswith("Dice 0.812")
    tall, short = _strip(100, title), _strip(100, "P_12.png")
    assert tall.shape[0] >= short.shape[0] + 3 * 13  # the title bar holds every line (13 px each)


def test_control_characters_and_damaged_fonts_do_not_break_a_title(tmp_path, monkeypatch):
    """A newline in a file name reached Pillow (a title of two lines in a bar sized for one, or
    raqm_layout() failed); a byte of a name that is not UTF-8 was drawn as U+DCFC; a font file
    whose character table reads but whose glyphs are cut off stopped the overlay."""
    from pathlib import Path

    import matplotlib

    from tumorseg import viz
    from tumorseg.viz import _drawable, _glyphs

    assert _drawable("P\n1\t.png")[1] == "PU+000A1U+0009.png"
    assert _drawable("M\udcfcller.png")[1] == "M\\xfcller.png"
    assert _strip(256, "P\n1.png").shape == _strip(256, "P 1.png").shape
    stix = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "STIXGeneral.ttf"
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(stix.read_bytes())
    rare = chr(min(_glyphs(str(stix)) - _glyphs(str(stix.with_name("DejaVuSans.ttf")))))
    truetype = viz.ImageFont.truetype

    def damaged(path, *args, **kwargs):  # its table reads, its glyphs do not (raqm_layout() failed)
        if str(path) == str(broken):
            raise RuntimeError("raqm_layout() failed")
        return truetype(path, *args, **kwargs)

    monkeypatch.setattr(viz.ImageFont, "truetype", damaged)
    font, text = _drawable(f"a{rare}", (str(broken), str(stix)))
    assert text == f"a{rare}" and font.path == str(stix)


def test_the_legend_names_its_colours_and_they_stay_apart_for_colour_blind_readers():
    """Found (green) and extra (red) blended into one ochre under deuteranopia, and the legend was
    jargon in words only ("green TP  red FP  blue FN"). Now each entry has a square in its colour."""
    from tumorseg.viz import FN, FP, LEGEND, TP

    assert LEGEND.split() == ["\u25a0", "found", "\u25a0", "extra", "\u25a0", "missed"]
    legend = _strip(256)[-120:, -256:][:14].reshape(-1, 3)  # the overlay panel's label bar
    for color in (TP, FP, FN):
        assert (legend == color).all(axis=1).sum() >= 20, color  # its square, drawn in that colour
    deut = np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.01182, 0.04294, 0.968881]])
    blended = [(0.55 * 100 + 0.45 * np.array(c)) / 255 for c in (TP, FP, FN)]  # as drawn on mid-grey MRI
    seen = [deut @ c**2.2 for c in blended]  # Machado et al.'s deuteranopia, in linear RGB
    assert min(np.linalg.norm(a - b) for i, a in enumerate(seen) for b in seen[i + 1 :]) > 0.2  # green/red: 0.11


def test_a_slice_without_tumor_is_not_scored_dice_1():
    from tumorseg.viz import slice_score

    empty, spot = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    spot[2:4, 2:4] = True
    assert slice_score(empty, empty) == "no tumor, none marked"  # once "Dice 1.000"
    assert slice_score(spot, empty) == "no tumor in truth; 4 px marked"  # once "Dice 0.000"
    assert slice_score(spot, spot) == "Dice 1.000"


def test_an_image_too_wide_for_webp_is_embedded_as_png():
    """A strip of 4 panels of slices 4093 px wide or more passes WebP's 16383 px: the report once
    ended in Pillow's "encoding error 5" after the whole evaluation."""
    from tumorseg.viz import compact_image, data_url

    assert compact_image(np.zeros((8, 16384, 3), np.uint8)).startswith(b"\x89PNG")
    small = compact_image(np.zeros((8, 64, 3), np.uint8))
    assert data_url(small).startswith("data:image/webp;base64,")


def _brain(side: int = 128, top: int = 40) -> np.ndarray:
    """A synthetic FLAIR slice: a disc of tissue from 1 to `top` (a dim export), 0 around it."""
    yy, xx = np.mgrid[:side, :side]
    disc = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (0.4 * side) ** 2
    return np.where(disc, 1 + (xx * (top - 1)) // (side - 1), 0).astype(np.uint8)


def _panels(strip: np.ndarray, n: int, side: int) -> list[np.ndarray]:
    """The `n` panels of an `overlay` strip without a title (4 px white between them)."""
    return [strip[-side:, i * (side + 4) : i * (side + 4) + side] for i in range(n)]


def test_a_dim_slice_is_windowed_for_display_and_the_model_input_is_left_alone():
    """A slice whose intensities filled 1-40 of 0-255 (a dim PNG export) was drawn nearly black,
    so the mask could not be judged against the anatomy: the MRI is now stretched between the
    0.5th and 99.5th percentiles of its non-zero pixels, for display only."""
    dim = _brain()
    chw = np.stack([dim, dim, dim])
    before = chw.copy()
    empty = np.zeros(dim.shape, bool)
    mri, _, ov = _panels(overlay(chw, empty), 3, 128)
    below = slice(20, None)  # under the panel's label
    assert int(np.ptp(mri[below])) >= 240 and int(np.ptp(ov[below])) >= 240  # once 36
    assert np.array_equal(chw, before)  # what the model reads is not touched

    from tumorseg.viz import display_slice, display_window

    assert display_window(dim) == pytest.approx(tuple(np.percentile(dim[dim > 0], [0.5, 99.5])))
    assert np.array_equal(display_slice(chw), display_slice(chw, window=None))  # the default: as it was
    assert np.array_equal(display_slice(chw)[..., 0], dim)
    raw = _panels(overlay(chw, empty, window=False), 3, 128)[0]
    assert int(np.ptp(raw[below])) <= 40
    stretched = display_slice(chw, window=True)[..., 0]
    assert stretched[dim == 0].max() == 0 and np.all(np.diff(stretched[64, 20:108].astype(int)) >= 0)


def test_the_mri_panel_says_it_is_windowed_only_when_it_is():
    dim = _brain()
    dim = _brain(256)  # one line of label, over the black around the head
    empty = np.zeros(dim.shape, bool)
    ink = lambda strip: int((strip[-256:, :256][:14] > 128).sum())  # noqa: E731  the MRI panel's label
    windowed, raw = (ink(overlay(dim[None], empty, window=w)) for w in (True, False))
    assert windowed > raw + 60  # ", windowed", in white


def test_a_blank_or_constant_image_is_drawn_as_it_is():
    """A blank slice, or one of a single value, has no window to stretch: no division by zero, and
    it stays as it is (a constant slice is not turned black or white)."""
    from tumorseg.viz import display_slice, display_window, mask_overlay

    empty = np.zeros((96, 96), bool)
    for value in (0, 1, 77, 255):
        flat = np.full((3, 96, 96), value, np.uint8)
        assert display_window(flat[1]) is None
        with np.errstate(all="raise"):
            mri = _panels(overlay(flat, empty), 3, 96)[0]
            assert np.array_equal(display_slice(flat, window=True), display_slice(flat))
            assert (mask_overlay(flat, empty, window=True) == value).all()
            assert (display_slice(flat, window=(5.0, 5.0)) == value).all()  # an empty window
        assert (mri[30:] == value).all(), value


def test_a_full_range_image_looks_the_same_windowed():
    from tumorseg.viz import display_slice

    full = np.random.default_rng(0).integers(0, 256, (3, 128, 128), dtype=np.uint8)
    diff = display_slice(full, window=True).astype(int) - display_slice(full).astype(int)
    assert np.abs(diff).max() <= 3


def test_flair_is_windowed_by_its_own_values_not_the_other_sequences():
    """Only FLAIR is drawn; a bright T1 or T1c must not set its window (as a window pooled over
    the three sequences would: the dim FLAIR would stay dim)."""
    from tumorseg.viz import display_slice

    flair = _brain(top=30)
    bright = np.where(flair > 0, 250, 0).astype(np.uint8)
    shown = display_slice(np.stack([bright, flair, bright]), window=True)[..., 0]
    assert int(np.ptp(shown)) >= 240


def test_one_window_for_a_volume_keeps_its_slices_comparable():
    """Each slice windowed on its own would draw a faint slice as bright as the brightest: a
    volume's window, from all its slices' FLAIR, stretches them alike."""
    from tumorseg.viz import display_slice, display_window, flair_of

    volume = np.stack([np.stack([s, s, s]) for s in (_brain(top=40), _brain(top=20))])  # (Z, C, H, W)
    window = display_window(flair_of(volume))
    assert window[1] == display_window(volume[0, 1])[1]  # the brightest slice's top
    top = [int(display_slice(s, window=window).max()) for s in volume]
    assert top[0] == 255 and 115 <= top[1] <= 135  # the faint slice stays about half as bright
    assert int(display_slice(volume[1], window=True).max()) == 255  # on its own it would not


def test_volume_slices_get_orientation_letters_on_the_mri_panels_only():
    """A volume's overlays are in the radiological view (the patient's right on the image's left):
    R and L at the left and right edges and A and P at the top and bottom say so; a 2D slice, whose
    orientation viz cannot know, gets none unless asked."""
    from tumorseg.viz import AXIAL_RADIOLOGICAL, mask_overlay

    grey = np.full((3, 160, 160), 100, np.uint8)
    pred = np.zeros((160, 160), bool)
    pred[100:120, 100:120] = True
    plain = overlay(grey, pred, window=False)
    lettered = overlay(grey, pred, window=False, letters=AXIAL_RADIOLOGICAL)
    assert np.array_equal(plain, overlay(grey, pred, window=False, letters=None))  # the default: none
    mri, mask, ov = _panels(lettered, 3, 160)
    mri0, mask0, ov0 = _panels(plain, 3, 160)
    assert np.array_equal(mask, mask0)  # not on the mask, where white is tumor
    edges = {
        "R": (slice(70, 90), slice(0, 16)),
        "L": (slice(70, 90), slice(144, 160)),
        "A": (slice(0, 40), slice(70, 90)),
        "P": (slice(144, 160), slice(70, 90)),
    }
    for panel, before in ((mri, mri0), (ov, ov0)):
        changed = (panel != before).any(-1)
        for letter, (rows, cols) in edges.items():
            ink = (panel[rows, cols] > 215).all(-1).sum()  # white glyph
            rim = (panel[rows, cols] < 40).all(-1).sum()  # its black rim
            assert ink >= 8 and rim >= 8, letter
        assert not changed[40:120, 20:140].any()  # the slice itself is left alone
        left, right = panel[edges["R"]], panel[edges["L"]]
        assert not np.array_equal(left, right[:, ::-1])  # two letters, not one mirrored
    single = mask_overlay(grey, pred, letters=AXIAL_RADIOLOGICAL)  # the API's one-panel overlay
    assert (single[edges["R"]] == 255).all(-1).sum() >= 8 and not (mask_overlay(grey, pred)[edges["R"]] == 255).any()


def test_orientation_letters_stay_clear_of_the_label_and_off_small_panels():
    """A letter at the top middle of a narrow panel would sit under (or run on from) its label: it
    goes below the label, or where that would put it over the slice, is left out."""
    from tumorseg.viz import AXIAL_RADIOLOGICAL, _label_box, orientation_letters

    def panels(side: int, letters: tuple | None) -> list[np.ndarray]:
        grey, none = np.full((3, side, side), 100, np.uint8), np.zeros((side, side), bool)
        return _panels(overlay(grey, none, window=False, letters=letters), 3, side)

    mri, _, ov = (p != q for p, q in zip(panels(160, AXIAL_RADIOLOGICAL), panels(160, None)))
    a_rows = np.flatnonzero(mri.any(-1)[:80, 60:100].any(1))  # where "A" is drawn
    assert _label_box("MRI (FLAIR)", 160)[1] < a_rows[0] and a_rows[-1] < 160 // 4  # under the label, at the top
    assert not ov.any(-1)[:14, 60:100].any()  # not beside the legend: below it
    mri, _, ov = (p != q for p, q in zip(panels(90, AXIAL_RADIOLOGICAL), panels(90, None)))
    for shown in (mri, ov):  # a label of 1 or 2 lines fills the top of a 90 px panel: no "A" over the slice
        assert not shown.any(-1)[:60, 30:60].any() and shown.any(-1)[35:55, :16].any()  # "R" still there
    tiny = np.full((40, 40, 3), 100, np.uint8)
    assert np.array_equal(orientation_letters(tiny, AXIAL_RADIOLOGICAL), tiny)


def test_a_dim_export_of_a_real_slice_is_drawn_as_the_slice_is(lgg_root):
    """A real LGG slice exported dim (a fifth of its values) is drawn much as the slice itself:
    both windowed, the dim one no longer nearly black."""
    from PIL import Image

    from tumorseg.viz import display_slice

    path = next(p for p in sorted((lgg_root / "TCGA_CS_4941_19960909").glob("*_13.*")) if "_mask" not in p.name)
    chw = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)  # pre-contrast, FLAIR, post-contrast
    dim = np.round(chw.astype(np.float32) / 5).astype(np.uint8)
    assert int(np.ptp(display_slice(dim)[..., 0])) < 60  # as it was drawn
    windowed = display_slice(dim, window=True).astype(int)
    assert int(np.ptp(windowed)) == 255
    assert np.abs(windowed - display_slice(chw, window=True).astype(int)).mean() < 6
