"""scripts/cv_3d_rules.py: the 3D post-processing settings do what their names say, and the default
setting is the fold checkpoint's own Dice on the real files."""

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

SCRIPT = Path(__file__).parents[1] / "scripts" / "cv_3d_rules.py"
sys.path.insert(0, str(SCRIPT.parent))
from cv_3d_rules import apply, bridge_parts, close_slices, drop_weak, part_setting  # noqa: E402


def test_bridge_parts_split_a_block_touching_the_tumor():
    m = np.zeros((6, 20, 20), bool)
    m[0:3, 2:10, 2:10] = True  # a tumor: 3 slices of 64 px
    m[3:6, 9:19, 9:19] = True  # a larger block touching it by one pixel
    assert keep_largest_3d(m).sum() == m.sum()  # 26-connected: one part
    assert bridge_parts(m, 0.1).sum() == 300  # the block alone, the larger part
    solid = np.zeros_like(m)
    solid[0:6, 3:10, 3:10] = True
    assert bridge_parts(solid, 0.25).sum() == solid.sum()  # a solid tumor stays whole


def test_gentler_parts_keep_a_second_piece_the_largest_step_drops():
    probs = np.zeros((8, 20, 20), np.float32)
    probs[0:4, 2:10, 2:10] = 0.9  # 256 voxels
    probs[6:8, 2:8, 2:8] = 0.9  # a second piece two slices away: 72 voxels, 0.28 of the first
    assert apply(probs, 0, "largest").sum() == 256
    assert apply(probs, 0, "frac=0.25").sum() == 328
    assert apply(probs, 0, "frac=0.5").sum() == 256
    assert apply(probs, 0, "all").sum() == 328
    assert part_setting("frac=0.1") == "frac=0.1"
    for bad in ("frac=x", "largest=1", "biggest"):
        try:
            part_setting(bad)
        except Exception as e:
            assert bad in str(e)
        else:
            raise AssertionError(bad)


def test_closing_fills_an_open_rim_and_weak_parts_go():
    rim = np.zeros((1, 30, 30), bool)
    rim[0, 5:25, 5:25] = True
    rim[0, 10:20, 10:25] = False  # a core open to the right, 10 px wide
    assert close_slices(rim, 0) is rim
    assert close_slices(rim, 6)[0, 10:20, 10:20].all()  # radius 6 closes it
    assert not close_slices(rim, 3)[0, 12:18, 12:18].any()  # radius 3 does not
    probs = np.where(rim, 0.6, 0.0)
    assert not drop_weak(rim, probs, 0.8).any()
    probs[0, 6, 6] = 0.9
    assert (drop_weak(rim, probs, 0.8) == rim).all()


def test_default_setting_is_the_checkpoints_dice_on_the_real_files(lgg_root, tmp_path):
    cli_tiny_run(lgg_root, tmp_path, "--folds", "2", "--fold", "0")
    run, data, out = tmp_path / "run", tmp_path / "lgg", tmp_path / "rules.json"
    cmd = [sys.executable, str(SCRIPT), str(run), "--data", str(data), "--cache", str(tmp_path / "cache"),
           "--json", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    ckpt = load_checkpoint(run / "last.safetensors")
    (pid,) = ckpt.meta["split"]["val"]
    case = load_case({c.id: c for c in find_cases(data)}[pid], None)
    probs = slice_probabilities(build_model(ckpt).eval(), ckpt.config.model, case.images)
    expected = dice(confusion_counts(keep_largest_3d(postprocess(probs, 0.5)), case.full_masks))
    scores = result["per_patient"]["run"][pid]
    assert len(scores) == 12
    assert abs(scores["close=0 parts=largest"] - expected) < 2e-3  # probabilities cached as float16
    assert (tmp_path / "cache" / "run" / f"{pid}.npy").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # from the cache
    assert again.returncode == 0, again.stderr
    assert json.loads(out.read_text())["per_patient"] == result["per_patient"]
