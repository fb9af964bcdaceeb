"""A built wheel carries the shipped model, so `pip install .` segments without --weights."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("tumorseg-lgg-unet.safetensors", "tumorseg-lgg-unet.int8.onnx", "MODEL_CARD.md", "curves.png",
           "failure_modes.png", "LICENSE.md")  # fmt: skip


def _source_copy(dst: Path) -> Path:
    """The files a wheel is built from, copied, so the build leaves the checkout untouched."""
    dst.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dst / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "weights")
    shutil.copytree(ROOT / "src", dst / "src", ignore=skip)
    (dst / "weights").mkdir()
    for name in SHIPPED:
        shutil.copy(ROOT / "weights" / name, dst / "weights" / name)
    return dst


def _pip_wheel(src: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_the_wheel_carries_the_shipped_model_and_uses_it_by_default(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    done = _pip_wheel(_source_copy(tmp_path / "src"), tmp_path / "dist")
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("tumorseg-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for name in SHIPPED:
            assert zf.read(f"tumorseg/weights/{name}") == (ROOT / "weights" / name).read_bytes(), name
        info = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(info).decode()
        licenses = info.replace("METADATA", "licenses/")
    # the wheel holds non-commercial weights: its metadata says so, with both license texts
    assert "License-Expression: Apache-2.0 AND CC-BY-NC-SA-4.0" in meta
    assert {f"{licenses}LICENSE", f"{licenses}weights/LICENSE.md"} <= set(zipfile.ZipFile(wheel).namelist())
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:  # a wheel is a zip laid out as site-packages
        zf.extractall(site)
    code = (
        "from tumorseg.infer import default_weights, int8_graph; w = default_weights(); print(w); print(int8_graph(w))"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    weights, graph = (Path(line) for line in done.stdout.split())
    assert weights == site / "tumorseg" / "weights" / SHIPPED[0]
    assert graph == site / "tumorseg" / "weights" / SHIPPED[1]


def test_a_wheel_is_not_built_without_the_shipped_model(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    src = _source_copy(tmp_path / "src")
    (src / "weights" / SHIPPED[0]).unlink()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(tmp_path),
        str(src),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "the shipped model's file is missing" in done.stdout + done.stderr
