"""`tumorseg check-data` on real slices with injected problems; `train` runs the same checks."""

import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from tumorseg.data.check import check_data


def run(*args):
    return subprocess.run([sys.executable, "-m", "tumorseg", *map(str, args)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_clean_data_reports_balance(tiny_lgg):
    report = check_data(tiny_lgg)
    assert report["patients"] == 2 and report["slices"] == 24 and not report["errors"]
    assert 0 < report["slices_with_tumor"] < 24 and 0 < report["tumor_pixel_fraction"] < 0.1


def test_every_problem_is_reported(tiny_lgg, tmp_path):
    a, b = sorted(p for p in tiny_lgg.iterdir())
    next(a.glob("*_8_mask.png")).unlink()  # image without mask
    next(b.glob("*_9.png")).unlink()  # mask without image
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(next(a.glob("*_10_mask.png")))  # size mismatch
    m = next(b.glob("*_11_mask.png"))
    arr = np.asarray(Image.open(m)).copy()
    arr[0, :5] = 77
    Image.fromarray(arr).save(m)  # non-binary
    src = next(a.glob("*_12.png"))
    shutil.copy(src, b / (b.name + "_40.png"))  # duplicate slice, with its mask
    shutil.copy(next(a.glob("*_12_mask.png")), b / (b.name + "_40_mask.png"))
    empty = tiny_lgg / "TCGA_XX_0000_20000101"  # a patient without tumor
    empty.mkdir()
    img = next(a.glob("*_13.png"))
    shutil.copy(img, empty / "TCGA_XX_0000_20000101_1.png")
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(empty / "TCGA_XX_0000_20000101_1_mask.png")
    report = check_data(tiny_lgg)
    text = "\n".join(report["errors"] + report["warnings"])
    for expected in ("_8.png: image has no mask", "_9_mask.png: mask has no image", "_10_mask.png: mask is 12x10",
                     "mask is not binary", "duplicate of", "TCGA_XX_0000_20000101: patient has no tumor"):  # fmt: skip
        assert expected in text, expected
    r = run("check-data", tiny_lgg)
    assert r.returncode == 1 and "image has no mask" in r.stdout
    r = run("train", "--data", tiny_lgg, "--out", tmp_path / "r", "--epochs", "1")
    assert r.returncode == 2 and "data errors" in r.stderr and "Traceback" not in r.stderr
