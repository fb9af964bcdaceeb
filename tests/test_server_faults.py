"""The server under fault: disconnects mid-upload, a slow client, a burst of bad uploads."""

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

SLICE = "TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_12.png"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def multipart_head(boundary: str, length: int) -> bytes:
    return (
        "POST /api/v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f'Content-Length: {length}\r\n\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()


def good(url, lgg_root):
    r = httpx.post(url + "/api/v1/segment", files={"file": ("s.png", (lgg_root / SLICE).read_bytes())}, timeout=60)
    return r.status_code, r.json()


def test_faults_leave_the_server_up_and_memory_flat(server_process, lgg_root):
    url, proc = server_process
    port = int(url.rsplit(":", 1)[1])
    assert good(url, lgg_root)[0] == 200
    baseline = rss_mb(proc.pid)
    payload = (lgg_root / SLICE).read_bytes()

    # 1. clients that disconnect mid-upload
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(multipart_head("b0undary", len(payload) + 200))
            s.sendall(payload[: len(payload) // 3])
    # 2. a slow client, trickling its upload, then giving up
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(multipart_head("b0undary", len(payload) + 200))
        for i in range(0, 2000, 100):
            s.sendall(payload[i : i + 100])
            time.sleep(0.05)
    # 3. a burst of 50 concurrent bad uploads
    bad = [b"", b"text, not an image", payload[:500], b"\x89PNG\r\n\x1a\n" + b"\0" * 100]

    def send(i):
        return httpx.post(url + "/api/v1/segment", files={"file": ("x.png", bad[i % 4])}, timeout=60).status_code

    with ThreadPoolExecutor(50) as ex:
        codes = list(ex.map(send, range(50)))
    assert all(400 <= c < 500 for c in codes), codes
    # the server is still up and answers a good request
    status, body = good(url, lgg_root)
    assert status == 200 and body["tumor_area_px"] > 0
    assert proc.poll() is None
    time.sleep(1)
    assert rss_mb(proc.pid) < baseline + 60, (baseline, rss_mb(proc.pid))


def test_two_workers_share_volume_results_and_clean_up(lgg_root, tmp_path):
    """With `--workers 2` every mask_url answers, whichever worker takes the download, and the
    results folder is gone after the server stops."""
    from conftest import case_nifti, start_server

    path, _ = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(10, 14), tmp_path / "scan.nii.gz")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    url, proc = start_server("--workers", "2", env={**os.environ, "TMPDIR": str(tmp)})
    try:
        [folder] = list(tmp.glob("tumorseg-serve-*"))
        urls = []
        for _ in range(6):
            r = httpx.post(url + "/api/v1/segment", files={"file": ("v", path.read_bytes())}, timeout=120)
            assert r.status_code == 200, r.text
            urls.append(r.json()["mask_url"])
        codes = [httpx.get(url + u, timeout=60).status_code for u in urls for _ in range(2)]
        assert codes == [200] * 12
        assert len(list(folder.glob("*/mask.nii.gz"))) == 6
        assert not list(folder.glob("*.part"))  # every result folder finished and renamed
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not list(tmp.glob("tumorseg-serve-*"))


def test_old_volume_results_expire(tmp_path):
    from tumorseg.api.app import expire_results

    old, new, left = tmp_path / ("a" * 32), tmp_path / ("b" * 32), tmp_path / ("c" * 32 + ".part")
    for folder in (old, new, left):
        folder.mkdir()
        (folder / "0-mri.png").write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for folder in (old, left):  # `left`: unfinished, from a worker that died while writing it
        os.utime(folder, (two_hours_ago, two_hours_ago))
    mine = tmp_path / "backups"  # a folder of the user's own, in a results folder they chose
    mine.mkdir()
    os.utime(mine, (two_hours_ago, two_hours_ago))
    expire_results(tmp_path, ttl=3600)
    assert not old.exists() and not left.exists() and new.exists() and mine.exists()
    expire_results(tmp_path / "gone", ttl=3600)  # the folder removed at shutdown: nothing to do


def test_results_beyond_the_size_cap_go_oldest_first(tmp_path):
    """Results were kept an hour whatever their size: uploads of large volumes could fill the disk."""
    from tumorseg.api.app import expire_results

    now = time.time()
    folders = [tmp_path / (c * 32) for c in "abcd"]
    for age, folder in zip((300, 200, 100, 0), folders):
        folder.mkdir()
        (folder / "flair.npy").write_bytes(b"x" * 1000)
        os.utime(folder, (now - age, now - age))
    unfinished = tmp_path / ("e" * 32 + ".part")  # being written: never counted or removed by size
    unfinished.mkdir()
    (unfinished / "flair.npy").write_bytes(b"x" * 5000)
    expire_results(tmp_path, max_bytes=2500)
    assert [f.exists() for f in folders] == [False, False, True, True] and unfinished.exists()
