import numpy as np

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
