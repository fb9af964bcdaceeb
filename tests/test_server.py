"""The REST API against a real uvicorn server on 127.0.0.1 (a free port), the shipped model."""

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import case_nifti, png_header_only  # noqa: E402

from tumorseg.infer import DEFAULT_WEIGHTS, resolve_backend  # noqa: E402

SLICE = "TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_12.png"


def post(url, content: bytes, name="x.png", **params):
    return httpx.post(url + "/api/v1/segment", files={"file": (name, content)}, params=params, timeout=60)


def test_health(server):
    body = httpx.get(server + "/api/v1/health").json()
    assert body["status"] == "ok" and body["model"].startswith("tumorseg-lgg-unet")
    assert body["backend"] == resolve_backend("auto", DEFAULT_WEIGHTS)


def test_the_model_is_named_with_its_license_and_its_card_is_a_page(server):
    """A web user once had no way to learn which model answered, that its weights are
    non-commercial, or to read the model card the FLAIR-alone note points to."""
    import re
    from urllib.parse import urljoin

    m = httpx.get(server + "/api/v1/model").json()
    assert m["model"] == httpx.get(server + "/api/v1/health").json()["model"] and m["shipped"] is True
    assert "CC BY-NC-SA 4.0" in m["license"] and "non-commercial" in m["license"]
    assert m["channels"] == ["pre-contrast T1", "FLAIR", "post-contrast T1"] and m["image_size"] == 128
    r = httpx.get(server + "/model-card", follow_redirects=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and str(r.url).endswith("/")
    assert "<h1" in r.text and "<table>" in r.text and "non-commercial use only" in r.text
    assert 'id="missing-sequences-a-run-not-shipped"' in r.text  # the section the FLAIR-alone note names
    figures = re.findall(r'<img src="([^"]+)"', r.text)
    assert figures and all(httpx.get(urljoin(str(r.url), f)).content[:4] == b"\x89PNG" for f in figures)
    for name in ("nothing", "..%5CLICENSE", "a..b", "MODEL_CARD.md%00"):  # reach the route, which refuses them
        r = httpx.get(server + f"/model-card/{name}.png")
        assert r.status_code == 404 and "the model card has no figure" in r.json()["error"], (name, r.text)
    assert httpx.head(server + "/api/v1/model").status_code == 200


def test_another_model_says_it_is_not_the_shipped_one(tmp_path):
    from conftest import start_server

    from tumorseg.checkpoint import Checkpoint, save_checkpoint
    from tumorseg.config import TrainConfig
    from tumorseg.models import UNet

    weights = tmp_path / "mine.safetensors"
    cfg = TrainConfig(model={"base": 4, "depth": 2, "image_size": 32, "channels": "flair"})
    save_checkpoint(weights, Checkpoint(cfg, UNet(1, 1, 4, 2).state_dict(), {"epoch": 1}))
    url, proc = start_server("--weights", str(weights))
    try:
        m = httpx.get(url + "/api/v1/model").json()
        card = httpx.get(url + "/model-card/")
        figure = httpx.get(url + "/model-card/failure_modes.png")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert m["model"].startswith("mine-") and m["shipped"] is False and m["license"] is None
    assert m["channels"] == ["FLAIR"] and m["image_size"] == 32 and m["model_card"] is None
    assert card.status_code == 404 and card.headers["content-type"].startswith("text/html")  # a page, not JSON
    assert "<h1>No model card</h1>" in card.text and f"{m['model']} is not the shipped model" in card.text
    assert figure.status_code == 404  # the shipped model's figures are not shown for another model
    assert "is not the shipped model" in figure.json()["error"]


def test_openapi_schema(server):
    schema = httpx.get(server + "/openapi.json").json()
    assert "/api/v1/segment" in schema["paths"] and "/api/v1/health" in schema["paths"]
    model = schema["paths"]["/api/v1/model"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert model == {"$ref": "#/components/schemas/ModelInfo"}  # once a free-form object
    assert "license" in schema["components"]["schemas"]["ModelInfo"]["properties"]
    # a client generated from the schema (QA): typed health, `kind` picks the answer, files are binary
    health = schema["paths"]["/api/v1/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert health == {"$ref": "#/components/schemas/HealthAnswer"}
    segment = schema["paths"]["/api/v1/segment"]["post"]["responses"]["200"]["content"]
    assert segment["application/json"]["schema"]["discriminator"]["mapping"]["volume"].endswith("/VolumeAnswer")
    assert segment["image/png"]["schema"] == segment["application/gzip"]["schema"] == {"type": "string",
                                                                                       "format": "binary"}  # fmt: skip
    volume = schema["components"]["schemas"]["VolumeAnswer"]["properties"]
    assert "most inferior" in volume["slices_with_tumor"]["description"]
    body = httpx.get(server + "/api/v1/health").json()
    assert set(body) == {"status", "model", "version", "backend", "busy", "max_busy", "waiting"}
    assert body["status"] == "ok" and body["busy"] == body["waiting"] == 0 and body["max_busy"] == 2  # MAX_BUSY


def test_an_unknown_format_names_the_ones_there_are(server, lgg_root):
    """`?format=jpeg` once answered "String should match pattern '^(json|png)$'"."""
    r = post(server, (lgg_root / SLICE).read_bytes(), format="jpeg")
    assert r.status_code == 422 and "query.format: Input should be 'json' or 'png'" in r.json()["error"], r.text


def test_segment_real_slice(server, lgg_root):
    r = post(server, (lgg_root / SLICE).read_bytes(), name="anything.bin")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "image" and (body["width"], body["height"]) == (256, 256)
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"].split(",", 1)[1]))))
    assert mask.shape == (256, 256) and body["tumor_area_px"] == int((mask > 0).sum()) > 0
    assert 0.5 < body["max_probability"] <= 1 and body["overlay"].startswith("data:image/png;base64,")
    png = post(server, (lgg_root / SLICE).read_bytes(), format="png")
    assert png.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), mask)
    assert body["notes"] == []


@pytest.mark.parametrize("size", [(1, 5), (1, 1), (3, 7), (7, 3)])
def test_narrow_images_are_segmented(server, size):
    """An image 1 or 3 pixels wide is drawn as what it is, not taken for a channel axis."""
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(buf, format="PNG")
    r = post(server, buf.getvalue())
    assert r.status_code == 200, r.text
    assert (r.json()["width"], r.json()["height"]) == size


def test_grayscale_slice_notes_flair_alone(server, lgg_root):
    """A grayscale slice is FLAIR alone: the answer says what that costs; its mask is still made."""
    buf = io.BytesIO()
    Image.open(lgg_root / SLICE).convert("L").save(buf, format="PNG")
    r = post(server, buf.getvalue())
    assert r.status_code == 200, r.text
    (note,) = r.json()["notes"]
    assert note.startswith("pre-contrast T1 and post-contrast T1 equal FLAIR in every slice")
    assert "Missing sequences" in note


def png_text_bomb() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    buf = io.BytesIO()
    Image.new("L", (64, 64)).save(buf, format="PNG")
    png = buf.getvalue()  # signature and IHDR are its first 33 bytes
    return png[:33] + chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * 200 * 2**20, 9)) + png[33:]


