"""Pictures a person can read: overlays of MRI, prediction and truth; plots; the HTML report."""

from __future__ import annotations

import base64
import functools
import html
import io
import re
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io import atomic_write_bytes

# yellow, red and blue stay apart under every colour-vision deficiency (green and red did not)
TP, FP, FN = (255, 215, 0), (230, 40, 40), (50, 120, 255)
DROPPED = (255, 255, 255)  # the outline of what the largest-region step removed
SWATCH, HOLLOW = "\u25a0", "\u25a1"  # filled and hollow squares, drawn in their legend entry's colour
LEGEND = f"{SWATCH} found  {SWATCH} extra  {SWATCH} missed"
LEGEND_COLORS = {"found": TP, "extra": FP, "missed": FN, "dropped": DROPPED}
DROPPED_LEGEND = f"{HOLLOW} dropped (not the largest region)"
PRED = (255, 60, 60)


Window = bool | tuple[float, float] | None  # see `display_slice`
# (top, bottom, left, right) edge letters of an axial slice in the radiological view, as `volume_slices`
# cuts a volume: anterior up, the patient's right on the image's left
AXIAL_RADIOLOGICAL = ("A", "P", "R", "L")


def display_window(images: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float] | None:
    """The display window of one sequence (a uint8 slice, or all the slices of a volume for one
    window over the whole volume): the `low` and `high` percentiles of its non-zero (head) pixels,
    as a viewer's automatic window. None where there is nothing to stretch (blank, or one value).
    Counted slice by slice in a histogram: a large volume is never copied or sorted."""
    x = np.asarray(images)
    counts = np.zeros(256, np.int64)
    for part in x.reshape(-1, *x.shape[-2:]) if x.ndim > 2 else [x]:
        counts += np.bincount(np.asarray(part, np.uint8).ravel(), minlength=256)
    counts[0] = 0
    n = int(counts.sum())
    if n == 0:
        return None
    cum = np.cumsum(counts)

    def percentile(q: float) -> float:  # numpy's default (linear) percentile of the sorted head pixels
        h = (n - 1) * q / 100
        k = int(np.floor(h))
        a, b = (int(np.searchsorted(cum, j, side="right")) for j in (k, min(k + 1, n - 1)))
        return a + (h - k) * (b - a)

    lo, hi = percentile(low), percentile(high)
    return (lo, hi) if hi > lo else None


def _windowed(gray: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """uint8 `gray` stretched from lo..hi (hi > lo) to 0..255, clipped."""
    lut = np.clip((np.arange(256, dtype=np.float64) - lo) * (255 / (hi - lo)), 0, 255)
    return np.round(lut).astype(np.uint8)[gray]


def display_slice(image: np.ndarray, window: Window = False) -> np.ndarray:
    """CxHxW (C = 1 or 3, as the model reads slices) or HxW uint8 -> HxWx3 grayscale of FLAIR
    (channel 1 of 3). The layout is fixed, not guessed from the shape, so a slice 1 or 3 pixels
    wide is drawn too.

    `window`, for display only: True stretches the FLAIR between the 0.5th and 99.5th
    percentiles of its own non-zero pixels (`display_window`), so a dim scan is not drawn near
    black; a (lo, hi) pair, such as `display_window` of a whole volume's FLAIR, stretches every
    slice alike; False or None (the default) draws the values as they are, as does a window of
    a blank or one-valued image. Only FLAIR is drawn, so only FLAIR is windowed, by its own
    values: the three sequences have scales of their own, and a window pooled over them would
    let T1 or T1c set FLAIR's."""
    return _display(image, window)[0]


def _display(image: np.ndarray, window: Window) -> tuple[np.ndarray, bool]:
    """`display_slice`, and whether its window stretched anything (for a caption to say so)."""
    img = np.asarray(image)
    if img.ndim == 3:
        if img.shape[0] not in (1, 3):
            raise ValueError(f"expected a CxHxW slice with 1 or 3 channels, got shape {img.shape}")
        img = flair_of(img)
    img = img.astype(np.uint8)
    if window is True:
        window = display_window(img)
    if window is not None and window is not False and window[1] > window[0]:
        return np.repeat(_windowed(img, float(window[0]), float(window[1]))[..., None], 3, axis=-1), True
    return np.repeat(img[..., None], 3, axis=-1), False


def flair_of(images: np.ndarray) -> np.ndarray:
    """FLAIR of (..., C, H, W) slices as the model reads them: channel 1 of 3, or the one channel."""
    return images[..., 1, :, :] if images.shape[-3] == 3 else images[..., 0, :, :]


def _blend(base: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.45) -> np.ndarray:
    out = base.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.array(color, np.float32)
    return out.astype(np.uint8)


LINE = 13  # pixels per line of label text


Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _dejavu() -> Path:
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"


@functools.cache
def _font() -> Font:
    """DejaVu Sans, shipped with matplotlib, which draws accented, Greek and Cyrillic file names
    (Pillow's default font draws them as boxes); Pillow's default if it is not there."""
    try:
        return ImageFont.truetype(str(_dejavu()), 11)
    except OSError:
        return ImageFont.load_default()


@functools.cache
def _glyphs(path: str) -> frozenset[int]:
    """The code points the font at `path` draws (none when it cannot be read)."""
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, lazy=True, fontNumber=0) as font:
            return frozenset(font.getBestCmap() or ())
    except Exception:  # a font file fontTools cannot parse is simply not used
        return frozenset()


