"""A wheel built from the sdist carries the shipped model, so `pip install .` segments without
--weights."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("setuptools")

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = sorted(p.name for p in (ROOT / "weights").iterdir() if p.is_file())


def _source_copy(dst: Path) -> Path:
    """The files a wheel is built from, copied, so the build leaves the checkout untouched."""
    dst.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "src", dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "weights", dst / "weights")
    return dst


def _pip_wheel(source: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out)]
    return subprocess.run([*cmd, str(source)], capture_output=True, text=True, timeout=300)


def test_the_wheel_carries_the_shipped_model_and_uses_it_by_default(tmp_path: Path) -> None:
    src = _source_copy(tmp_path / "src")
    done = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "sdist")], cwd=src,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    sdist = next((tmp_path / "sdist").glob("tumorseg-*.tar.gz"))
    with tarfile.open(sdist) as tf:  # MANIFEST.in: the sdist has weights/, or its wheel would lack them
        assert {f"weights/{n}" for n in WEIGHTS} <= {m.name.partition("/")[2] for m in tf.getmembers()}
    done = _pip_wheel(sdist, tmp_path / "dist")  # as pip installs from PyPI: sdist, then wheel
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("tumorseg-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for name in WEIGHTS:
            assert zf.read(f"tumorseg/weights/{name}") == (ROOT / "weights" / name).read_bytes(), name
        info = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        licenses = info.replace("METADATA", "licenses/")
        # the wheel holds non-commercial weights: its metadata says so, with both license texts
        assert "License-Expression: Apache-2.0 AND CC-BY-NC-SA-4.0" in zf.read(info).decode()
        assert {f"{licenses}LICENSE", f"{licenses}weights/LICENSE.md"} <= set(zf.namelist())
        site = tmp_path / "site"
        zf.extractall(site)  # a wheel is a zip laid out as site-packages
    code = "from tumorseg.infer import default_weights as d, int8_graph as g; print(d()); print(g(d()))"
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    weights, graph = (Path(line) for line in done.stdout.split())
    assert weights == site / "tumorseg" / "weights" / "tumorseg-lgg-unet.safetensors"
    assert graph == site / "tumorseg" / "weights" / "tumorseg-lgg-unet.int8.onnx"


def test_a_wheel_is_not_built_without_the_shipped_model(tmp_path: Path) -> None:
    src = _source_copy(tmp_path / "src")
    (src / "weights" / "tumorseg-lgg-unet.safetensors").unlink()
    done = _pip_wheel(src, tmp_path / "dist")
    assert done.returncode != 0
    assert "the shipped model's file is missing" in done.stdout + done.stderr
