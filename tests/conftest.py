"""Shared fixtures. Real data comes from ../shared/data; tests skip when it is absent."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one PyTorch thread each, and their subprocesses
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# ONNX graphs the tests make stay in the repository's ignored .pytest_cache, not the user's ~/.cache
os.environ["TUMORSEG_CACHE"] = str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "onnx")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LGG = SHARED / "lgg"
TIF_SAMPLE = SHARED / "lgg-tif-sample"
SMALL_PATIENTS = ("TCGA_CS_4941_19960909", "TCGA_CS_4943_20000902")


def _absent(why: str) -> None:
    """Skip a test whose data is absent; fail it under TUMORSEG_REQUIRE_DATA=1 (CI, which has the
    data: a moved folder would otherwise turn half the suite into green skips)."""
    if os.environ.get("TUMORSEG_REQUIRE_DATA") == "1":
        pytest.fail(f"{why}; TUMORSEG_REQUIRE_DATA=1 requires it")
    pytest.skip(why)


@pytest.fixture(scope="session")
def lgg_root() -> Path:
    if not LGG.is_dir():
        _absent(f"real LGG data not found at {LGG} (put the kaggle_3m folder there)")
    return LGG


@pytest.fixture(scope="session")
def tif_root() -> Path:
    if not TIF_SAMPLE.is_dir():
        _absent(f"TIFF sample not found at {TIF_SAMPLE}")
    return TIF_SAMPLE


def copy_slices(src: Path, dst: Path, numbers: range) -> None:
    """Copy slices `numbers` (and their masks) of one patient folder."""
    dst.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        for p in src.glob(f"{src.name}_{n}.*"):
            shutil.copy(p, dst / p.name)
        for p in src.glob(f"{src.name}_{n}_mask.*"):
            shutil.copy(p, dst / p.name)


def case_nifti(lgg_root: Path, patient: str, slices: slice, path: Path) -> tuple[Path, np.ndarray]:
    """Write slices of a real patient as a RAS NIfTI volume (0.9 x 0.9 x 3 mm): (path, its
    (S, C, H, W) slices)."""
    import nibabel as nib

    from tumorseg.data.lgg import find_cases, load_case

    images = load_case(find_cases(lgg_root / patient)[0], None).images[slices]
    arr = np.ascontiguousarray(images.transpose(3, 2, 0, 1)[::-1, ::-1])  # RAS (X, Y, Z, C)
    nib.save(nib.Nifti1Image(arr, np.diag([0.9, 0.9, 3.0, 1.0])), str(path))
    return path, images


@pytest.fixture
def tiny_lgg(lgg_root: Path, tmp_path: Path) -> Path:
    """Two real patients, 12 slices each (tumor and empty), copied to a temp folder."""
    root = tmp_path / "lgg"
    for pid in SMALL_PATIENTS:
        copy_slices(lgg_root / pid, root / pid, range(8, 20))
    return root


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height but whose data is tiny (a decompression bomb probe)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def cli_tiny_run(lgg_root: Path, base: Path, *options: str) -> subprocess.CompletedProcess:
    """`tumorseg train` with `options` on the 3 patients of `tiny_run`, copied to `base`/lgg, for
    2 epochs into `base`/run; fails the test when the command fails."""
    data = base / "lgg"
    for pid in (*SMALL_PATIENTS, "TCGA_CS_4944_20010208"):
        copy_slices(lgg_root / pid, data / pid, range(6, 22))
    r = subprocess.run(
        [sys.executable, "-m", "tumorseg", "train", "--data", str(data), "--out", str(base / "run"), "--epochs", "2",
         "--batch-size", "4", "--lr", "3e-3", "--val-frac", "0", "--test-frac", "0.34", "--threads", "2",
         "--base", "4", "--depth", "2", "--image-size", "64", *options],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="session")
def tiny_run(lgg_root: Path, tmp_path_factory) -> Path:
    """A tiny model trained for 2 epochs on 3 real patients (1 held out as its test split)."""
    from tumorseg.config import validate_config
    from tumorseg.train import fit

    base = tmp_path_factory.mktemp("tiny_run")
    data = base / "lgg"
    for pid in (*SMALL_PATIENTS, "TCGA_CS_4944_20010208"):
        copy_slices(lgg_root / pid, data / pid, range(6, 22))
    cfg = validate_config(
        {
            "data": str(data),
            "out": str(base / "run"),
            "epochs": 2,
            "batch_size": 4,
            "lr": 3e-3,
            "val_frac": 0.0,
            "test_frac": 0.34,
            "threads": 2,
            "model": {"base": 4, "depth": 2, "image_size": 64},
        }  # fmt: skip
    )
    fit(cfg, progress=False, log=lambda *a: None)
    return base / "run"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_process():
    """A real `tumorseg serve` (shipped model, 2 MB upload limit) on 127.0.0.1 and a free port:
    (url, process)."""
    pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    url, proc = start_server("--max-upload-mb", "2")
    yield url, proc
    proc.terminate()
    proc.wait(timeout=20)


def start_server(*options: str, env: dict | None = None, tries: int = 600) -> tuple[str, subprocess.Popen]:
    """`tumorseg serve` with `options` on 127.0.0.1 and a free port, once it answers: (url, process)."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tumorseg", "serve", "--port", str(port), *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(tries):
        try:
            if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            time.sleep(0.1)
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stderr.read()}")
    proc.kill()
    pytest.fail("server did not start")


