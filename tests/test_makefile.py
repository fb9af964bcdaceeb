"""`make setup`'s choice of PyTorch, with a stand-in pip that records what it is asked to do."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setup(venv: Path, *args: str) -> list[str]:
    """Run `make setup` on `venv` (python stands aside, pip only records); the pip calls it made."""
    log = venv / "pip.log"
    log.unlink(missing_ok=True)
    env = {**os.environ}
    env.pop("TORCH", None)
    subprocess.run(["make", "-s", "-C", str(ROOT), "setup", f"VENV={venv}", "PY=true", *args],
                   check=True, capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_keeps_the_torch_a_venv_was_given(tmp_path):
    """A venv made with TORCH=<cuda build>, or by hand, had its torch replaced by the default
    torch==2.13.0 (a multi-GB CUDA build from PyPI) by the next plain `make test` or `make demo`."""
    venv = tmp_path / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "pip").write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/../pip.log"\n')
    (venv / "bin" / "pip").chmod(0o755)
    fresh = _setup(venv)  # a new venv: the default torch
    assert "install -q torch==2.13.0" in fresh and not any(c.startswith("uninstall") for c in fresh)
    time.sleep(1.1)
    cuda = "torch --index-url https://download.pytorch.org/whl/cu124"
    chosen = _setup(venv, f"TORCH={cuda}")
    assert chosen.index("uninstall -q -y torch") < chosen.index(f"install -q {cuda}")
    assert _setup(venv) == []  # plain make afterwards: nothing to do
    time.sleep(1.1)
    day = 86400  # pyproject.toml newer than the install, the install newer than the torch chosen
    os.utime(venv / ".torch", (time.time() - 11 * day,) * 2)
    os.utime(venv / "bin" / "tumorseg", (time.time() - 10 * day,) * 2)
    again = _setup(venv)
    assert f"install -q {cuda}" in again and not any(c.startswith("uninstall") for c in again)
    hand = tmp_path / "hand"  # made by hand as the README shows: no .torch, tumorseg installed
    shutil.copytree(venv / "bin", hand / "bin")
    os.utime(hand / "bin" / "tumorseg", (time.time() - 10 * day,) * 2)
    kept = _setup(hand)
    assert kept and not any("torch" in c for c in kept), kept
