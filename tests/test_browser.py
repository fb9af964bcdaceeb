"""The web page in real headless Chromium (Debian's), driven by Playwright."""

import io
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

sync_api = pytest.importorskip("playwright.sync_api")
from conftest import case_nifti, png_header_only  # noqa: E402

SLICE = "TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_12.png"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])  # fmt: skip
        yield b
        b.close()


def test_upload_shows_overlay_and_area(browser, server, lgg_root, tmp_path):
    """The page works under its own Content-Security-Policy (no eval, no inline script or style)."""
    page = browser.new_page()
    said: list[str] = []
    page.on("console", lambda m: said.append(m.text))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(server + "/")
    page.wait_for_load_state("load")
    # everything from this server: it loads on a network with no way out (no CDN, no fonts);
    # a wall-clock bound here once risked failing a loaded CI machine
    assert asked and all(u.startswith(server + "/") or u.startswith("data:") for u in asked), asked
    assert "Not a medical device" in page.inner_text("body")
    page.set_input_files("#file", str(lgg_root / SLICE))
    page.wait_for_selector("#result:not([hidden])", timeout=30000)
    page.wait_for_function("() => document.getElementById('over').naturalWidth > 0")
    shown = page.inner_text("#measure")
    api = httpx.post(server + "/api/v1/segment", files={"file": ("s.png", (lgg_root / SLICE).read_bytes())}).json()
    assert shown == f"Tumor area: {api['tumor_area_px']} px"
    page.fill("#opacity", "80")
    page.dispatch_event("#opacity", "input")
    assert page.eval_on_selector("#over", "e => e.style.opacity") == "0.8"
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10000
    assert "frame-ancestors 'none'" in page.request.get(server + "/").headers["content-security-policy"]
    assert not [m for m in said if "Content Security Policy" in m], said


def test_error_in_words(browser, server, tmp_path):
    """Each error is the file's name and one sentence: the server's "upload: ..." once followed
    the name ("huge.png: upload: ..."), and its message ran into the next sentence with no stop."""
    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not an image")
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])", timeout=30000)
    said = page.inner_text("#error")
    assert said == "notes.png: not a supported image: send a PNG, TIFF or JPEG slice, or a NIfTI volume.", said
    page.set_input_files("#file", str(png_header_only(tmp_path / "huge.png", 30000, 30000)))
    page.wait_for_function("() => document.getElementById('error').textContent.startsWith('huge.png')", timeout=30000)
    said = page.inner_text("#error")
    assert "too large" in said and "upload:" not in said and said.endswith("."), said


def test_keyboard_opens_the_file_chooser(browser, server):
    """Enter on the focused drop zone clicks the file input (what opens the chooser).

    The click is observed on the input itself: Playwright's file-chooser event races the
    interception it switches on and missed presses on a fresh machine."""
    page = browser.new_page()
    page.goto(server + "/")
    page.evaluate(
        "document.getElementById('file').addEventListener('click', (e) => {"
        " window.__chooserClicks = (window.__chooserClicks || 0) + 1; e.preventDefault(); })"
    )
    page.focus("#drop")
    assert page.evaluate("document.activeElement.id") == "drop"
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.__chooserClicks === 1", timeout=5000)
    page.keyboard.press("Tab")  # moving on does not click it again
    assert page.evaluate("window.__chooserClicks") == 1


def test_a_volume_that_states_no_orientation_is_labelled_in_the_files_order(browser, server, lgg_root, tmp_path):
    """With no qform or sform code above 0 nibabel guesses the orientation: the slider once said
    slices counted "from 0 at the most inferior" all the same, and the images carried R/L letters."""
    nib = pytest.importorskip("nibabel")
    path, _ = case_nifti(lgg_root, "TCGA_CS_5395_19981004", slice(2, 16), tmp_path / "scan.nii.gz")
    bare = tmp_path / "bare.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(nib.load(path).dataobj), None), bare)
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(bare))
    page.wait_for_selector("#notes:not([hidden])", timeout=60000)
    assert "states no orientation" in page.inner_text("#notes")
    label = page.inner_text("#slice-label")
    assert "in the file's order (it states no orientation)" in label and "most inferior" not in label, label
    mri = httpx.get(server + page.get_attribute("#base", "src"), timeout=60)
    assert not (np.asarray(Image.open(io.BytesIO(mri.content)))[96:160, :16] == 255).any()  # no R drawn


