import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tumorseg.metrics import (
    Counts,
    accuracy,
    bootstrap_ci,
    confusion_counts,
    dice,
    hd95,
    iou,
    precision,
    recall,
    score_volume,
    summarize,
)

P = np.array([[1, 1, 0, 0], [0, 1, 0, 0]], bool)
T = np.array([[1, 0, 0, 0], [0, 1, 1, 0]], bool)


@pytest.mark.parametrize(
    ("pred", "target", "counts", "d", "j"),
    [
        (P, T, (2, 1, 1, 4), 4 / 6, 2 / 4),
        (T, P, (2, 1, 1, 4), 4 / 6, 2 / 4),
        (P, P, (3, 0, 0, 5), 1.0, 1.0),
        (np.zeros((2, 4), bool), T, (0, 0, 3, 5), 0.0, 0.0),
        (np.zeros((2, 4), bool), np.zeros((2, 4), bool), (0, 0, 0, 8), 1.0, 1.0),  # both empty: perfect
        (T, np.zeros((2, 4), bool), (0, 3, 0, 5), 0.0, 0.0),
    ],
)
def test_hand_computed_table(pred, target, counts, d, j):
    c = confusion_counts(pred, target)
    assert tuple(c) == counts
    assert dice(c) == pytest.approx(d)
    assert iou(c) == pytest.approx(j)


def test_precision_recall_accuracy():
    c = Counts(tp=2, fp=1, fn=1, tn=4)
    assert precision(c) == pytest.approx(2 / 3)
    assert recall(c) == pytest.approx(2 / 3)
    assert accuracy(c) == pytest.approx(6 / 8)
    assert precision(Counts(0, 0, 5, 10)) == 0.0  # predicted nothing, missed tumor
    assert recall(Counts(0, 3, 0, 10)) == 1.0  # nothing to find


def test_shape_mismatch():
    with pytest.raises(ValueError, match="differs"):
        confusion_counts(P, T[:1])


def test_a_probability_map_is_refused_and_integer_masks_are_read():
    """A float map of 0.01 and 0.9 once scored as if every pixel were tumor (fp 124, Dice 0.06)."""
    prob = np.where(np.arange(16).reshape(4, 4) > 7, 0.9, 0.01)
    truth = prob > 0.5
    for call in (
        lambda: confusion_counts(prob, truth),
        lambda: hd95(prob, truth),
        lambda: score_volume(prob[None], truth[None]),
    ):
        with pytest.raises(
            ValueError, match="prediction holds values other than 0 and 1 .a probability map..: threshold"
        ):
            call()
    assert confusion_counts(truth.astype(np.float32), truth * 255) == Counts(8, 0, 0, 8)  # 0/1 floats, 0/255 ints


masks = arrays(bool, st.tuples(st.integers(1, 6), st.integers(1, 6)))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_dice_laws(data):
    a = data.draw(masks)
    b = data.draw(arrays(bool, a.shape))
    c = confusion_counts(a, b)
    d, j = dice(c), iou(c)
    assert 0 <= d <= 1 and 0 <= j <= 1
    assert d == pytest.approx(2 * j / (1 + j))
    assert d == pytest.approx(dice(confusion_counts(b, a)))
    assert sum(c) == a.size


def test_hd95_known_shift_and_empty_rule():
    a = np.zeros((1, 32, 32), bool)
    a[0, 10:20, 10:20] = True
    b = np.roll(a, 3, axis=2)
    assert hd95(b, a) == pytest.approx(3.0)
    assert hd95(b, a, spacing=(1.0, 0.5, 0.5)) == pytest.approx(1.5)
    assert hd95(a, a) == 0.0
    empty = np.zeros_like(a)
    assert hd95(empty, empty) == 0.0
    assert math.isnan(hd95(empty, a)) and math.isnan(hd95(a, empty))


def test_score_volume_per_slice_rule():
    t = np.zeros((4, 8, 8), bool)
    p = np.zeros((4, 8, 8), bool)
    t[0, 2:4, 2:4] = True  # tumor slice, found
    p[0, 2:4, 2:4] = True
    t[1, 2:4, 2:4] = True  # tumor slice, missed
    p[2, 5:7, 5:7] = True  # false-positive slice
    # slice 3: both empty, excluded from the per-slice mean
    s = score_volume(p, t)
    assert s["tumor_slices"] == 2 and s["fp_slices"] == 1 and s["empty_slices"] == 2
    assert s["slice_dice"] == pytest.approx(0.5)
    assert s["dice"] == pytest.approx(2 * 4 / (2 * 4 + 4 + 4))