@functools.cache
def _installed_fonts() -> tuple[str, ...]:
    """The machine's own fonts (not matplotlib's, whose DejaVu and STIX add no script), those
    likeliest to draw many scripts (Noto CJK, Unifont) first."""
    import matplotlib.font_manager as fm

    broad = ("cjk", "unifont", "unicode", "han", "gothic", "mincho", "hei", "song", "ming", "droid")
    paths = {f.fname for f in fm.fontManager.ttflist if "mpl-data" not in f.fname}
    return tuple(sorted(paths, key=lambda p: (not any(w in Path(p).name.lower() for w in broad), p)))


def _visible(c: str) -> str:
    """A character that draws nothing or cannot be drawn (a newline, a byte of a file name that is
    not UTF-8) as text: \\xfc for such a byte, U+000A for the others."""
    if not unicodedata.category(c).startswith("C"):
        return c
    return f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"U+{ord(c):04X}"


@functools.lru_cache(maxsize=1024)
def _drawable(text: str, fonts: tuple[str, ...] | None = None) -> tuple[Font, str]:
    """A font that draws every character of `text`, and the text it draws: DejaVu Sans; else the
    first of `fonts` (default: the installed ones) that has them all and lays them out, such as
    Noto Sans CJK for a Chinese file name; else DejaVu Sans with each character it lacks written as
    its code point (U+60A3), never as a box that makes two names look alike. Control characters are
    always written out (`_visible`)."""
    text = "".join(map(_visible, text))
    wanted = {ord(c) for c in text}
    have = _glyphs(str(_dejavu()))
    if wanted <= have:
        return _font(), text
    for path in _installed_fonts() if fonts is None else fonts:
        if wanted <= _glyphs(path):
            try:  # a damaged file may list its characters and still fail to lay them out
                font = ImageFont.truetype(path, 11)
                font.getlength(text)
                return font, text
            except Exception:
                continue
    return _font(), "".join(c if ord(c) in have else f"U+{ord(c):04X}" for c in text)


def _lines(text: str, width: int) -> tuple[Font, list[str]]:
    """`text` broken into lines that fit `width` pixels, where they can, and the font to draw them
    in (`_drawable`): at its double spaces first; a part still too wide after a space, _ or -, and a
    word still too wide between letters."""
    font, text = _drawable(text)
    fits = lambda t: font.getlength(t) <= width  # noqa: E731
    lines: list[str] = []
    for part in text.split("  "):
        if lines and fits(f"{lines[-1]}  {part}"):
            lines[-1] = f"{lines[-1]}  {part}"
            continue
        line = ""
        for word in re.split(r"(?<=[ _\-])", part):
            if fits(line + word):
                line += word
                continue
            if line:
                lines.append(line)
            while len(word) > 1 and not fits(word):  # a long word: cut between letters
                n = 1
                while fits(word[: n + 1]):
                    n += 1
                lines.append(word[:n])
                word = word[n:]
            line = word
        lines.append(line)
    return font, lines


def _label_box(text: str, width: int) -> tuple[int, int]:
    """The right and bottom edges of the black box `_label` draws `text` in on a panel `width` wide."""
    font, lines = _lines(text, width - 6)
    return min(width, int(max(font.getlength(line) for line in lines)) + 6), LINE * len(lines) + 1


