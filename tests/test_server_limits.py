"""The REST API's limits and refusals against a real server on 127.0.0.1: TIFFs and NIfTIs
checked from their headers, one file and known parameters per request, chunked bodies
counted, expired masks gone, HEAD and Allow, the documented error shape; `serve` itself
refusing bad weights and busy ports before it starts."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import case_nifti, free_port, start_server  # noqa: E402

SLICE = "TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_12.png"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, the results folder) of a real server with a 2 MB upload limit."""
    tmp = tmp_path_factory.mktemp("tmp")
    url, proc = start_server("--max-upload-mb", "2", env={**os.environ, "TMPDIR": str(tmp)})
    [folder] = list(tmp.glob("tumorseg-serve-*"))
    yield url, folder
    proc.terminate()
    proc.wait(timeout=30)


def post(url, content: bytes, name="x", params=None, **extra):
    files = extra.pop("files", None) or {"file": (name, content)}
    extra.setdefault("timeout", 120)
    return httpx.post(url + "/api/v1/segment", files=files, params=params, **extra)


def tiff_bytes(arr: np.ndarray, **kw) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def test_tiff_pages_are_checked_before_decoding_and_planar_rgb_is_read(served, lgg_root):
    url, _ = served
    many = tiff_bytes(np.zeros((40, 4000, 4000), np.uint8), compression="zlib")  # ~0.7 MB, 640 MB decoded
    t0 = time.perf_counter()
    r = post(url, many)
    assert r.status_code == 422 and "40x4000x4000" in r.json()["error"] and "not one slice" in r.json()["error"]
    assert time.perf_counter() - t0 < 5
    rgb = np.asarray(Image.open(lgg_root / SLICE))
    plain = post(url, tiff_bytes(rgb, photometric="rgb"), params={"format": "png"})
    planar = post(url, tiff_bytes(rgb.transpose(2, 0, 1).copy(), photometric="rgb", planarconfig="separate"),
                  params={"format": "png"})  # fmt: skip
    pages = post(url, tiff_bytes(rgb.transpose(2, 0, 1).copy(), photometric="minisblack"), params={"format": "png"})
    assert plain.status_code == planar.status_code == pages.status_code == 200, planar.text
    mask = np.asarray(Image.open(io.BytesIO(plain.content)))
    assert mask.shape == (256, 256) and mask.any()
    for other in (planar, pages):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(other.content))), mask)
    r = post(url, tiff_bytes(np.zeros((0, 0), np.uint8)))
    assert r.status_code == 422 and "empty" in r.json()["error"]


def test_volumes_big_endian_read_and_too_many_voxels_refused(served, lgg_root, tmp_path):
    nib = pytest.importorskip("nibabel")
    url, _ = served
    path, _ = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(10, 13), tmp_path / "v.nii.gz")
    img = nib.load(str(path))
    swapped = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header.as_byteswapped(">"))
    nib.save(swapped, str(tmp_path / "be.nii.gz"))
    little = post(url, path.read_bytes()).json()
    big = post(url, (tmp_path / "be.nii.gz").read_bytes())
    assert big.status_code == 200, big.text
    assert [s["tumor_area_px"] for s in big.json()["slices"]] == [s["tumor_area_px"] for s in little["slices"]]
    huge = np.zeros((512, 512, 161), np.uint8)  # one slice over the server's volume limit, ~0.1 MB as .nii.gz
    nib.save(nib.Nifti1Image(huge, np.eye(4)), str(tmp_path / "huge.nii.gz"))
    t0 = time.perf_counter()
    r = post(url, (tmp_path / "huge.nii.gz").read_bytes())
    assert r.status_code == 413 and "512x512x161" in r.json()["error"], r.text
    assert time.perf_counter() - t0 < 5
    # one 4097x4097 slice: under the voxel limit, over a 2D upload's (QA: 1 GB and 2 s per slice image)
    nib.save(nib.Nifti1Image(np.zeros((4097, 4097, 1), np.uint8), np.eye(4)), str(tmp_path / "wide.nii.gz"))
    r = post(url, (tmp_path / "wide.nii.gz").read_bytes())
    assert r.status_code == 413 and "has slices of 16785409 pixels, too large (at most 16777216" in r.text, r.text
    # a header that puts 8 voxels 1 GiB into a .nii.gz made the server inflate it all (QA: 25 s a request)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8, 8, 8))
    hdr["vox_offset"] = 2**30
    r = post(url, gzip.compress(hdr.binaryblock + b"\0" * 4))
    assert r.status_code == 422 and "upload: its header puts the voxels 1024 MiB into the file" in r.text, r.text


