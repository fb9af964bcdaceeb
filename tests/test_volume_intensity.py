"""`--intensity volume`: one intensity scale per volume and channel, in training and in every
inference path (evaluate, predict on a patient's slices, single slices, ONNX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_PATIENTS, cli_here, cli_tiny_run

from tumorseg.data.lgg import find_cases, load_case
from tumorseg.data.transforms import resize_uint8, volume_normalize
from tumorseg.io import read_image
from tumorseg.metrics import confusion_counts, dice


def test_volume_normalize_one_scale_per_channel():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 120, (4, 3, 32, 32), dtype=np.uint8)
    x[:, :, :8] = 0  # background
    x[2] //= 2  # a darker slice stays darker: the scale is the volume's, not the slice's
    y = volume_normalize(x)
    assert y.dtype == np.uint8 and y.shape == x.shape
    assert (y[x == 0] == 0).all()
    for c in range(3):
        nz = x[:, c][x[:, c] > 0]
        scale = 255 / np.quantile(nz, 0.99)
        assert np.abs(y[:, c].astype(float) - np.clip(x[:, c] * scale, 0, 255)).max() <= 0.5 + 1e-9
        assert np.quantile(y[:, c][y[:, c] > 0], 0.99) >= 254
    assert y[2].mean() < 0.6 * y[1].mean()
    assert (volume_normalize(np.zeros((2, 3, 4, 4), np.uint8)) == 0).all()


def test_volume_normalize_differs_from_per_slice():
    """A slice alone is stretched to its own quantile; in its volume it keeps the volume's."""
    x = np.full((2, 1, 8, 8), 100, np.uint8)
    x[1] = 50
    assert volume_normalize(x)[1].max() == 128  # 50 * 255 / 100 (the volume's 99th percentile)
    assert volume_normalize(x[1:]).max() == 255


def test_load_case_scales_the_full_size_volume_before_resizing(lgg_root: Path):
    case = find_cases(lgg_root / SMALL_PATIENTS[0])[0]
    full = load_case(case, None)
    scaled = load_case(case, 64, intensity="volume")
    assert np.array_equal(scaled.images, resize_uint8(volume_normalize(full.images), 64))
    assert np.array_equal(scaled.masks, load_case(case, 64).masks)


@pytest.fixture(scope="module")
def volume_run(lgg_root: Path, tmp_path_factory) -> Path:
    """A tiny model with `--intensity volume`, trained by the CLI for 2 epochs on 3 real patients."""
    base = tmp_path_factory.mktemp("volume_run")
    cli_tiny_run(lgg_root, base, "--intensity", "volume")
    return base


def test_predictor_scales_volumes_and_single_slices(volume_run):
    from tumorseg.infer import Predictor

    pred = Predictor.from_checkpoint(volume_run / "run" / "last.safetensors", backend="torch")
    assert pred.config.intensity == "volume"
    images = load_case(find_cases(volume_run / "lgg")[0], None).images
    assert np.array_equal(pred.inputs(images, volume=True), volume_normalize(images))
    alone = pred.inputs(images, volume=False)
    for s in (0, len(images) // 2):
        assert np.array_equal(alone[s], volume_normalize(images[s : s + 1])[0])
    assert not np.array_equal(alone, pred.inputs(images, volume=True))


def test_predict_on_a_patient_folder_matches_evaluate(volume_run, tmp_path):
    """`predict` on a patient's folder scales the slices as one volume, as `evaluate` does,
    so its masks score exactly what `evaluate` reports, also when the series spans batches."""
    from tumorseg.evaluation import evaluate

    weights = volume_run / "run" / "last.safetensors"
    res = evaluate(volume_run / "lgg", weights, backend="torch", log=lambda *a: None)
    (row,) = res["per_patient"]
    folder = volume_run / "lgg" / row["patient"]
    case = load_case(find_cases(folder)[0], None)
    r = cli_here(
        "predict",
        str(folder),
        "--out",
        str(tmp_path),
        "--weights",
        str(weights),
        "--backend",
        "torch",
        "--batch-size",
        "4",
    )
    assert r.returncode == 0, r.stderr
    assert len(case.names) > 4
    preds = np.stack([read_image(tmp_path / f"{n}_pred.png") > 127 for n in case.names])
    assert dice(confusion_counts(preds, case.full_masks)) == pytest.approx(row["dice"], abs=1e-12)


def test_onnx_takes_the_volume_scaled_slices(volume_run):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tumorseg.infer import Predictor

    weights = volume_run / "run" / "last.safetensors"
    case = load_case(find_cases(volume_run / "lgg")[0], None)
    torch_p = Predictor.from_checkpoint(weights, backend="torch").probabilities(case.images, volume=True)
    onnx_p = Predictor.from_checkpoint(weights, backend="onnx").probabilities(case.images, volume=True)
    assert np.abs(torch_p - onnx_p).max() < 1e-3