def test_summarize_counts_undefined():
    s = summarize([0.5, float("nan"), 1.0])
    assert s["mean"] == 0.75 and s["n"] == 2 and s["undefined"] == 1
    assert 0.5 <= s["mean_ci95"][0] <= 0.75 <= s["mean_ci95"][1] <= 1.0


def test_bootstrap_interval_of_the_mean():
    assert bootstrap_ci(np.full(15, 0.8)) == pytest.approx((0.8, 0.8))  # no spread, no uncertainty
    assert all(np.isnan(bootstrap_ci(np.array([]))))
    rng = np.random.default_rng(1)
    small, large = rng.uniform(0.3, 1.0, 15), rng.uniform(0.3, 1.0, 500)
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi and bootstrap_ci(small) == (lo, hi)  # seeded: reproducible
    # about mean +- 1.96 standard errors, and narrower with more patients
    # (rel 0.07: the real widths are 1.01 and 0.99 of that; a 98 % interval is 1.19, a 90 % one 0.84)
    se = small.std() / np.sqrt(15)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.07)
    lo2, hi2 = bootstrap_ci(large)
    assert hi2 - lo2 < (hi - lo) / 3
    assert hi2 - lo2 == pytest.approx(2 * 1.96 * large.std() / np.sqrt(500), rel=0.07)


def test_slice_hd95_measures_in_plane_where_the_stacked_hd95_runs_low():
    """The stacked HD95 counts one slice step as one pixel, so a prediction 6 px too wide on two
    slices scored 1.0 (the next slice's edge is 1 px away); slice_hd95 measures each slice in its
    own plane. A flipped view of the masks (negative strides) once crashed hd95."""
    from tumorseg.metrics import hd95, score_volume

    yy, xx = np.mgrid[:48, :48]
    disk = lambda r: (yy - 24) ** 2 + (xx - 24) ** 2 <= r * r  # noqa: E731
    truth = np.stack([disk(4), disk(10), disk(4)])
    pred = np.stack([disk(10)] * 3)
    s = score_volume(pred, truth)
    per_slice = [hd95(p, t) for p, t in zip(pred, truth)]
    assert s["hd95"] == pytest.approx(1.0) and per_slice[1] == 0 and min(per_slice[0], per_slice[2]) > 5
    assert s["slice_hd95"] == pytest.approx(np.mean(per_slice))
    truth[0] = False  # a slice where only the prediction has tumor is left out of slice_hd95
    assert score_volume(pred, truth)["slice_hd95"] == pytest.approx(np.mean(per_slice[1:]))
    assert np.isnan(score_volume(np.zeros_like(truth), truth)["slice_hd95"])
    assert hd95(pred[:, ::-1], truth[:, ::-1]) == hd95(pred, truth)
    flipped = score_volume(pred[::-1, :, ::-1], truth[::-1, :, ::-1])
    assert flipped["hd95"] == pytest.approx(score_volume(pred, truth)["hd95"])


def test_std_is_the_sample_standard_deviation():
    from tumorseg.metrics import summarize

    assert summarize([0.846, 0.783])["std"] == pytest.approx(np.std([0.846, 0.783], ddof=1))
    assert np.isnan(summarize([0.9])["std"]) and summarize([0.9])["mean"] == 0.9