@pytest.mark.parametrize(
    ("make", "status", "words"),
    [
        (lambda p, t: b"", 400, "empty"),
        (lambda p, t: p[: len(p) // 2], 422, "cannot read image"),
        (lambda p, t: b"hello, I am text\n" * 10, 415, "not a supported image"),
        (lambda p, t: b"\x89PNG\r\n\x1a\n" + b"\0" * (3 * 1024 * 1024), 413, "larger than"),
        # between the limit and the form's allowance: refused by the endpoint itself, not read and decoded
        (lambda p, t: b"\x89PNG\r\n\x1a\n" + b"\0" * (5 * 1024 * 1024 // 2), 413, "larger than 2 MiB"),
        (lambda p, t: png_header_only(t / "bomb.png", 20000, 20000).read_bytes(), 413, "too large"),
        # over serve's 4096x4096, under the readers' own 8192x8192 default
        (lambda p, t: png_header_only(t / "big.png", 5000, 5000).read_bytes(), 413, "5000x5000 pixels is too large"),
        # a small PNG whose text chunk inflates to 200 MB: unreadable (422), not a too-large upload (413)
        (lambda p, t: png_text_bomb(), 422, "text (metadata) chunk inflates"),
    ],
    ids="empty truncated-png text-renamed-png oversized just-over png-bomb over-4096 png-text-bomb".split(),
)
def test_bad_uploads(server, lgg_root, tmp_path, make, status, words):
    r = post(server, make((lgg_root / SLICE).read_bytes(), tmp_path))
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert str(tmp_path) not in r.text


def test_wrong_method_and_missing_field(server):
    r = httpx.get(server + "/api/v1/segment")
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.post(server + "/api/v1/segment", files={"other": ("x.png", b"123")})
    assert r.status_code == 400 and "form field other" in r.json()["error"] and "'file'" in r.json()["error"]
    r = httpx.post(server + "/api/v1/segment", data={"x": "1"}, files={})  # a form, but not multipart
    assert r.status_code == 415 and "multipart/form-data, in the field 'file'" in r.json()["error"]


def test_concurrent_requests_then_still_healthy(server, lgg_root):
    good = (lgg_root / SLICE).read_bytes()
    bad = b"not an image"
    with ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda i: post(server, good if i % 2 else bad).status_code, range(16)))
    assert codes.count(200) == 8 and codes.count(415) == 8
    assert httpx.get(server + "/api/v1/health").status_code == 200


def test_index_page(server):
    r = httpx.get(server + "/")
    assert r.status_code == 200 and "Not a medical device" in r.text
    assert httpx.get(server + "/static/app.js").status_code == 200


def test_schemathesis_finds_no_server_error(server):
    import shutil
    import subprocess
    import sys

    exe = shutil.which("schemathesis") or str(__import__("pathlib").Path(sys.executable).parent / "schemathesis")
    if not __import__("pathlib").Path(exe).exists():
        pytest.skip("schemathesis is not installed")
    r = subprocess.run([exe, "run", server + "/openapi.json", "-c", "not_a_server_error", "-n", "25", "--seed", "1"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:]
    assert "passed" in r.stdout


def test_segment_nifti_volume(server, lgg_root, tmp_path):
    nib = pytest.importorskip("nibabel")
    # 8 slices: within the test server's 2 MB upload limit
    path, images = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(8, 16), tmp_path / "scan.nii.gz")
    arr, affine = np.asarray(nib.load(str(path)).dataobj), np.diag([0.9, 0.9, 3.0, 1.0])
    r = httpx.post(server + "/api/v1/segment", files={"file": ("whatever", path.read_bytes())}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "volume" and len(body["slices"]) == len(images) and body["oriented"] is True
    areas = sum(s["tumor_area_px"] for s in body["slices"])
    assert body["tumor_volume_ml"] == pytest.approx(areas * 0.9 * 0.9 * 3.0 / 1000, rel=1e-6)
    mask = httpx.get(server + body["mask_url"], timeout=60)
    assert mask.status_code == 200
    (tmp_path / "mask.nii.gz").write_bytes(mask.content)
    out = nib.load(str(tmp_path / "mask.nii.gz"))
    assert out.shape == arr.shape[:3] and np.allclose(out.affine, affine)
    assert httpx.get(server + "/api/v1/results/../../etc/passwd").status_code == 404
    # each slice's images are URLs, fetched one at a time: the answer stays small for big volumes
    assert len(r.content) < 600 * len(images)
    sizes = set()
    for s in body["slices"]:
        got = {k: httpx.get(server + s[k], timeout=60) for k in ("mri", "mask", "overlay")}
        assert all(g.status_code == 200 and g.headers["content-type"] == "image/png" for g in got.values())
        pics = {k: np.asarray(Image.open(io.BytesIO(g.content))) for k, g in got.items()}
        assert int((pics["mask"] > 0).sum()) == s["tumor_area_px"]
        tumor = pics["mask"] > 0  # the overlay: the MRI, tinted red where the mask is
        plain = np.repeat(pics["mri"][..., None], 3, axis=2)
        other = ~tumor & (pics["overlay"] != plain).any(-1)  # elsewhere only the outline of what was dropped
        assert (pics["overlay"][other] == 255).all() and (other.any() == bool(s["dropped_px"])), s
        assert (pics["overlay"][tumor, 0] >= pics["mri"][tumor]).all() and pics["mri"].std() > 10
        assert pics["mri"].shape == pics["overlay"].shape[:2] == pics["mask"].shape  # the MRI in grayscale
        # R at the left edge, on the MRI as on the overlay (the page lays one over the other: letters
        # on the overlay alone faded with its opacity slider)
        assert (pics["mri"][96:160, :16] == 255).any(), "no R at the left edge"
        sizes.add(pics["mask"].shape)
    assert len(sizes) == 1 and sorted(sizes.pop()) == sorted(arr.shape[:2])  # the volume's own in-plane size
    last = body["slices"][-1]["mri"]
    for bad in (last.replace(f"/{len(images) - 1}/", f"/{len(images)}/"), last.replace(f"/{len(images) - 1}/", "/-1/"),
                last.replace("mri.png", "t2.png"),
                last.replace("/results/", "/results/0").replace("/slices/", "x/slices/")):  # fmt: skip
        assert httpx.get(server + bad, timeout=60).status_code in (404, 422), bad


def test_volume_notes_a_close_call(server, lgg_root, tmp_path):
    """The shipped model marks tumor-free slices below TCGA_CS_5395's small tumor, a part nearly
    as large as the tumor's: the answer keeps the tumor and says what it dropped."""
    pytest.importorskip("nibabel")
    path, _ = case_nifti(lgg_root, "TCGA_CS_5395_19981004", slice(2, 16), tmp_path / "scan.nii.gz")
    body = httpx.post(server + "/api/v1/segment", files={"file": ("s.nii.gz", path.read_bytes())}, timeout=120).json()
    notes = [n for n in body["notes"] if n.startswith("close call")]
    assert len(notes) == 1 and "(slices counted from 0 at the most inferior): kept " in notes[0], body["notes"]
    assert " voxels in slices 8-11; dropped " in notes[0]  # slices 11-14 of the patient
    assert [i for i, s in enumerate(body["slices"]) if s["tumor_area_px"]] == [8, 9, 10, 11]
    # what was dropped (slices 5-6 of the patient) is counted and outlined in white on the overlay
    dropped = [i for i, s in enumerate(body["slices"]) if s["dropped_px"]]
    assert dropped and set(dropped) <= set(range(0, 8)), dropped
    shown = body["slices"][dropped[0]]
    overlay = np.asarray(Image.open(io.BytesIO(httpx.get(server + shown["overlay"], timeout=60).content)))
    mri = np.asarray(Image.open(io.BytesIO(httpx.get(server + shown["mri"], timeout=60).content)))
    white = (overlay == 255).all(-1) & (mri < 255)
    assert white.sum() > 20  # the outline, where the MRI itself is not white
    every = httpx.post(server + "/api/v1/segment", params={"all_parts": "true"},
                       files={"file": ("s.nii.gz", path.read_bytes())}, timeout=120).json()  # fmt: skip
    assert not [n for n in every["notes"] if n.startswith("close call")]
    assert every["tumor_volume_ml"] > body["tumor_volume_ml"]