def test_volume_notes_are_shown_and_cleared(browser, server, lgg_root, tmp_path):
    """A volume whose largest-region step was a close call lists the note under the result;
    ticking "keep every 3D region" segments it again, dropping nothing, so with no note;
    a lone slice has none."""
    pytest.importorskip("nibabel")
    path, _ = case_nifti(lgg_root, "TCGA_CS_5395_19981004", slice(2, 16), tmp_path / "scan.nii.gz")
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#notes:not([hidden])", timeout=60000)
    assert "close call of the largest-region step" in page.inner_text("#notes")
    shown = int(page.input_value("#slice"))  # the slider counts slices as the notes do, from 0
    assert page.inner_text("#slice-label").startswith(f"slice {shown} of 0-13, counted from 0")
    loaded = (
        "() => ['mri', 'mask', 'base', 'over'].every((id) => { const e = document.getElementById(id); "
        "return e.complete && e.naturalWidth === 256 && e.src.includes(`/slices/${SHOWN}/`); })"
    )
    page.wait_for_function(loaded.replace("SHOWN", str(shown)), timeout=30000)  # fetched from the server
    page.fill("#slice", "3")  # another slice's images are fetched as the slider moves
    page.wait_for_function(loaded.replace("SHOWN", "3"), timeout=30000)
    assert page.inner_text("#slice-label").startswith("slice 3 of 0-13")
    page.route("**/slices/5/**", lambda route: route.fulfill(status=404, body='{"error": "no such result"}'))
    page.fill("#slice", "5")  # as if the hour had passed: the page says so, not a broken image
    page.wait_for_selector("#error:not([hidden])", timeout=30000)
    assert "keeps a volume's images for an hour" in page.inner_text("#error")
    page.unroute("**/slices/5/**")
    page.fill("#slice", str(shown))  # a slice that loads clears the message
    page.wait_for_selector("#error", state="hidden", timeout=30000)
    largest = page.inner_text("#measure")
    assert largest.startswith("Tumor volume:")
    # saved as predict names it: once mask.nii.gz for every file (the server's name won), and before
    # that scan_mask.nii.gz, which predict and evaluate read as the expert's truth beside scan.nii.gz
    with page.expect_download() as saved:
        page.click("#download")
    assert saved.value.suggested_filename == "scan_pred.nii.gz"
    page.fill("#slice", "3")
    page.check("#all-parts")  # the volume shown is segmented again: nothing dropped, no note, more tumor
    page.wait_for_function(f"() => document.getElementById('measure').textContent !== {largest!r}", timeout=60000)
    assert page.is_hidden("#notes") and page.inner_text("#measure").startswith("Tumor volume:")
    assert page.input_value("#slice") == "3"  # it stays on the slice shown (once went back to the largest)
    said = page.get_attribute("#slice", "aria-valuetext")  # the slider tells a screen reader the slice's tumor
    assert said == page.inner_text("#slice-label") and said.startswith("slice 3 of 0-13, counted from 0 at the most "
                                                                        "inferior (tumor "), said  # fmt: skip
    page.uncheck("#all-parts")  # and back
    page.wait_for_function(f"() => document.getElementById('measure').textContent === {largest!r}", timeout=60000)
    assert "close call of the largest-region step" in page.inner_text("#notes")
    page.set_input_files("#file", str(lgg_root / SLICE))
    page.wait_for_function(
        "() => document.getElementById('measure').textContent.startsWith('Tumor area')", timeout=30000
    )
    assert page.is_hidden("#notes")


