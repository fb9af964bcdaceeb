"""`evaluate`'s report, markdown and table: what they show must be what a reader needs to judge the numbers."""

from __future__ import annotations

import io
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

from tumorseg.metrics import score_volume, summarize
from tumorseg.report import build_report, worst_first_strips

H = W = 32
NAN = float("nan")


def _case(truth: np.ndarray) -> SimpleNamespace:
    n = len(truth)
    rng = np.random.default_rng(0)
    return SimpleNamespace(
        images=rng.integers(0, 255, (n, 3, H, W), dtype=np.uint8),
        full_masks=truth.astype(bool),
        names=[f"P_{i + 1}" for i in range(n)],
    )


def _result(cases: dict[str, tuple[SimpleNamespace, np.ndarray]]) -> dict:
    """An `evaluate` result for these (case, prediction) pairs, built as `evaluation.evaluate` builds it."""
    rows, chosen, base = [], [], []
    for pid, (case, pred) in cases.items():
        s = score_volume(pred, case.full_masks)
        b = score_volume(np.zeros_like(case.full_masks), case.full_masks)
        chosen.append(s)
        base.append(b)
        rows.append({"patient": pid, **s, "baseline_dice": b["dice"], "baseline_accuracy": b["accuracy"],
                     "notes": []})  # fmt: skip
    metrics = ["dice", "iou", "precision", "recall", "hd95", "accuracy", "slice_dice", "slice_hd95"]
    summary = {}
    for name, vals in (("chosen", chosen), ("model", chosen), ("baseline", base)):
        summary[name] = {m: summarize([v[m] for v in vals]) for m in metrics}
        summary[name]["fp_slices"] = sum(v["fp_slices"] for v in vals)
        summary[name]["empty_slices"] = sum(v["empty_slices"] for v in vals)
    return {"weights": "w.safetensors", "data": "d", "split": "all", "patients": len(rows), "settings": {},
            "per_patient": rows, "summary": summary, "empty_mask_rule": "rule"}  # fmt: skip


def _tumor_patient() -> tuple[SimpleNamespace, np.ndarray]:
    truth = np.zeros((6, H, W), bool)
    truth[2:4, 10:20, 10:20] = True
    pred = truth.copy()
    pred[2, 10:12] = False
    pred[5, 0:4, 0:4] = True  # a false-positive slice
    return _case(truth), pred


def _html(cases, tmp_path) -> str:
    return build_report(_result(cases), cases, tmp_path / "w.safetensors")


def test_strips_show_the_false_alarms_of_a_patient_without_tumor():
    truth = np.zeros((5, H, W), bool)
    pred = truth.copy()
    pred[1, 5:15, 5:15] = True
    pred[3, 0:3, 0:3] = True
    strips = worst_first_strips(_case(truth), pred)
    assert len(strips) == 2  # was 0: the patient's Dice of 0 came with no picture of why
    # each strip's alt text says what it shows (once "<patient> overlay" for every strip of a patient)
    assert [alt for _, alt in strips] == [
        "slice P_2: MRI, true mask, predicted mask and overlay; Dice 0.000, 0 px found, 100 px marked in excess, "
        "0 px missed",
        "slice P_4: MRI, true mask, predicted mask and overlay; Dice 0.000, 0 px found, 9 px marked in excess, "
        "0 px missed",
    ]


def test_strips_add_false_positive_slices_after_the_tumor_slices():
    case, pred = _tumor_patient()
    assert len(worst_first_strips(case, pred)) == 3  # two tumor slices and the false-positive one


def test_report_says_when_a_patient_has_nothing_to_show(tmp_path):
    truth = np.zeros((4, H, W), bool)
    html = _html({"CLEAN": (_case(truth), truth.copy()), "T": _tumor_patient()}, tmp_path)
    assert "No tumor in the truth and none predicted" in html
    assert html.count("<img alt='slice P_") == 3  # the tumor patient's three strips, each described


def test_report_shows_pixel_accuracy_beside_the_baseline(tmp_path):
    html = _html({"A": _tumor_patient()}, tmp_path)
    result = _result({"A": _tumor_patient()})
    assert "pixel accuracy" in html
    acc = result["summary"]["baseline"]["accuracy"]["mean"]
    assert f"{acc:.3f}" in html


