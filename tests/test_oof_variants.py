"""scripts/oof_variants.py: the variants' plain score is the fold checkpoint's own Dice on the real
files, and slice smoothing mixes only neighbouring slices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import cli_tiny_run

from tumorseg.checkpoint import build_model, load_checkpoint
from tumorseg.data.lgg import find_cases, load_case
from tumorseg.infer import keep_largest_3d, postprocess, slice_probabilities
from tumorseg.metrics import confusion_counts, dice

SCRIPT = Path(__file__).parents[1] / "scripts" / "oof_variants.py"
sys.path.insert(0, str(SCRIPT.parent))
from oof_variants import input_size, smooth_slices  # noqa: E402


def test_smooth_slices_and_input_size():
    p = np.zeros((4, 2, 2))
    p[1] = 1.0
    q = smooth_slices(p, 0.25)
    assert np.allclose(q[:, 0, 0], [0.25, 0.5, 0.25, 0.0])  # edges repeat their own slice
    assert np.allclose(smooth_slices(np.full((3, 2, 2), 0.7), 0.15), 0.7)
    assert [input_size(128, s, 4) for s in (7 / 8, 1.0, 9 / 8)] == [112, 128, 144]
    assert input_size(64, 9 / 8, 2) == 72


def test_plain_variant_is_the_checkpoints_dice_on_the_real_files(lgg_root, tmp_path):
    cli_tiny_run(lgg_root, tmp_path, "--folds", "2", "--fold", "0")
    run, data, out = tmp_path / "run", tmp_path / "lgg", tmp_path / "variants.json"
    r = subprocess.run([sys.executable, str(SCRIPT), str(run), "--data", str(data), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    scores = json.loads(out.read_text())
    assert len(scores) == 24 and "zs25@0.6" in scores and "ms3tta@0.4" in scores
    ckpt = load_checkpoint(run / "last.safetensors")
    (pid,) = ckpt.meta["split"]["val"]
    case = load_case({c.id: c for c in find_cases(data)}[pid], None)
    probs = slice_probabilities(build_model(ckpt).eval(), ckpt.config.model, case.images)
    expected = dice(confusion_counts(keep_largest_3d(postprocess(probs, 0.5)), case.full_masks))
    assert abs(scores["plain@0.5"][pid] - expected) < 1e-6
    assert f"plain@0.5    mean {expected:.4f}" in r.stdout
