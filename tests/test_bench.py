"""`tumorseg bench`: each backend timed on this machine, its probabilities against torch's."""

import json
import shutil

import numpy as np
from conftest import cli_here

from tumorseg.io import write_png


def test_bench_times_every_backend_on_real_slices_against_torch(lgg_root, tmp_path):
    slices = tmp_path / "slices"
    slices.mkdir()
    for n in (11, 12, 13):  # three real slices with tumor (their masks are not timed)
        for name in (f"TCGA_CS_4941_19960909_{n}.png", f"TCGA_CS_4941_19960909_{n}_mask.png"):
            shutil.copy(lgg_root / "TCGA_CS_4941_19960909" / name, slices / name)
    r = cli_here("bench", str(slices), "--repeats", "1", "--batch-size", "2", "--out", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["slices"] == 3 and result["synthetic"] is False and result["auto"] == "onnx-int8"
    rows = {row["backend"]: row for row in result["rows"]}
    assert set(rows) == {"torch", "onnx", "onnx-int8"} and all(row["images_per_s"] > 0 for row in rows.values())
    assert rows["torch"]["max_prob_diff"] == 0 and rows["onnx"]["max_prob_diff"] < 1e-3
    assert rows["onnx"]["mask_dice"] > 0.999 and 0.9 < rows["onnx-int8"]["mask_dice"] < 1  # int8 moves edge pixels
    assert rows["onnx-int8"]["pixels_differ"] > 0 and rows["torch"]["mask_dice"] == 1
    assert "auto uses onnx-int8 here" in r.stdout and "3 slices of 256x256" in r.stdout, r.stdout


def test_bench_says_what_cannot_run_and_refuses_slices_of_two_sizes(tiny_run, lgg_root, tmp_path):
    r = cli_here("bench", "--weights", str(tiny_run / "last.safetensors"), "--backend", "onnx-int8", "--repeats", "1")
    assert r.returncode == 0, r.stderr
    assert "64 synthetic slices of 256x256" in r.stdout and "which are not MRI" in r.stdout, r.stdout
    assert "onnx-int8  not available: " in r.stdout and "int8" in r.stdout.split("not available: ")[1], r.stdout
    (tmp_path / "two").mkdir()
    shutil.copy(lgg_root / "TCGA_CS_4941_19960909" / "TCGA_CS_4941_19960909_12.png", tmp_path / "two" / "a.png")
    write_png(tmp_path / "two" / "b.png", np.zeros((64, 64, 3), np.uint8))
    r = cli_here("bench", str(tmp_path / "two"), "--repeats", "1")
    assert r.returncode == 2 and "the slices have 2 sizes (64x64, 256x256)" in r.stderr, r.stderr
    for out, said in ((tmp_path, "--out is the JSON file to write, and this is a folder"),
                      (tmp_path / "two" / "a.png" / "b.json", "is a file"),
                      (tmp_path / "two" / "a.png" / "sub" / "b.json", "a.png")):  # fmt: skip
        r = cli_here("bench", "--out", str(out))  # refused before minutes of timing, not after
        assert r.returncode == 2 and said in r.stderr and "images/s" not in r.stdout, r.stderr