def test_report_gives_the_bootstrap_interval(tmp_path):
    cases = {f"P{i}": _tumor_patient() for i in range(3)}
    case, pred = cases["P1"]
    pred = pred.copy()
    pred[3] = False  # another Dice, so the interval has a width
    cases["P1"] = (case, pred)
    result = _result(cases)
    lo, hi = result["summary"]["chosen"]["dice"]["mean_ci95"]
    html = build_report(result, cases, tmp_path / "w.safetensors")
    assert f"[{lo:.3f}, {hi:.3f}]" in html and "bootstrap" in html


def test_report_gives_no_interval_for_one_patient(tmp_path):
    html = _html({"A": _tumor_patient()}, tmp_path)
    assert "too few to resample" in html
    assert not re.search(r"interval[^<]*\[\d", html)


def test_report_names_the_hd95_unit(tmp_path):
    html = _html({"A": _tumor_patient()}, tmp_path)
    assert "<th>hd95 (px)</th>" in html
    assert "<th>hd95 (px) mean</th>" in html
    assert "<th>hd95</th>" not in html and "<th>hd95 mean</th>" not in html


def test_report_puts_the_chosen_settings_first_with_readable_names(tmp_path):
    html = _html({"A": _tumor_patient()}, tmp_path)
    summary = html.split("<h2>Summary</h2>", 1)[1].split("</table>", 1)[0]
    first = re.search(r"<tbody><tr><td>([^<]*)</td>", summary).group(1)
    assert first == "model (chosen settings)"
    assert "<td>model, threshold 0.5</td>" in summary and "<td>always &quot;no tumor&quot; baseline</td>" in summary


@pytest.mark.parametrize("empty_pred", [True, False])
def test_report_of_tumor_free_patient_keeps_undefined_hd95_as_na(tmp_path, empty_pred):
    truth = np.zeros((4, H, W), bool)
    pred = truth.copy()
    if not empty_pred:
        pred[1, 0:5, 0:5] = True
    result = _result({"N": (_case(truth), pred)})
    row = result["per_patient"][0]
    assert row["dice"] == (1.0 if empty_pred else 0.0)
    assert (row["hd95"] == 0.0) if empty_pred else math.isnan(row["hd95"])
    html = build_report(result, {"N": (_case(truth), pred)}, tmp_path / "w.safetensors")
    assert "nan" not in html.lower().replace("nano", "")


def test_markdown_and_table_name_the_unit_and_give_no_interval_for_one_patient():
    from tumorseg.evaluation_text import empty_mask_rule, markdown, print_table
    from tumorseg.metrics import bootstrap_ci

    assert all(math.isnan(v) for v in bootstrap_ci(np.array([0.9])))
    result = {**_result({"A": _tumor_patient()}), "hd95_unit": "px"}
    md = markdown(result)
    assert "| hd95 (px) |" in md and "| hd95 (px) mean |" in md
    assert "no bootstrap interval (1 patient scored" in md and "[0." not in md.split("Mean per-patient")[1]
    lines = []
    print_table(result, log=lines.append)
    assert "hd95 (px)" in lines[0] and "no bootstrap interval" in lines[-2]
    summary_rows = [x for x in md.splitlines() if x.startswith("| model") or x.startswith("| always")]
    assert summary_rows[0].startswith("| model (chosen settings)") and summary_rows[-1].startswith("| always")
    assert "mm, from the voxel spacing" in empty_mask_rule("mm") and "pixels" not in empty_mask_rule("mm")
    # for volumes it once said "Per patient, the slices are stacked" and the title "1 volumes"
    assert "slices are stacked" not in empty_mask_rule("mm") and "averages it over volumes" in empty_mask_rule("mm")
    one = {k: v for k, v in result.items() if k != "split"} | {"volumes": 1}
    assert markdown(one).startswith("# Evaluation: 1 volume (HD95 in mm)")


def test_variants_keep_their_computed_order():
    from tumorseg.evaluation_text import variant_order

    keys = ["baseline", "flair_only", "no_pre_t1", "min_size_50", "largest_3d", "tta", "model", "chosen"]
    assert variant_order(dict.fromkeys(keys)) == [
        "chosen",
        "model",
        "tta",
        "min_size_50",
        "largest_3d",
        "no_pre_t1",
        "flair_only",
        "baseline",
    ]


