"""2.5D input (`--context`): neighbouring slices' FLAIR as extra channels, in training and
in every inference path (evaluate, predict on a folder of slices, single slices, ONNX)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_PATIENTS, cli_here, cli_tiny_run

from tumorseg.config import ModelConfig
from tumorseg.data.lgg import add_context, find_cases, load_case
from tumorseg.data.transforms import shuffle_context
from tumorseg.errors import TumorsegError
from tumorseg.io import read_image
from tumorseg.metrics import confusion_counts, dice


def stack(n: int) -> np.ndarray:
    """n slices of 3 channels; slice i, channel c holds the value 10 * i + c."""
    v = 10 * np.arange(n)[:, None] + np.arange(3)[None]
    return np.broadcast_to(v[:, :, None, None], (n, 3, 2, 2)).astype(np.uint8)


def test_add_context_neighbours_edges_gaps_and_single_slices():
    x = stack(4)
    out = add_context(x, 1)[:, :, 0, 0]
    assert out.shape == (4, 5)
    np.testing.assert_array_equal(out[:, :3], x[:, :, 0, 0])
    # FLAIR (channel 1) of the slice below, then above; an edge repeats its own FLAIR
    np.testing.assert_array_equal(out[:, 3], [1, 1, 11, 21])
    np.testing.assert_array_equal(out[:, 4], [11, 21, 31, 31])
    # numbered slices with a gap (no slice 3): 2 and 4 lack that neighbour
    gap = add_context(x, 1, numbers=[1, 2, 4, 5])[:, :, 0, 0]
    np.testing.assert_array_equal(gap[:, 3], [1, 1, 21, 21])
    np.testing.assert_array_equal(gap[:, 4], [11, 11, 31, 31])
    # unrelated single slices: every neighbour is the slice's own FLAIR
    alone = add_context(x, 1, volume=False)[:, :, 0, 0]
    np.testing.assert_array_equal(alone[:, 3:], np.repeat(x[:, 1, 0, 0][:, None], 2, 1))
    two = add_context(x, 2)[:, :, 0, 0]
    np.testing.assert_array_equal(two[1, 3:], [11, 1, 21, 31])  # below: -2 (missing), -1; above: +1, +2
    flair_only = add_context(x[:, 1:2], 1, "flair")[:, :, 0, 0]
    np.testing.assert_array_equal(flair_only[:, 1], [1, 1, 11, 21])
    assert add_context(x, 0) is x


def test_slice_numbers_and_series():
    from tumorseg.data.lgg import slice_numbers
    from tumorseg.predict import series_key

    assert slice_numbers([Path("P_3.tif"), Path("P_10.tif"), Path("P_4.png")]) == [3, 10, 4]
    assert slice_numbers([Path("P_012.png"), Path("P_12.png")]) is None  # two slices 12: use their order
    assert slice_numbers([Path("P_1.png"), Path("scan.png")]) is None
    a, b, c = (series_key(Path(f"d/{n}.png")) for n in ("P_1", "P_10", "P_"))
    assert a == b and c != a  # `P_.png` has no number: a series of its own
    assert series_key(Path("e/P_1.png")) != a  # another folder, another series


def test_shuffle_context_swaps_or_drops_neighbours():
    x = torch.from_numpy(add_context(stack(6), 1)).float()
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        y = shuffle_context(x, 3, 1, g, drop=0.3, swap=0.5)[:, :, 0, 0]
        assert torch.equal(y[:, :3], x[:, :3, 0, 0])
        for row, src in zip(y, x[:, :, 0, 0]):
            below, above, own = src[3].item(), src[4].item(), src[1].item()
            pair = (row[3].item(), row[4].item())
            kind = {(below, above): "kept", (above, below): "swapped", (own, own): "dropped"}.get(pair)
            assert kind is not None, (pair, below, above, own)
            if below != above:
                seen.add(kind)
    assert seen == {"kept", "swapped", "dropped"}
    assert torch.equal(shuffle_context(x[:, :3], 3, 1, g), x[:, :3])


def test_config_in_channels_follow_context():
    assert ModelConfig(context=1, in_channels=5).in_channels == 5
    assert ModelConfig(channels="flair", in_channels=3, context=1).sequence_channels == 1
    assert ModelConfig(context=1).in_channels == 5  # derived when not given
    assert ModelConfig(channels="flair", context=2).in_channels == 5
    with pytest.raises(ValueError, match="context=1 needs in_channels=5"):
        ModelConfig(context=1, in_channels=3)


@pytest.fixture(scope="module")
def context_run(lgg_root: Path, tmp_path_factory) -> Path:
    """A tiny 2.5D model (context 1) trained by the CLI for 2 epochs on 3 real patients."""
    base = tmp_path_factory.mktemp("context_run")
    r = cli_tiny_run(lgg_root, base, "--context", "1")
    assert "UNet(in_channels=5" in r.stdout
    run = base / "run"  # the train command ends saying where its files are and how to score them
    assert (
        f"run folder: {run} (last.safetensors, best.safetensors, metrics.jsonl, curves.png, summary.json)" in r.stdout
    )
    assert (
        f"score it on its 1 test patient: tumorseg evaluate --data {base / 'lgg'} --weights "
        f"{run / 'last.safetensors'} --out {run / 'evaluate'} --report" in r.stdout
    )
    return base


def run_predict(weights: Path, out: Path, *inputs: Path) -> None:
    args = ["predict", *map(str, inputs), "--out", str(out), "--weights", str(weights), "--backend", "torch"]
    r = cli_here(*args)
    assert r.returncode == 0, r.stderr


def test_predict_on_slices_matches_evaluate(context_run, tmp_path):
    """`predict` on a patient's slice files (in any order, by folder or one by one) finds each
    slice's neighbours by number, so its masks score what `evaluate` reports."""
    from tumorseg.evaluation import evaluate
    from tumorseg.infer import Predictor

    weights = context_run / "run" / "last.safetensors"
    res = evaluate(context_run / "lgg", weights, backend="torch", log=lambda *a: None)
    (row,) = res["per_patient"]
    folder = context_run / "lgg" / row["patient"]
    case = load_case(find_cases(folder)[0], None)

    def scored(out: Path) -> float:
        preds = np.stack([read_image(out / f"{n}_pred.png") > 127 for n in case.names])
        return dice(confusion_counts(preds, case.full_masks))

    run_predict(weights, tmp_path / "a", folder)
    assert scored(tmp_path / "a") == pytest.approx(row["dice"], abs=1e-12)
    files = [p for p in sorted(folder.glob("*.png"), reverse=True) if not p.stem.endswith("_mask")]
    run_predict(weights, tmp_path / "b", *files)
    for n in case.names:
        a, b = (read_image(tmp_path / d / f"{n}_pred.png") for d in "ab")
        assert np.array_equal(a, b)

    # the neighbours matter: the same slices alone (own FLAIR as neighbours) give other probabilities
    pred = Predictor.from_checkpoint(weights, backend="torch")
    assert not np.allclose(pred.predict(case.images, volume=True), pred.predict(case.images), atol=1e-4)
    with pytest.raises(TumorsegError, match=r"slices of 3 channel\(s\).*got shape \(2, 5, 256, 256\)"):
        pred.predict(add_context(case.images[:2], 1))  # already 2.5D: refused, not taken as raw slices
    # evaluate also reports the slices scored alone (as the web page sees them)
    single = dice(confusion_counts(pred.mask(pred.predict(case.images)), case.full_masks))
    assert res["summary"]["single_slices"]["dice"]["mean"] == pytest.approx(single, abs=1e-12)
    # one slice copied alone: predicted without neighbours, no error
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(folder / f"{case.names[5]}.png", lone / "slice.png")
    run_predict(weights, tmp_path / "c", lone)
    alone = pred.mask(pred.predict(case.images[5:6]))[0]
    assert np.array_equal(read_image(tmp_path / "c" / "slice_pred.png") > 127, alone)


def test_onnx_export_takes_the_context_channels(context_run):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tumorseg.infer import Predictor

    weights = context_run / "run" / "last.safetensors"
    case = load_case(find_cases(context_run / "lgg" / SMALL_PATIENTS[0])[0], None)
    onnx_p = Predictor.from_checkpoint(weights, backend="onnx").predict(case.images, volume=True)
    torch_p = Predictor.from_checkpoint(weights, backend="torch").predict(case.images, volume=True)
    assert np.abs(onnx_p - torch_p).max() < 1e-4