def test_grayscale_slice_shows_the_flair_alone_note(browser, server, lgg_root, tmp_path):
    """A grayscale slice is FLAIR alone: the page lists what that costs beside its result."""
    from PIL import Image

    gray = tmp_path / "gray.png"
    Image.open(lgg_root / SLICE).convert("L").save(gray)
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(gray))
    page.wait_for_selector("#notes:not([hidden])", timeout=30000)
    assert "equal FLAIR in every slice" in page.inner_text("#notes")
    assert page.inner_text("#measure").startswith("Tumor area")


def test_only_the_latest_upload_is_shown(browser, server, lgg_root):
    """Two uploads in flight: the earlier one's answer, arriving last, does not replace the later one's."""
    other = "TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_15.png"
    files = [{"file": ("s.png", (lgg_root / s).read_bytes())} for s in (SLICE, other)]
    areas = [httpx.post(server + "/api/v1/segment", files=f).json()["tumor_area_px"] for f in files]
    assert areas[0] != areas[1]
    page = browser.new_page()
    page.goto(server + "/")
    page.evaluate(  # the first request's answer is held back 2 s
        "(() => { const f = window.fetch; let n = 0; window.fetch = (...a) => {"
        " const d = ++n === 1 ? 2000 : 0; return new Promise((r) => setTimeout(r, d)).then(() => f(...a)); }; })()"
    )
    page.set_input_files("#file", str(lgg_root / SLICE))
    page.set_input_files("#file", str(lgg_root / other))
    shown = f"() => document.getElementById('measure').textContent === 'Tumor area: {areas[1]} px'"
    page.wait_for_function(shown, timeout=30000)
    page.wait_for_timeout(3000)  # the held-back answer has come and gone
    assert page.inner_text("#measure") == f"Tumor area: {areas[1]} px"


def test_toggle_after_a_failed_upload_segments_the_volume_shown(browser, server, lgg_root, tmp_path):
    """A failed upload leaves the volume on screen; ticking "keep every 3D region" segments
    that volume again, not the file that failed."""
    pytest.importorskip("nibabel")
    path, _ = case_nifti(lgg_root, "TCGA_CS_5395_19981004", slice(2, 16), tmp_path / "scan.nii.gz")
    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not an image")
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#notes:not([hidden])", timeout=60000)
    largest = page.inner_text("#measure")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])", timeout=30000)
    said = page.inner_text("#error")  # the result left on screen is not taken for the failed file's
    assert said.startswith("notes.png: not a supported image") and said.endswith(
        "NIfTI volume. The result below is still that of scan.nii.gz."
    ), said
    assert page.inner_text("#result-file") == "Result for scan.nii.gz"
    page.check("#all-parts")
    page.wait_for_function(f"() => document.getElementById('measure').textContent !== {largest!r}", timeout=60000)
    assert page.is_hidden("#error") and page.inner_text("#measure").startswith("Tumor volume:")


def test_toggle_while_an_upload_is_on_its_way_segments_that_upload(browser, server, lgg_root, tmp_path):
    """Ticked while a second volume was being segmented, the box once re-sent the first volume and
    dropped the second's answer."""
    pytest.importorskip("nibabel")
    first, _ = case_nifti(lgg_root, "TCGA_CS_5395_19981004", slice(2, 16), tmp_path / "first.nii.gz")
    second, _ = case_nifti(lgg_root, "TCGA_CS_5395_19981004", slice(4, 12), tmp_path / "second.nii.gz")
    files = {"file": ("second.nii.gz", second.read_bytes())}
    want = httpx.post(server + "/api/v1/segment?all_parts=true", files=files, timeout=120).json()
    want = f"Tumor volume: {want['tumor_volume_ml']:.2f} mL in {len(want['slices_with_tumor'])} slices"
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(first))
    page.wait_for_selector("#result:not([hidden])", timeout=60000)
    page.evaluate(  # the next request's answer is held back 3 s
        "(() => { const f = window.fetch; let n = 0; window.fetch = (...a) => {"
        " const d = ++n === 1 ? 3000 : 0; return new Promise((r) => setTimeout(r, d)).then(() => f(...a)); }; })()"
    )
    page.set_input_files("#file", str(second))
    page.check("#all-parts")
    page.wait_for_function(f"() => document.getElementById('measure').textContent === {want!r}", timeout=60000)
    page.wait_for_timeout(4000)  # the held-back answer has come and gone
    assert page.inner_text("#measure") == want