def test_markdown_summary_gives_what_the_html_summary_gives(tmp_path):
    """evaluation.md lacked the Dice std and the false-positive slices that report.html shows."""
    from tumorseg.evaluation_text import markdown

    cases = {"A": _tumor_patient(), "B": _tumor_patient()}
    md = markdown(_result(cases))
    head = next(line for line in md.splitlines() if line.startswith("| variant"))
    assert "Dice std" in head and "FP slices (total)" in head and "slice_hd95 (px) mean" in head
    row = next(line for line in md.splitlines() if line.startswith("| model (chosen settings)"))
    assert row.rstrip(" |").endswith("| 2")  # one false-positive slice in each patient
    assert "FP slices (total)" in _html(cases, tmp_path)


def test_each_patient_row_links_to_its_slices_whose_heading_gives_its_dice(tmp_path):
    """With 15 patients the overlays were a long scroll away from the table, under headings that
    did not say how the patient scored."""
    cases = {"A<b>": _tumor_patient(), "B": _tumor_patient()}
    html = _html(cases, tmp_path)
    dice = _result(cases)["per_patient"][0]["dice"]
    assert "<td><a href='#p0'>A&lt;b&gt;</a></td>" in html and "<td><a href='#p1'>B</a></td>" in html
    assert f"<h3 id='p0'>A&lt;b&gt; · Dice {dice:.3f}</h3>" in html


def test_the_printed_table_keeps_its_columns_for_a_long_name():
    """A 200-letter patient name pushed every number of its row out of its column."""
    from tumorseg.evaluation_text import _row_line

    long, short = _row_line(["L" * 200 + "_19960909", "0.900", "1.0"]), _row_line(["P_1", "0.900", "1.0"])
    assert len(long) == len(short) and long.endswith(short[24:]) and "_19960909" in long


def test_the_region_the_largest_region_step_dropped_is_shown_outlined(tmp_path):
    """A close call was text only: the slices of the region dropped had no strip, and no overlay
    showed it, though the note asks a reader to judge whether it is tumor too."""
    case, pred = _tumor_patient()
    pred[5] = False  # the false-positive slice was the part the step removed
    dropped = np.zeros_like(pred)
    dropped[5, 0:4, 0:4] = True
    strips = worst_first_strips(case, pred, dropped=dropped)
    assert len(strips) == 3 and len(worst_first_strips(case, pred)) == 2
    assert strips[-1][1].endswith("0 px missed, 16 px dropped by the largest-region step (outlined)")
    html = build_report(_result({"A": (case, pred)}), {"A": (case, pred, dropped)}, tmp_path / "w.safetensors")
    assert html.count("px dropped by the largest-region step") == 1


def test_an_ensembles_report_shows_each_members_training_curves(tmp_path):
    """`evaluate --report` on an ensemble had no training curves: its folder has no curves.png of
    its own, only its members' (README: the curves "when the weights sit in a run folder")."""
    from PIL import Image

    from tumorseg.io import write_png
    from tumorseg.report import run_curves

    ens = tmp_path / "ens"
    for i, height in ((0, 40), (1, 30), (10, 20)):
        (ens / f"member{i}").mkdir(parents=True)
        write_png(ens / f"member{i}" / "curves.png", np.full((height, 50, 3), 10 * i, np.uint8))
    (ens / "member_old").mkdir()  # not a member: left out
    write_png(ens / "member_old" / "curves.png", np.zeros((99, 50, 3), np.uint8))
    stacked = np.asarray(Image.open(io.BytesIO(run_curves(ens / "last.safetensors"))))
    bar = (stacked.shape[0] - (40 + 6 + 30 + 6 + 20)) // 3  # members 0, 1, 10, each under its name
    assert bar > 5 and stacked.shape[0] == 40 + 6 + 30 + 6 + 20 + 3 * bar
    assert (stacked[bar : bar + 40] == 0).all() and (stacked[-20:] == 100).all()
    assert (stacked[bar + 46 + bar : bar + 46 + bar + 30] == 10).all()
    assert (stacked[:bar] < 128).any() and (stacked[:bar] == 255).mean() > 0.5  # a name in black on white
    write_png(ens / "curves.png", np.zeros((5, 5, 3), np.uint8))  # a plain run's own curves come first
    assert np.asarray(Image.open(io.BytesIO(run_curves(ens / "last.safetensors")))).shape[0] == 5
    assert run_curves(tmp_path / "elsewhere" / "w.safetensors") is None