def test_expired_masks_are_gone(served, lgg_root, tmp_path):
    url, folder = served
    path, _ = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(10, 12), tmp_path / "v.nii.gz")
    body = post(url, path.read_bytes()).json()
    mask_url, slice_url = body["mask_url"], body["slices"][0]["overlay"]
    assert httpx.get(url + mask_url, timeout=60).status_code == 200
    assert httpx.get(url + slice_url, timeout=60).status_code == 200
    saved = folder / mask_url.split("/")[-2]
    old = time.time() - 2 * 3600
    os.utime(saved, (old, old))
    r = httpx.get(url + slice_url, timeout=60)
    assert r.status_code == 404 and "an hour" in r.json()["error"]
    assert not saved.exists()
    assert httpx.get(url + mask_url, timeout=60).status_code == 404


def test_results_survive_their_folder_being_removed_and_answer_head(served, lgg_root, tmp_path):
    """A tmp cleaner removing the results folder once made every later volume upload a 500; link
    checkers asking HEAD of a result's URLs got 405."""
    url, folder = served
    path, _ = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(10, 12), tmp_path / "v.nii.gz")
    shutil.rmtree(folder)
    r = post(url, path.read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    for link in (body["mask_url"], body["slices"][1]["mri"]):
        head, got = httpx.head(url + link, timeout=60), httpx.get(url + link, timeout=60)
        assert head.status_code == 200 and head.content == b"" and got.status_code == 200
        assert head.headers["content-type"] == got.headers["content-type"]
    # a slice image is drawn for a GET only (once a HEAD drew it, up to 200 MB for a large slice)
    assert "content-length" not in head.headers and int(got.headers["content-length"]) > 0
    assert post(url, path.read_bytes(), params={"format": "png"}).status_code == 200


def test_one_file_and_known_parameters_only(served, lgg_root):
    url, _ = served
    good = (lgg_root / SLICE).read_bytes()
    r = post(url, good, params={"threshold": "0.3"})
    assert r.status_code == 400 and "threshold" in r.json()["error"] and "format" in r.json()["error"]
    r = post(url, b"", files=[("file", ("a.png", good)), ("file", ("b.png", good))])
    assert r.status_code == 400 and "2 files" in r.json()["error"]
    r = post(url, good, data={"threshold": "0.3"})
    assert r.status_code == 400 and "form field threshold" in r.json()["error"]
    r = post(url, good, params=[("format", "png"), ("format", "json")])  # once the last one, silently
    assert r.status_code == 400 and "format given 2 times" in r.json()["error"]
    assert post(url, good, params={"format": "png", "all_parts": "true"}).status_code == 200


def test_chunked_body_over_the_limit_is_refused(served):
    url, _ = served

    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n\x89PNG\r\n\x1a\n'
        for _ in range(40):  # 10 MB against a 2 MB limit, with no Content-Length
            yield b"\0" * (256 * 1024)
        yield b"\r\n--b--\r\n"

    r = httpx.post(url + "/api/v1/segment", content=chunks(), timeout=60,
                   headers={"content-type": "multipart/form-data; boundary=b"})  # fmt: skip
    assert r.status_code == 413 and "larger than 2 MiB" in r.json()["error"]
    assert httpx.get(url + "/api/v1/health").status_code == 200


def test_head_allow_and_the_documented_error_shape(served):
    url, _ = served
    assert httpx.head(url + "/api/v1/health").status_code == 200
    assert httpx.head(url + "/").status_code == 200
    r = httpx.get(url + "/api/v1/segment")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = httpx.post(url + "/api/v1/health")  # once `Allow: GET`, though HEAD is served too
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD" and "error" in r.json()
    r = httpx.put(url + "/api/v1/results/abc/mask.nii.gz")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    schema = httpx.get(url + "/openapi.json").json()
    responses = schema["paths"]["/api/v1/segment"]["post"]["responses"]
    assert set(responses) >= {"200", "400", "403", "413", "415", "422", "503"}
    for code in ("400", "403", "413", "415", "422"):
        assert responses[code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert {"image/png", "application/gzip"} <= set(responses["200"]["content"])
    assert schema["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


def test_serve_refuses_bad_weights_and_busy_ports_before_starting(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\0" * 100)
    port = str(free_port())
    cmd = [sys.executable, "-m", "tumorseg", "serve", "--workers", "2", "--weights", str(bad), "--port", port]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "broken.safetensors" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "serving on" not in r.stdout
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "tumorseg", "serve", "--port", str(port)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "tumorseg", "serve", "--host", "no-such-host.invalid"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "cannot listen on no-such-host.invalid:8000" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "serving on" not in r.stdout
    # the busy settings: once a uvicorn traceback after "serving on" (abc), or every upload a 503 (0)
    for name, value in (("MAX_BUSY", "abc"), ("MAX_BUSY", "0"), ("BUSY_WAIT", "-1"), ("BUSY_WAIT", "inf")):
        env = {**os.environ, f"TUMORSEG_SERVE_{name}": value}
        r = subprocess.run([sys.executable, "-m", "tumorseg", "serve", "--port", "0"], capture_output=True, text=True,
                           timeout=120, env=env)  # fmt: skip
        assert r.returncode == 2 and f"TUMORSEG_SERVE_{name}={value!r}: must be" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and "serving on" not in r.stdout


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_on_port_0_prints_the_port_it_serves_and_stops_cleanly(tmp_path, stop):
    """Stopped by SIGTERM, it once died with the signal and left its results folder behind."""
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    proc = subprocess.Popen([sys.executable, "-m", "tumorseg", "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        line = proc.stdout.readline()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        assert port > 0, line
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail(f"nothing answers on the port printed: {line}")
        assert list((tmp_path / "tmp").glob("tumorseg-serve-*"))  # the workers' results folder
        proc.send_signal(stop)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert not list((tmp_path / "tmp").glob("tumorseg-serve-*"))
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_the_schema_describes_the_answers_and_needs_nothing_from_the_internet(served, lgg_root, tmp_path):
    """Once: no schema for the 200 answers, HEAD and GET sharing one operationId, and /docs and
    /redoc loading scripts from a CDN."""
    from tumorseg.api.app import SliceAnswer, VolumeAnswer

    url, _ = served
    schema = httpx.get(url + "/openapi.json").json()
    ops = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(ops) == len(set(ops)), ops
    refs = schema["paths"]["/api/v1/segment"]["post"]["responses"]["200"]["content"]["application/json"]
    assert {r["$ref"].rsplit("/", 1)[1] for r in refs["schema"]["oneOf"]} == {"SliceAnswer", "VolumeAnswer"}
    assert httpx.get(url + "/docs").status_code == 404 and httpx.get(url + "/redoc").status_code == 404
    SliceAnswer.model_validate(post(url, (lgg_root / SLICE).read_bytes()).json())  # the answers are as described
    path, _ = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(10, 13), tmp_path / "v.nii.gz")
    VolumeAnswer.model_validate(post(url, path.read_bytes(), "v.nii.gz").json())


def test_bigtiff_is_read_and_a_wrong_kind_of_request_is_explained(served, lgg_root):
    url, _ = served
    rgb = np.asarray(Image.open(lgg_root / SLICE))
    r = post(url, tiff_bytes(rgb, photometric="rgb", bigtiff=True))  # once 415
    assert (
        r.status_code == 200
        and r.json()["tumor_area_px"] == post(url, (lgg_root / SLICE).read_bytes()).json()["tumor_area_px"]
    )
    raw = httpx.post(url + "/api/v1/segment", content=(lgg_root / SLICE).read_bytes(),
                     headers={"Content-Type": "image/png"}, timeout=60)  # fmt: skip
    assert raw.status_code == 415 and "multipart/form-data" in raw.json()["error"]  # once 422 "Field required"
    text = httpx.post(url + "/api/v1/segment", data={"file": "scan.png"}, files={"other": ("x", b"")}, timeout=60)
    assert text.status_code == 400 and "holds text, not a file" in text.json()["error"], text.json()
    none = httpx.post(url + "/api/v1/segment", content=b"--X--\r\n", timeout=60,
                      headers={"Content-Type": "multipart/form-data; boundary=X"})  # fmt: skip
    assert none.status_code == 422 and "no file in the field 'file'" in none.json()["error"], none.json()


def big_volume(lgg_root, path) -> bytes:
    """A NIfTI of 140 slices of 512x512 (a real FLAIR, tiled and upscaled): 5-9 s of the only
    decoding slot here, so tests that need the slot held do not race a volume of 1 s."""
    import nibabel as nib

    from tumorseg.data.lgg import find_cases, load_case

    flair = load_case(find_cases(lgg_root / "TCGA_DU_5872_19950223")[0], None).images[:, 1]
    big = np.kron(np.tile(flair, (2, 1, 1))[:140], np.ones((1, 2, 2), np.uint8))
    nib.save(nib.Nifti1Image(np.ascontiguousarray(big.transpose(2, 1, 0)), np.diag([0.45, 0.45, 3, 1.0])), path)
    return path.read_bytes()


def wait_health(url: str, key: str, value: int, slow=None, deadline: float = 120) -> None:
    """Poll /api/v1/health until `key` is `value`; `slow` (a future) must not finish meanwhile."""
    end = time.monotonic() + deadline
    while (health := httpx.get(url + "/api/v1/health", timeout=60).json())[key] != value:
        assert time.monotonic() < end, f"{key} never became {value}: {health}"
        assert slow is None or not slow.done(), slow.result().text
        time.sleep(0.02)


def test_a_burst_waits_for_a_decoding_slot_then_gets_503(lgg_root, tmp_path):
    """Decoding and answering once ran in every threadpool thread at once: a dozen small uploads
    that decode to gigabytes could exhaust the memory. Now `MAX_BUSY` uploads are segmented at a
    time; one that waits longer than `BUSY_WAIT` seconds for a slot gets 503 with Retry-After."""
    from concurrent.futures import ThreadPoolExecutor

    volume = big_volume(lgg_root, tmp_path / "big.nii.gz")
    small = (lgg_root / SLICE).read_bytes()
    env = {**os.environ, "TUMORSEG_SERVE_MAX_BUSY": "1", "TUMORSEG_SERVE_BUSY_WAIT": "0.3"}
    url, proc = start_server(env=env)
    try:
        with ThreadPoolExecutor(1) as ex:
            slow = ex.submit(post, url, volume, "big.nii.gz")
            # small uploads start once the volume holds the slot: one sent earlier could take it
            # first, and the volume, waiting more than 0.3 s, got the 503 (a CI failure)
            wait_health(url, "busy", 1, slow)
            answers = []
            while not slow.done() and len(answers) < 50:
                answers.append(post(url, small))
                time.sleep(0.2)
            assert slow.result().status_code == 200
        refused = [r for r in answers if r.status_code == 503]
        assert refused, f"no upload was refused while a 140-slice volume was segmented: {answers}"
        assert refused[0].headers["Retry-After"] == "5"
        assert refused[0].json()["error"].startswith("busy: 1 upload is being segmented")  # once "1 uploads are"
        assert all(r.status_code in (200, 503) for r in answers)
        assert post(url, small).status_code == 200  # the slot is free again
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_upload_whose_client_left_while_it_waited_is_not_segmented(lgg_root, tmp_path):
    """An upload waiting for the only slot was segmented when its turn came, though its client
    had given up long before (its timeout): minutes of work for nobody under a burst."""
    from concurrent.futures import ThreadPoolExecutor

    from tumorseg.data.lgg import find_cases

    patient = "TCGA_DU_5872_19950223"
    n = len(find_cases(lgg_root / patient)[0].images)
    volume = case_nifti(lgg_root, patient, slice(0, n), tmp_path / "scan.nii.gz")[0].read_bytes()
    big = big_volume(lgg_root, tmp_path / "big.nii.gz")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TUMORSEG_SERVE_MAX_BUSY": "1", "TUMORSEG_SERVE_BUSY_WAIT": "120", "TMPDIR": str(tmp)}
    url, proc = start_server(env=env)
    try:
        [results] = list(tmp.glob("tumorseg-serve-*"))
        with ThreadPoolExecutor(1) as ex:
            slow = ex.submit(post, url, big, "big.nii.gz")
            wait_health(url, "busy", 1, slow)  # the big volume holds the only slot
            boundary = "tumorsegtest"
            part = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="scan.nii.gz"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")  # fmt: skip
            body = part.encode() + volume + f"\r\n--{boundary}--\r\n".encode()
            host = url.removeprefix("http://")
            head = (f"POST /api/v1/segment HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()  # fmt: skip
            with socket.create_connection(tuple(host.rsplit(":", 1)), timeout=60) as sock:
                sock.sendall(head + body)  # sent whole, then given up on while it waits
                wait_health(url, "waiting", 1, slow)
            wait_health(url, "waiting", 0, slow)  # dropped when its client left, before the slot was free
            assert slow.result().status_code == 200
        assert post(url, volume, "scan.nii.gz").status_code == 200  # after the abandoned one had its turn
        assert len([p for p in results.iterdir() if p.is_dir()]) == 2  # the first and the last, not the abandoned
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tiff_with_thousands_of_tiny_pages_is_refused_at_once(tmp_path):
    """20,000 one-pixel pages (1.8 MB) took 10 s of CPU in tifffile's series, growing as the pages squared."""
    import struct

    from tumorseg.errors import DataError
    from tumorseg.io import image_pixels, read_image

    tags = [(257, 1), (258, 8), (262, 1), (273, 8), (278, 1), (279, 1)]  # 1 pixel at offset 8
    data = bytearray(b"II*\x00" + struct.pack("<I", 10) + b"\x00\x00")
    pages = 20000
    for i in range(pages):
        entries = [(256, 1 + i % 2), *tags]
        nxt = len(data) + 2 + 12 * len(entries) + 4 if i < pages - 1 else 0
        data += struct.pack("<H", len(entries))
        for tag, val in entries:
            data += struct.pack("<HHII", tag, 4, 1, val)
        data += struct.pack("<I", nxt)
    path = tmp_path / "pages.tif"
    path.write_bytes(bytes(data))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"pages.tif: holds more than 64 pages \(a stack\), not one slice"):
        read_image(path)
    assert image_pixels(path) == 0
    assert time.perf_counter() - t0 < 1


def test_complex_tiff_and_overflowing_nifti_are_refused(tmp_path):
    """A complex TIFF was read from its real part (200, a ComplexWarning on the server's stderr); an
    int16 NIfTI whose scl_slope overflows float32 was segmented as a black volume."""
    import nibabel as nib
    import tifffile

    from tumorseg.errors import DataError
    from tumorseg.io import read_image
    from tumorseg.volume import read_nifti

    tifffile.imwrite(tmp_path / "c.tif", (np.random.default_rng(0).random((64, 64)) + 1j).astype(np.complex64))
    with pytest.raises(DataError, match=r"c.tif: pixels of type complex64"):
        read_image(tmp_path / "c.tif")
    img = nib.Nifti1Image(np.full((16, 16, 4), 1000, np.int16), np.eye(4))
    img.header.set_slope_inter(3e38, 0)
    nib.save(img, str(tmp_path / "big.nii"))
    with pytest.raises(DataError, match=r"big.nii: voxel values beyond"):
        read_nifti(tmp_path / "big.nii")


def test_a_malformed_multipart_body_is_explained_to_the_client_and_not_logged():
    """python-multipart once logged "Expected boundary character 45, got 103 at index 2" to the
    server's stderr for a malformed body, while the client got a bare "Invalid multipart data."."""
    url, proc = start_server()
    try:
        kind = "multipart/form-data; boundary=b0undary"
        bad = httpx.post(url + "/api/v1/segment", content=b"garbage", headers={"Content-Type": kind}, timeout=60)
        nob = httpx.post(url + "/api/v1/segment", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"},
                         timeout=60)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    err = proc.stderr.read()
    for r, said in ((bad, "Invalid multipart data"), (nob, "Missing boundary in multipart")):
        assert r.status_code == 400 and said in r.json()["error"] and "curl -F file=@" in r.json()["error"], r.text
    assert "boundary" not in err.lower() and "Traceback" not in err, err


def test_a_burst_of_uploads_leaves_the_page_answering(lgg_root, tmp_path):
    """Uploads waiting for a decoding slot once each held a threadpool thread (and their whole body
    in memory): 45 of them took all 40 threads, and the page, its script and the result images
    waited for the uploads ahead (31 s for `GET /` beside 50). A waiting upload now holds neither."""
    from concurrent.futures import ThreadPoolExecutor

    volume = big_volume(lgg_root, tmp_path / "big.nii.gz")
    small = (lgg_root / SLICE).read_bytes()
    env = {**os.environ, "TUMORSEG_SERVE_MAX_BUSY": "1", "TUMORSEG_SERVE_BUSY_WAIT": "120"}
    url, proc = start_server(env=env)
    try:
        with ThreadPoolExecutor(46) as ex:
            slow = ex.submit(post, url, volume, "big.nii.gz")  # about 5 s of the only slot
            wait_health(url, "busy", 1, slow)
            waiting = [ex.submit(post, url, small) for _ in range(45)]
            wait_health(url, "waiting", 45, slow)
            page, script = httpx.get(url + "/", timeout=60), httpx.get(url + "/static/app.js", timeout=60)
            health = httpx.get(url + "/api/v1/health", timeout=60).json()
            assert health["busy"] == 1 and health["waiting"] == 45, "the page answered only after the volume"
            assert page.status_code == 200 and script.status_code == 200
            assert slow.result().status_code == 200
            assert [w.result().status_code for w in waiting] == [200] * 45
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_other_hosts_and_sites_are_refused_and_patient_data_is_not_stored(lgg_root, tmp_path):
    """Any Host name was served, so a web page could reach this server through a DNS name of its
    own (DNS rebinding) and read its answers; another site's page could post uploads; no answer
    said nosniff, no framing, or (for patient data) no storing."""
    url, proc = start_server("--allowed-host", "scans.example:8443")  # a port given with the name is no matter
    port = url.rsplit(":", 1)[1]
    small = (lgg_root / SLICE).read_bytes()
    try:
        evil = httpx.get(url + "/api/v1/health", headers={"Host": f"attacker.example:{port}"}, timeout=60)
        assert evil.status_code == 400 and "'attacker.example' is not served here" in evil.json()["error"]
        for name in (f"localhost:{port}", f"[::1]:{port}", "scans.example", f"SCANS.example:{port}"):
            assert httpx.get(url + "/api/v1/health", headers={"Host": name}, timeout=60).status_code == 200, name
        other = post(url, small, headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://attacker.example"})
        assert other.status_code == 403 and "another site" in other.json()["error"]
        ok = post(url, small, headers={"Sec-Fetch-Site": "same-origin"})
        assert ok.status_code == 200 and ok.headers["Cache-Control"] == "no-store"
        # Origin is not judged: under Referrer-Policy no-referrer this server's own page sends `Origin: null`
        assert post(url, small, headers={"Origin": "null"}).status_code == 200
        for name in ("[::1]evil.com", f"[::1]:{port}x", "localhost:abc"):  # once served as ::1 / localhost (QA)
            assert httpx.get(url + "/api/v1/health", headers={"Host": name}, timeout=60).status_code == 400, name
        page = httpx.get(url + "/", timeout=60)
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
        path, _ = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(8, 14), tmp_path / "v.nii.gz")
        answer = post(url, path.read_bytes(), "v.nii.gz").json()
        assert httpx.get(url + answer["mask_url"], timeout=60).headers["Cache-Control"] == "no-store"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_names_a_server_answers_to():
    """Bound to 127.0.0.2, `serve` once refused its own URL; `--allowed-host NAME:PORT` matched nothing."""
    from tumorseg.api.middleware import served_names

    assert served_names("127.0.0.1", []) == ["127.0.0.1", "::1", "localhost"]
    assert "127.0.0.2" in served_names("127.0.0.2", []) and served_names("[::1]", []) == served_names("::1", [])
    assert served_names("0.0.0.0", []) == []  # any name: a network server names its own with --allowed-host
    assert "scans.example" in served_names("0.0.0.0", ["Scans.Example:8443"])


def test_limit_concurrency_answers_503_beyond_its_connections():
    """`serve` offered no bound on open connections: idle ones held by a slow client pile up."""
    url, proc = start_server("--limit-concurrency", "2")
    port = int(url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port)):
            # one open, the request is the second (uvicorn counted it: 1 was none); polled, as the
            # close of start_server's own last request may not have been counted yet
            deadline = time.monotonic() + 30
            while httpx.get(url + "/api/v1/health", timeout=60).status_code != 200:
                assert time.monotonic() < deadline, "a second connection was refused under --limit-concurrency 2"
                time.sleep(0.1)
            with socket.create_connection(("127.0.0.1", port)):
                time.sleep(0.3)
                assert httpx.get(url + "/api/v1/health", timeout=60).status_code == 503
        deadline = time.monotonic() + 30
        while httpx.get(url + "/api/v1/health", timeout=60).status_code != 200:  # once they close
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