def test_the_same_file_again_and_a_drop_beside_the_zone(browser, server, lgg_root):
    """The file input kept its value, so choosing the same file again fired no change and did not
    segment it again; a file dropped beside the drop zone was opened by the browser, leaving the page."""
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(lgg_root / SLICE))
    page.wait_for_selector("#result:not([hidden])", timeout=30000)
    assert page.eval_on_selector("#file", "e => e.value") == ""  # a new choice of it is a change
    prevented = page.evaluate(
        """() => {
        const data = new DataTransfer();
        data.items.add(new File(["x"], "scan.png", { type: "image/png" }));
        return ["dragover", "drop"].map((type) => {
          const ev = new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true });
          document.body.dispatchEvent(ev);
          return ev.defaultPrevented;
        });
      }"""
    )
    assert prevented == [True, True]
    assert page.url.rstrip("/") == server.rstrip("/")


def test_a_failed_toggle_puts_the_box_back_and_small_volumes_are_not_0_ml(browser, server, lgg_root, tmp_path):
    """Segmenting the volume shown again with the other setting failed (a busy server), and the box
    stayed ticked beside the result of the other setting; a tumor of a few voxels read "0.00 mL in 1 slices"."""
    pytest.importorskip("nibabel")
    path, _ = case_nifti(lgg_root, "TCGA_CS_5395_19981004", slice(2, 16), tmp_path / "scan.nii.gz")
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#result:not([hidden])", timeout=60000)
    largest = page.inner_text("#measure")
    busy = '{"error": "busy: 2 uploads are being segmented; try again shortly"}'
    page.route("**/api/v1/segment**", lambda route: route.fulfill(status=503, body=busy))
    # click, not check: the refusal can untick the box before check() reads it back (CI flake)
    page.click("#all-parts")
    page.wait_for_selector("#error:not([hidden])", timeout=30000)
    said = page.inner_text("#error")
    assert said.startswith("scan.nii.gz: busy: 2 uploads") and "still that of scan.nii.gz" in said, said
    assert said.endswith('"Keep every 3D region" is back to off, as that result was segmented.'), said
    assert not page.is_checked("#all-parts") and page.inner_text("#measure") == largest
    page.unroute("**/api/v1/segment**")
    page.check("#all-parts")  # and with the server free again, the other setting is shown
    page.wait_for_function(f"() => document.getElementById('measure').textContent !== {largest!r}", timeout=60000)
    assert page.is_hidden("#error") and page.is_checked("#all-parts")
    shown = page.evaluate("[0, 0.004, 0.01, 14.384].map(millilitres).concat([count(1, 'slice'), count(7, 'slice')])")
    assert shown == ["0 mL", "under 0.01 mL", "0.01 mL", "14.38 mL", "1 slice", "7 slices"]


def test_a_long_patient_name_keeps_the_report_on_the_screen(browser, tmp_path):
    """One 200-letter patient folder name once made the report 2,405 px wide at 1,400, every metric
    column off the screen; the name now wraps within its cell."""
    from test_report import _html, _tumor_patient

    name = "L" * 200 + "_19960909"
    (tmp_path / "report.html").write_text(_html({name: _tumor_patient(), "T": _tumor_patient()}, tmp_path))
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto((tmp_path / "report.html").as_uri())
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    assert name in page.inner_text("body").replace("\n", "")