@pytest.fixture(scope="module")
def server(server_process):
    """The URL of a real server (see server_process)."""
    return server_process[0]


def cli_here(*args: object, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`tumorseg ARGS` run by the CLI's own `main()` in this process, as a CompletedProcess: no
    2-4 s of a subprocess starting PyTorch. What needs a process of its own stays a subprocess:
    signals, broken pipes, start-up time, torchrun, serve, and modules hidden from the import.

    The call sees what a fresh process would: Python's default warning filters and logging's
    last-resort handler write to its stderr (pytest would take both), and the process-wide
    state the CLI sets is put back afterwards (argv, cwd, environment, signal handlers, PyTorch's
    threads, seed and deterministic mode, loggers' levels, the excepthook, tumorseg's
    said-once notes). It fails after 300 s, as the subprocess did; Ctrl-C stops the test run.
    `env`, like subprocess's, replaces the environment for the call."""
    import contextlib
    import io
    import logging
    import signal
    import warnings

    import torch  # before stderr is redirected: its log handler binds the stream it finds

    from tumorseg import cli
    from tumorseg.data import lgg

    def too_long(signum, frame):
        raise TimeoutError(f"cli_here: tumorseg {' '.join(map(str, args))} ran over 300 s")

    out, err = io.StringIO(), io.StringIO()
    root, loggers = logging.getLogger(), dict(logging.root.manager.loggerDict)
    saved = (sys.argv, os.getcwd(), dict(os.environ), signal.getsignal(signal.SIGINT), sys.excepthook,
             torch.get_num_threads(), torch.get_rng_state(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), set(lgg._SAID), root.handlers[:],
             {n: lg.level for n, lg in loggers.items() if isinstance(lg, logging.Logger)} | {"": root.level},
             )  # fmt: skip
    alarm = signal.signal(signal.SIGALRM, too_long)
    sigterm = signal.getsignal(signal.SIGTERM)  # main() sets its own, as for the signals above
    code: int | str | None = 0
    try:
        sys.argv = ["tumorseg", *map(str, args)]
        if cwd is not None:
            os.chdir(cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        lgg._SAID.clear()
        root.handlers = []  # no handler: logging's last resort prints warnings to stderr, as in a fresh process
        root.setLevel(logging.WARNING)
        signal.alarm(300)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.resetwarnings()  # Python's defaults, not pytest's capture
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = lambda m, c, f, n, *_: err.write(warnings.formatwarning(m, c, f, n))
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code
    except Exception as exc:
        exc.add_note(f"cli_here: tumorseg {' '.join(map(str, args))}\nstdout: {out.getvalue()[-3000:]}\n"
                     f"stderr: {err.getvalue()[-3000:]}")  # fmt: skip
        raise
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, alarm)
        sys.argv, cwd_before, environ, sigint, sys.excepthook = saved[:5]
        os.chdir(cwd_before)
        os.environ.clear()
        os.environ.update(environ)
        signal.signal(signal.SIGINT, sigint)
        signal.signal(signal.SIGTERM, sigterm)
        torch.set_num_threads(saved[5])
        torch.set_rng_state(saved[6])
        if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (
            saved[7],
            saved[8],
        ):  # only when changed: the call imports torch._inductor
            torch.use_deterministic_algorithms(saved[7], warn_only=saved[8])
        lgg._SAID.clear()
        lgg._SAID.update(saved[9])
        root.handlers = saved[10]
        for name, level in saved[11].items():
            logging.getLogger(name or None).setLevel(level)
    code = 0 if code is None else code if isinstance(code, int) else 1
    if code == 130:  # the CLI turned a Ctrl-C into its exit status: stop the test run as pytest would
        raise KeyboardInterrupt
    return subprocess.CompletedProcess(["tumorseg", *map(str, args)], code, out.getvalue(), err.getvalue())
