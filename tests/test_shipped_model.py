"""The shipped weights: they load by default and keep their quality on fixed test patients."""

import json
from pathlib import Path

import pytest

from tumorseg.checkpoint import load_checkpoint
from tumorseg.data.lgg import find_cases, load_case
from tumorseg.infer import DEFAULT_WEIGHTS, Predictor
from tumorseg.metrics import confusion_counts, dice

REFERENCE = Path(__file__).resolve().parents[1] / "weights" / "regression.json"


def test_shipped_weights_are_small_and_valid():
    assert DEFAULT_WEIGHTS.is_file(), "the shipped model is missing from weights/"
    assert DEFAULT_WEIGHTS.stat().st_size <= 16 * 1024 * 1024
    ck = load_checkpoint(DEFAULT_WEIGHTS)
    ref = json.loads(REFERENCE.read_text())
    for pid in ref["patients"]:
        assert pid in ck.meta["split"]["test"], f"{pid} must be a test patient, never trained on"


@pytest.mark.parametrize("pid", sorted(json.loads(REFERENCE.read_text())["patients"]))
def test_dice_on_fixed_test_patients(lgg_root, pid):
    ref = json.loads(REFERENCE.read_text())
    predictor = Predictor.from_checkpoint(threshold=ref["threshold"])  # no path: the shipped model
    case = load_case(find_cases(lgg_root / pid)[0], None)
    d = dice(confusion_counts(predictor.segment(case.images, volume=True), case.full_masks))
    assert d >= ref["patients"][pid] - 0.02, f"{pid}: Dice {d:.4f} vs model card {ref['patients'][pid]:.4f}"


def test_shipped_int8_graph_is_the_default_and_matches_fp32(lgg_root):
    """The shipped int8 graph belongs to the shipped weights, `auto` picks it, and its masks stay
    within 0.01 per-patient Dice of the fp32 model on a test patient."""
    pytest.importorskip("onnxruntime")
    from tumorseg.export import int8_path

    assert int8_path(DEFAULT_WEIGHTS).is_file(), "weights/ lacks the int8 graph of the shipped model"
    fast = Predictor.from_checkpoint()
    assert fast.backend == "onnx-int8"
    exact = Predictor.from_checkpoint(backend="torch")
    case = load_case(find_cases(lgg_root / "TCGA_DU_6400_19830518")[0], None)
    m8, m32 = fast.predict(case.images, volume=True) > 0.5, exact.predict(case.images, volume=True) > 0.5
    agree = dice(confusion_counts(m8, m32))
    assert agree >= 0.98, f"int8 and fp32 masks agree with Dice {agree:.4f}"
    d8, d32 = dice(confusion_counts(m8, case.full_masks)), dice(confusion_counts(m32, case.full_masks))
    assert abs(d8 - d32) <= 0.01, f"int8 Dice {d8:.4f} vs fp32 {d32:.4f}"


def test_train_defaults_reproduce_the_shipped_model():
    """`tumorseg train --data DIR --out DIR` with no other option is the shipped model's recipe."""
    from tumorseg.config import TrainConfig

    shipped = load_checkpoint(DEFAULT_WEIGHTS).config.model_dump()
    defaults = TrainConfig().model_dump()
    differ = {k for k in shipped if shipped[k] != defaults[k]} - {"data", "out"}
    assert not differ, f"train defaults differ from the shipped model's config in {sorted(differ)}"