def test_a_long_file_name_wraps_on_a_phone_and_the_result_is_said(browser, server, lgg_root, tmp_path):
    """A 220-letter file name once made the page 3488 px wide on a 375 px phone; the status said
    only "Done in 280 ms." to a screen reader; every mask downloaded as mask.png; the alt texts
    never changed."""
    name = tmp_path / ("TCGA_" + "very_long_file_name_without_spaces" * 6 + "_12.png")  # 220 letters
    shutil.copy(lgg_root / SLICE, name)
    page = browser.new_page(viewport={"width": 375, "height": 667})
    page.goto(server + "/")
    page.set_input_files("#file", str(name))
    page.wait_for_selector("#result:not([hidden])", timeout=30000)
    page.wait_for_function("() => document.getElementById('over').naturalWidth > 0")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    area = page.inner_text("#measure")
    assert page.inner_text("#status").endswith(f"ms. {area}.") and area.startswith("Tumor area: ")
    with page.expect_download() as saved:
        page.click("#download")
    assert saved.value.suggested_filename == f"{name.stem}_pred.png"  # never _mask: that names the truth
    px = area.removeprefix("Tumor area: ").removesuffix(" px")
    assert page.get_attribute("#mask", "alt") == f"predicted tumor mask, the slice: tumor of {px} px"
    assert page.get_attribute("#base", "alt") == ""  # the MRI under the overlay is not a fourth image
    assert page.evaluate("getComputedStyle(document.getElementById('drop')).outlineStyle") == "none"
    page.focus("#drop")  # a focus ring a keyboard user can see
    assert page.evaluate("getComputedStyle(document.getElementById('drop')).outlineStyle") == "solid"
    page.set_viewport_size({"width": 320, "height": 640})  # narrower than an image: they shrink, still aligned
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    base, over = (
        page.eval_on_selector(f"#{i}", "e => JSON.stringify(e.getBoundingClientRect())") for i in ("base", "over")
    )
    assert base == over and __import__("json").loads(base)["width"] < 300


def test_the_page_names_the_model_its_license_and_links_its_card(browser, server):
    """The page said nothing of the model: not which, nor that its weights are non-commercial."""
    page = browser.new_page()
    said: list[str] = []
    page.on("console", lambda m: said.append(m.text))
    page.goto(server + "/")
    page.wait_for_selector("#model-info:not([hidden])", timeout=10000)
    model = httpx.get(server + "/api/v1/model").json()["model"]
    shown = page.inner_text("#model-info")
    assert f"Model: {model}" in shown and "CC BY-NC-SA 4.0, non-commercial use only" in shown, shown
    page.click("#model-info a")
    page.wait_for_selector("h1")
    assert page.url == server + "/model-card/" and "Model card" in page.inner_text("h1")
    page.wait_for_function("() => [...document.images].every((i) => i.complete && i.naturalWidth > 0)")
    assert page.eval_on_selector_all("img", "imgs => imgs.length") >= 1
    assert not [m for m in said if "Content Security Policy" in m], said


def test_report_keeps_patient_ids_on_one_line(browser, tiny_run, tmp_path):
    """report.html once broke every patient id across two lines (`TCGA_CS_5395_19981` / `004`)."""
    import json

    from tumorseg.evaluation import evaluate

    data = json.loads((tiny_run / "config.json").read_text())["data"]
    evaluate(data, tiny_run / "last.safetensors", "all", tmp_path / "ev", report=True, log=lambda *a: None)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto((tmp_path / "ev" / "report.html").as_uri())
    lines = page.eval_on_selector_all(
        "td:first-child",
        """tds => tds.filter(t => t.textContent.startsWith("TCGA"))
        .map(t => { const r = document.createRange(); r.selectNodeContents(t);
                    return new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size; })""",
    )
    assert len(lines) == 3 and lines == [1, 1, 1], lines