def _label(panel: np.ndarray, text: str, colors: dict[str, tuple[int, int, int]] | None = None) -> np.ndarray:
    """`text` in white on black at the panel's top left; an entry "■ word" or "□ word" (entries
    are set apart by two spaces) has its square drawn in colors[word]."""
    im = Image.fromarray(panel)
    d = ImageDraw.Draw(im)
    font, lines = _lines(text, im.width - 6)
    d.rectangle([0, 0, *_label_box(text, im.width)], fill=(0, 0, 0))
    for i, line in enumerate(lines):
        x, y = 3.0, 1 + LINE * i
        for j, part in enumerate(line.split("  ")):
            x += font.getlength("  ") if j else 0
            mark, word = part[:1], part[1:].strip().split(" ")[0]
            if mark in (SWATCH, HOLLOW) and word in (colors or {}):
                d.text((x, y), mark, fill=colors[word], font=font)
                x += font.getlength(mark)
                part = part[1:]
            d.text((x, y), part, fill=(255, 255, 255), font=font)
            x += font.getlength(part)
    return np.asarray(im)


def slice_score(pred: np.ndarray, truth: np.ndarray) -> str:
    """A slice's Dice as a title says it; a slice without tumor in the truth says so and how
    many pixels were marked (its Dice, 1 or 0 by the empty-mask rule, tells a reader little)."""
    from .metrics import confusion_counts, dice

    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not truth.any():
        return f"no tumor in truth; {int(pred.sum())} px marked" if pred.any() else "no tumor, none marked"
    return f"Dice {dice(confusion_counts(pred, truth)):.3f}"