def test_empty_mask_rule_for_every_metric():
    """The README's rule, metric by metric: precision of two empty masks once went untested (a
    precision of 0 for a tumor-free patient marked tumor-free would pass), as did recall's."""
    both_empty, missed, false_alarm = Counts(0, 0, 0, 10), Counts(0, 0, 5, 10), Counts(0, 3, 0, 10)
    assert [f(both_empty) for f in (dice, iou, precision, recall, accuracy)] == [1.0] * 5
    assert [f(missed) for f in (dice, iou, precision, recall)] == [0.0] * 4  # nothing predicted, tumor there
    assert [f(false_alarm) for f in (dice, iou, precision)] == [0.0] * 3
    assert recall(false_alarm) == 1.0  # nothing was missed
    empty = np.zeros((3, 8, 8), bool)
    s = score_volume(empty, empty)
    assert {k: s[k] for k in ("dice", "iou", "precision", "recall", "accuracy", "hd95")} == {
        "dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0, "hd95": 0.0
    }  # fmt: skip
    assert s["tumor_slices"] == 0 and s["fp_slices"] == 0 and s["empty_slices"] == 3
    assert np.isnan(s["slice_dice"]) and np.isnan(s["slice_hd95"])  # no tumor slice: left out of the means
    truth = empty.copy()
    truth[1, 2:4, 2:4] = True
    assert score_volume(empty, truth)["precision"] == 0.0 and score_volume(truth, empty)["recall"] == 1.0


def test_score_volume_hd95_is_in_mm_in_3d_and_in_plane():
    """score_volume's HD95 in mm: the spacing is (slice, row, column), the in-plane HD95 takes the
    last two; a 3 px shift at 0.5 mm is 1.5 mm both ways, whatever the slice spacing."""
    a = np.zeros((1, 32, 32), bool)
    a[0, 10:20, 10:20] = True
    across, down = np.roll(a, 3, axis=2), np.roll(a, 3, axis=1)
    s = score_volume(across, a, spacing=(3.0, 0.5, 0.5))
    assert s["hd95"] == pytest.approx(1.5) and s["slice_hd95"] == pytest.approx(1.5)
    assert score_volume(across, a, spacing=(3, 0.5, 0.5)) == s  # an int among floats was MONAI's ValueError
    s = score_volume(across, a)  # no spacing: pixels
    assert s["hd95"] == pytest.approx(3.0) and s["slice_hd95"] == pytest.approx(3.0)
    for pred, mm in ((down, 1.5), (across, 3.0)):  # rows 0.5 mm apart, columns 1 mm
        s = score_volume(pred, a, spacing=(3.0, 0.5, 1.0))
        assert s["hd95"] == pytest.approx(mm) and s["slice_hd95"] == pytest.approx(mm)
    v = np.zeros((8, 32, 32), bool)
    v[2:6, 12:18, 12:18] = True
    s = score_volume(np.roll(v, 1, axis=0), v, spacing=(3.0, 0.5, 0.5))  # one slice off: 3 mm, 0 in plane
    assert s["hd95"] == pytest.approx(3.0) and s["slice_hd95"] == 0.0


def _square_and_spur():
    square = np.zeros((32, 40), bool)
    square[5:15, 5:15] = True
    spur = square.copy()
    spur[9, 15:31] = True  # a 1 x 16 line off the square's right side: its tip 16 px from the square
    return square, spur


def test_hd95_is_the_95th_percentile_not_the_maximum():
    """HD95 is the 95th percentile of the surface distances, not the Hausdorff distance (their maximum):
    of 51 surface pixels, 35 at 0 and the spur's 16 at 1..16, the percentile lies between 13 and 14."""
    square, spur = _square_and_spur()
    assert hd95(spur, square) == pytest.approx(13.5)  # the maximum, 16, is what HD100 would give
    assert hd95(spur, square, spacing=(0.5, 0.5)) == pytest.approx(6.75)


def test_hd95_is_symmetric():
    """The larger of both directed distances: with the spur in the truth, the prediction's surface
    all lies on the truth (0 one way), and a directed-only HD95 gave 0."""
    square, spur = _square_and_spur()
    assert hd95(square, spur) == pytest.approx(13.5)
    assert hd95(square, spur) == hd95(spur, square)


def test_summarize_mean_median_and_spread():
    """Mean and median of [0.1, 0.2, 0.9] differ (0.4 and 0.2): each must be what its name says."""
    s = summarize([0.1, 0.2, 0.9])
    assert s["mean"] == pytest.approx(0.4) and s["median"] == pytest.approx(0.2)
    assert s["min"] == 0.1 and s["max"] == 0.9 and s["n"] == 3 and s["undefined"] == 0
    assert s["std"] == pytest.approx(np.sqrt(0.19))
    assert 0.1 <= s["mean_ci95"][0] < 0.4 < s["mean_ci95"][1] <= 0.9