def _outline(panel: np.ndarray, region: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """`panel` with the border pixels of `region` drawn in `color`."""
    from scipy import ndimage

    edge = region & ~ndimage.binary_erosion(region, border_value=0)
    out = panel.copy()
    out[edge] = color
    return out


MIN_LETTERED = 64  # pixels; on a smaller panel edge letters would hide much of the slice


@functools.cache
def _letter_font() -> Font:
    """DejaVu Sans Bold, for the orientation letters; `_font` where it is not there."""
    try:
        return ImageFont.truetype(str(_dejavu().with_name("DejaVuSans-Bold.ttf")), 12)
    except OSError:
        return _font()


def orientation_letters(
    panel: np.ndarray, letters: tuple[str, str, str, str] | None, clear: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """`panel` (HxWx3) with `letters` (top, bottom, left, right; such as `AXIAL_RADIOLOGICAL`)
    at the middle of its edges, white with a black rim so that they read on dark and on bright
    tissue. A letter that would meet, or run on from, the top-left box `clear` (its right and
    bottom edges: a label's) goes just below it while it stays near its edge (the top quarter
    for the top letter, above the lower third for a side letter); else it is left out rather
    than drawn over the slice (the others still tell the orientation). None, or a panel under
    MIN_LETTERED pixels a side: no letters."""
    h, w = panel.shape[:2]
    if not letters or min(h, w) < MIN_LETTERED:
        return panel
    im = Image.fromarray(np.ascontiguousarray(panel))
    d = ImageDraw.Draw(im)
    font = _letter_font()
    for letter, where in zip(letters, ("top", "bottom", "left", "right")):
        if not letter:
            continue
        x0, y0, x1, y1 = d.textbbox((0, 0), letter, font=font, stroke_width=1)
        lw, lh = x1 - x0, y1 - y0
        x = {"left": 2, "right": w - 2 - lw}.get(where, (w - lw) // 2)
        y = {"top": 2, "bottom": h - 2 - lh}.get(where, (h - lh) // 2)
        if x < clear[0] + LINE and y < clear[1]:  # under the label: not hidden by it, nor read as part of it
            y = clear[1] + 2
            if y + lh > (h // 4 if where == "top" else 2 * h // 3):
                continue
        d.text((x - x0, y - y0), letter, fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(im)


def mask_overlay(
    chw: np.ndarray,
    mask: np.ndarray,
    dropped: np.ndarray | None = None,
    window: Window = False,
    letters: tuple[str, str, str, str] | None = None,
) -> np.ndarray:
    """One HxWx3 panel, the image's own size: the MRI (`chw`, as `display_slice` reads it, with
    its `window`) with `mask` in red and `dropped`, what the largest-region step removed,
    outlined in white; `letters` (`orientation_letters`) at its edges, such as
    AXIAL_RADIOLOGICAL for a volume's slice."""
    panel = _blend(display_slice(chw, window), np.asarray(mask, bool), PRED)
    panel = panel if dropped is None else _outline(panel, np.asarray(dropped, bool), DROPPED)
    return orientation_letters(panel, letters)


def overlay(
    image: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray | None = None,
    title: str = "",
    dropped: np.ndarray | None = None,
    window: Window = True,
    letters: tuple[str, str, str, str] | None = None,
) -> np.ndarray:
    """A side-by-side strip, HxW panels: MRI | [truth |] prediction | overlay.

    Without truth, the overlay shows the prediction in red. With truth, it colors the tumor
    found (true positives) yellow, the extra (false positives) red and the missed (false
    negatives) blue, and the title gains the slice's Dice (for a slice without tumor in the
    truth, that it has none and how many pixels were marked). `dropped`, what the
    largest-region step removed from the prediction, is outlined in white, so that a reader
    can judge a close call.

    The MRI is drawn in a display window (`display_slice`): by default its own, a volume's
    slices best with one window for the volume (`display_window` of its FLAIR), so that
    they stay comparable; the MRI panel's label then says "windowed". `letters` (top,
    bottom, left, right), such as AXIAL_RADIOLOGICAL for a volume's slices, are drawn at the
    edges of the panels that show the MRI (not on the masks, where white is tumor).
    """
    mri, stretched = _display(image, window)
    pred = np.asarray(pred, bool)
    white = lambda m: np.repeat((np.asarray(m, bool) * 255).astype(np.uint8)[..., None], 3, -1)  # noqa: E731
    dropped = np.zeros_like(pred) if dropped is None else np.asarray(dropped, bool) & ~pred
    more = f"  {DROPPED_LEGEND}" if dropped.any() else ""

    def shown(panel: np.ndarray, label: str, colors: dict | None = None) -> np.ndarray:  # the MRI in it
        panel = orientation_letters(panel, letters, _label_box(label, panel.shape[1]))
        return _label(panel, label, colors)

    panels = [shown(mri, "MRI (FLAIR, windowed)" if stretched else "MRI (FLAIR)")]
    if truth is None:
        ov = _blend(mri, pred, PRED)
        panels += [
            _label(white(pred), "prediction"),
            shown(_outline(ov, dropped, DROPPED), f"red: predicted tumor{more}", LEGEND_COLORS),
        ]
    else:
        truth = np.asarray(truth, bool)
        ov = _blend(_blend(_blend(mri, pred & truth, TP), pred & ~truth, FP), ~pred & truth, FN)
        panels += [
            _label(white(truth), "truth"),
            _label(white(pred), "prediction"),
            shown(_outline(ov, dropped, DROPPED), LEGEND + more, LEGEND_COLORS),
        ]
        said = slice_score(pred, truth)
        title = f"{title}  {said}" if title else said
    if dropped.any():
        said = f"{int(dropped.sum())} px dropped by the largest-region step"
        title = f"{title}  {said}" if title else said
    gap = np.full((mri.shape[0], 4, 3), 255, np.uint8)
    strip = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    return titled(strip, title) if title else strip


def titled(image: np.ndarray, title: str) -> np.ndarray:
    """`image` (HxWx3) under `title` in black on white, broken onto as many lines as it needs."""
    font, lines = _lines(title, image.shape[1] - 8)
    bar = Image.new("RGB", (image.shape[1], LINE * len(lines) + 3), (255, 255, 255))
    d = ImageDraw.Draw(bar)
    for i, line in enumerate(lines):
        d.text((4, 1 + LINE * i), line, fill=(0, 0, 0), font=font)
    return np.concatenate([np.asarray(bar), image], axis=0)


def stack_strips(strips: list[np.ndarray], gap: int = 6) -> np.ndarray:
    """`overlay` strips one above another, padded white to the widest, `gap` white rows apart."""
    width = max(s.shape[1] for s in strips)
    padded = [np.pad(s, ((0, gap), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
    return np.concatenate(padded, axis=0)[: -gap or None]


def png_bytes(arr: np.ndarray, level: int = 6) -> bytes:
    """PNG bytes; zlib `level` 3 encodes a 512x512 MRI about twice as fast as 6, 4 % larger."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=level)
    return buf.getvalue()


def compact_image(arr: np.ndarray) -> bytes:
    """Lossless WebP (a third smaller than PNG for an overlay strip, 0.1 s to encode one), for
    pictures embedded in a page; PNG where Pillow was built without WebP."""
    from PIL import features

    if not features.check("webp") or max(arr.shape[:2]) > 16383:  # WebP's largest side
        return png_bytes(arr)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="WEBP", lossless=True, method=0, quality=100)
    return buf.getvalue()


def data_url(image: bytes) -> str:
    """A data URL of PNG or WebP bytes (told apart by their signature)."""
    kind = "webp" if image[:4] == b"RIFF" and image[8:12] == b"WEBP" else "png"
    return f"data:image/{kind};base64," + base64.b64encode(image).decode()


def histogram_png(values: list[float], baseline: list[float] | None = None, title: str = "") -> bytes:
    from matplotlib.figure import Figure  # not pyplot: no backend, no global figures (serve's threads)
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 3), dpi=100)
    ax = fig.subplots()
    bins = np.linspace(0, 1, 21)
    ax.hist(values, bins=bins, color="tab:blue", edgecolor="white", label="model")  # edges: bars stay apart
    if baseline is not None:
        # an outline, so that where it overlaps the model's bars no third colour appears
        ax.hist(baseline, bins=bins, color="tab:gray", histtype="step", linewidth=2, label='always "no tumor"')
    ax.set_xlabel("per-patient Dice")
    ax.set_ylabel("patients")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts, never 0.5 of a patient
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "n/a" if not np.isfinite(v) else f"{v:.3f}"
    return html.escape(str(v))


def html_report(
    title: str,
    rows: list[dict],
    columns: list[str],
    summary_rows: list[dict],
    notes: list[str],
    histogram: bytes,
    strips: dict[str, list[tuple[bytes, str]]],
    curves: bytes | None = None,
) -> str:
    """One self-contained HTML page; every picture is embedded as a data URL."""

    anchors = {pid: f"p{i}" for i, pid in enumerate(strips)}  # each patient's slices, linked from its row

    def cell(r: dict, c: str) -> str:
        text = _fmt(r.get(c, ""))
        if c == "patient" and r.get(c) in anchors:
            return f"<a href='#{anchors[r[c]]}'>{text}</a>"
        return text

    def table(rs: list[dict], cols: list[str]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{cell(r, c)}</td>" for c in cols) + "</tr>" for r in rs)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    dice_of = {r.get("patient"): r.get("dice") for r in rows}

    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0}",
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}th{background:#f0f0f0}",
        "td:first-child{text-align:left;min-width:15em;max-width:28em;overflow-wrap:anywhere}img{max-width:100%}",
        ".strip{margin:4px 0 14px}h3,.note{overflow-wrap:anywhere}",
        ".note{color:#555;font-size:13px}h2{margin-top:28px}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p class='note'>Not a medical device. For research use only.</p>",
        "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes),
        "<h2>Summary</h2>",
        table(summary_rows, list(summary_rows[0].keys()) if summary_rows else []),
        "<h2>Per patient</h2>",
        table(rows, columns),
        "<h2>Dice histogram</h2>",
        f"<img alt='per-patient Dice histogram' src='{data_url(histogram)}'>",
    ]
    if curves:
        parts += ["<h2>Training curves</h2>", f"<img alt='training curves' src='{data_url(curves)}'>"]
    parts.append(
        "<h2>Slices with the most tumor, the largest false alarms and the largest region dropped by the "
        "largest-region step (outlined), worst first</h2>"
    )
    for pid, pngs in strips.items():
        dice = dice_of.get(pid)
        said = f" · Dice {_fmt(dice)}" if isinstance(dice, float) else ""
        parts.append(f"<h3 id='{anchors[pid]}'>{html.escape(pid)}{said}</h3>")
        if not pngs:
            parts.append("<p class='note'>No tumor in the truth and none predicted: no slice to show.</p>")
        parts += [f"<div class='strip'><img alt='{html.escape(alt)}' src='{data_url(p)}'></div>" for p, alt in pngs]
    parts.append("</body></html>")
    return "\n".join(parts)


def plot_curves(history: list[dict], path: Path) -> None:
    """A run's curves.png: the training loss per epoch and, where validated, the per-patient Dice."""
    from matplotlib.figure import Figure  # not pyplot: no backend, no global figures
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax1 = fig.subplots()
    lines = ax1.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 1.25
    if len(set(epochs)) == 1:
        ax1.set_xticks(epochs)  # one epoch: its number, not 0.96-1.04
    ax1.set_ylabel("train loss", color="tab:blue")
    if any("val_dice" in h for h in history):
        ax2 = ax1.twinx()
        lines += ax2.plot(epochs, [h.get("val_dice", float("nan")) for h in history], "s-", color="tab:red",
                          label="val per-patient Dice, mean")  # fmt: skip
        ax2.set_ylabel("val per-patient Dice (mean)", color="tab:red")
        ax2.set_ylim(0, 1)
    ax1.legend(handles=lines, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)  # over the plot
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
