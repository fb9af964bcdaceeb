"""The `tumorseg` command. It only parses options and calls the library."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import NoReturn

import typer

from .errors import Interrupted, TumorsegError

app = typer.Typer(
    help="Brain tumor segmentation in MRI with a U-Net: train, evaluate, predict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: option names stay whole in 80 columns and in pipes
    context_settings={"max_content_width": 120},
)


# each extra and the packages that tell whether it is installed (pyproject.toml's optional-dependencies)
EXTRAS = {"onnx": ("onnxruntime", "onnxscript"), "medical": ("nibabel", "pydicom"), "serve": ("fastapi", "uvicorn")}


def _version(value: bool) -> None:
    """`tumorseg --version`: this package's, PyTorch's and Python's versions (for bug reports), and
    where the shipped model and its card are, with the weights' license."""
    if not value:
        return
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    from .shipped import DEFAULT_WEIGHTS, LICENSE, MODEL_CARD

    torch = installed("torch") or "not installed"
    typer.echo(f"tumorseg {__version__} (torch {torch}, Python {platform.python_version()})")
    extras = []
    for extra, packages in EXTRAS.items():
        found = [f"{p} {v}" for p in packages if (v := installed(p))]
        extras.append(f"{extra} ({', '.join(found)})" if len(found) == len(packages) else f"{extra} not installed")
    typer.echo(f"extras: {'; '.join(extras)}")
    missing = "" if DEFAULT_WEIGHTS.is_file() else ", missing"
    typer.echo(f"shipped model: {DEFAULT_WEIGHTS} ({LICENSE}; model card: {MODEL_CARD}{missing})")
    if os.environ.get("TUMORSEG_WEIGHTS"):
        typer.echo(f"used without --weights: $TUMORSEG_WEIGHTS={os.environ['TUMORSEG_WEIGHTS']}")
    raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the versions and where the shipped model is."
    ),
) -> None:
    """Brain tumor segmentation in MRI with a U-Net: train, evaluate, predict."""


def fail(msg: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def check_out_dir(out: Path | None) -> None:
    """Refuse, before any work is done, an output folder that is a file, lies under a file, or
    cannot be written (probed with a temporary folder in it or its nearest existing parent,
    removed at once, so nothing is left behind when the run then fails for another reason)."""
    import tempfile

    if out is None:
        return
    if out.exists() and not out.is_dir():
        fail(f"{out}: --out must be a folder, and this is a file")
    base = out.absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        fail(f"{out}: cannot create --out: {base} is a file")
    try:
        Path(tempfile.mkdtemp(prefix=".tumorseg-probe-", dir=base)).rmdir()
    except OSError as exc:
        fail(f"{out}: cannot write --out ({base}: {exc.strerror or exc})")


def _choices(name: str, field: str, model: bool = False) -> type[Enum]:
    """A str Enum of a config field's Literal values, so the CLI's choices never drift from the config."""
    from typing import get_args

    from .config import ModelConfig, TrainConfig

    values = get_args((ModelConfig if model else TrainConfig).model_fields[field].annotation)
    return Enum(name, [(v, v) for v in values], type=str)


Loss = _choices("Loss", "loss")
Schedule = _choices("Schedule", "schedule")
Device = _choices("Device", "device")
Precision = _choices("Precision", "precision")
Channels = _choices("Channels", "channels", model=True)
Intensity = _choices("Intensity", "intensity", model=True)


def _backends() -> type[Enum]:
    from .config import BACKENDS

    return Enum("Backend", [(b, b) for b in BACKENDS], type=str)


Backend = _backends()
BACKEND_HELP = "Inference backend; auto: onnx-int8 when ONNX Runtime and the int8 graph are there, else torch."
FILL_HELP = "Fill holes enclosed by each slice's mask (the expert masks are solid)."
LARGEST_HELP = (
    "Keep only the largest 3D tumor part of each volume or numbered series (Buda et al.'s step: a low-grade glioma "
    "is one lesion); lone slices keep every part. --all-parts keeps every part, e.g. for multifocal tumors."
)


class Split(str, Enum):
    test = "test"
    val = "val"
    all = "all"


@app.command()
def train(
    data: Path | None = typer.Option(None, help="Folder in the kaggle_3m layout."),
    out: Path | None = typer.Option(None, help="Run folder for checkpoints and logs."),
    epochs: int | None = typer.Option(None, help="Number of epochs."),
    batch_size: int | None = typer.Option(None, help="Batch size."),
    lr: float | None = typer.Option(None, help="Adam learning rate."),
    image_size: int | None = typer.Option(None, help="Model input size in pixels."),
    base: int | None = typer.Option(None, help="U-Net base width."),
    depth: int | None = typer.Option(None, help="U-Net depth (number of poolings)."),
    channels: Channels | None = typer.Option(None, help="Input channels: all 3 or FLAIR alone."),
    intensity: Intensity | None = typer.Option(
        None, help="Intensity scaling to [0, 1]: per slice (percentile), per volume (volume) or /255 (fixed)."
    ),
    context: int | None = typer.Option(
        None, help="Neighbouring slices on each side whose FLAIR is added as input channels (2.5D; 0 = off)."
    ),
    members: int | None = typer.Option(
        None, help="Train this many U-Nets (seeds seed, seed+1, ...; one split) and average their probabilities."
    ),
    member: int | None = typer.Option(
        None, help="Train ensemble member i alone: seed + i for init and sampling, the seed's split kept."
    ),
    loss: Loss | None = typer.Option(None, help="Training loss."),
    schedule: Schedule | None = typer.Option(None, help="Learning-rate schedule."),
    empty_ratio: float | None = typer.Option(None, help="Empty slices per tumor slice in each epoch."),
    ema: float | None = typer.Option(None, help="EMA decay of the weights (0 = off)."),
    augment: bool | None = typer.Option(None, "--augment/--no-augment", help="Random flips, rotations, shifts."),
    zoom: float | None = typer.Option(
        None, help="Random zoom range: each slice is scaled by a factor in [1 - zoom, 1 + zoom] (with --augment)."
    ),
    dim_lesions: float | None = typer.Option(
        None, help="Share of tumor slices whose tumor is partly darkened (with --augment; 0 = off)."
    ),
    missing_sequences: float | None = typer.Option(
        None,
        help="Share of slices shown with pre- and/or post-contrast T1 replaced by FLAIR, as the dataset fills a "
        "missing sequence (with --augment; 0 = off).",
    ),
    hard_empty: float | None = typer.Option(
        None,
        help="Share of each epoch's empty slices drawn by how much tumor the model last marked in them "
        "(hard-negative sampling; 0 = all at random).",
    ),
    patient_balance: float | None = typer.Option(
        None,
        help="Draw each epoch's tumor slices with replacement, weighted n**-PATIENT_BALANCE (n: the patient's "
        "tumor slices), so patients with small tumors are seen more (1 = every patient equally; 0 = off).",
    ),
    sequence_jitter: bool | None = typer.Option(
        None,
        "--sequence-jitter/--no-sequence-jitter",
        help="Draw brightness, contrast and gamma for each MRI sequence separately instead of once per slice "
        "(with --augment).",
    ),
    bias_field: float | None = typer.Option(
        None,
        help="Multiply each slice by a smooth random field whose Legendre coefficients are drawn in "
        "[-BIAS_FIELD, BIAS_FIELD], as MRI coil sensitivity varies (per sequence with --sequence-jitter; "
        "with --augment; 0 = off).",
    ),
    histogram_shift: float | None = typer.Option(
        None,
        help="Share of slices whose intensities pass through a random monotone curve of 10 control points "
        "(MONAI's RandHistogramShift; per sequence with --sequence-jitter; with --augment; 0 = off).",
    ),
    deep_supervision: bool | None = typer.Option(
        None,
        "--deep-supervision/--no-deep-supervision",
        help="Also train 1x1 heads on the coarser decoder outputs against the downsized mask (nnU-Net's deep "
        "supervision); the heads are dropped from the saved U-Net.",
    ),
    seed: int | None = typer.Option(None, help="Seed for the split, sampling and init."),
    val_frac: float | None = typer.Option(None, help="Fraction of patients for validation."),
    test_frac: float | None = typer.Option(None, help="Fraction of patients held out for testing."),
    folds: int | None = typer.Option(None, help="K-fold cross-validation over the non-test patients (0 = off)."),
    fold: int | None = typer.Option(None, help="Which fold (0..folds-1) validates."),
    patience: int | None = typer.Option(None, help="Early-stopping patience in epochs (0 = off)."),
    workers: int | None = typer.Option(None, help="DataLoader worker processes."),
    threads: int | None = typer.Option(None, help="Torch threads (0 = one per core)."),
    max_patients: int | None = typer.Option(None, help="Use only the first N patients (0 = all)."),
    device: Device | None = typer.Option(None, help="Where to train (auto: CUDA when visible)."),
    sync_bn: bool | None = typer.Option(None, "--sync-bn/--no-sync-bn", help="SyncBatchNorm under DDP (CUDA)."),
    precision: Precision | None = typer.Option(
        None, help="fp32 (default), bf16 autocast, or auto: bf16 where the CPU or GPU computes bf16 natively."
    ),
    resume: Path | None = typer.Option(
        None,
        help="Continue the run in this folder, with its own config and data; only --epochs, --patience, "
        "--threads, --workers, --device and --precision may change, and --data if its patients moved.",
    ),
) -> None:
    """Train a U-Net on a kaggle_3m folder and write checkpoints to a run folder."""
    from .config import TrainConfig
    from .runs import resume_values
    from .train import fit

    top = {
        "data": data, "out": out, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "loss": loss, "schedule": schedule, "empty_ratio": empty_ratio, "ema": ema,
        "augment": augment, "zoom": zoom, "dim_lesions": dim_lesions, "missing_sequences": missing_sequences,
        "hard_empty": hard_empty, "patient_balance": patient_balance, "sequence_jitter": sequence_jitter,
        "bias_field": bias_field,
        "histogram_shift": histogram_shift, "deep_supervision": deep_supervision, "seed": seed, "member": member,
        "val_frac": val_frac, "test_frac": test_frac, "folds": folds, "fold": fold,
        "patience": patience, "workers": workers, "threads": threads, "max_patients": max_patients,
        "device": device, "sync_bn": sync_bn, "precision": precision,
    }  # fmt: skip
    model = {
        "image_size": image_size, "base": base, "depth": depth, "channels": channels, "intensity": intensity,
        "context": context, "members": members,
    }  # fmt: skip
    overrides = {k: (v.value if isinstance(v, Enum) else str(v) if isinstance(v, Path) else v) for k, v in top.items()}
    model = {k: (v.value if isinstance(v, Enum) else v) for k, v in model.items()}
    if resume is not None and out is not None and out.resolve() != resume.resolve():
        fail(f"--resume continues {resume} in its own folder: leave out --out ({out})")
    if resume is not None:
        base_cfg = resume_values(resume, overrides, model, data)
    else:
        base_cfg = TrainConfig().model_dump()
        if data is None and not Path(base_cfg["data"]).exists():
            fail(f"no --data given, and the default {base_cfg['data']} is not found from {Path.cwd()}; give "
                 "--data DIR, a folder in the kaggle_3m layout")  # fmt: skip
        base_cfg.update({k: v for k, v in overrides.items() if v is not None})
        base_cfg["model"].update({k: v for k, v in model.items() if v is not None})
    base_cfg["model"].pop("in_channels")  # ModelConfig derives it from channels and context
    cfg = _validate_options(base_cfg)
    check_out_dir(Path(cfg.out))
    try:
        fit(cfg, resume=resume is not None, progress=sys.stderr.isatty())  # no bar junk in a log file
    except Interrupted as exc:  # the loop said what it saved; the status names the signal (143: SIGTERM)
        raise typer.Exit(128 + exc.signum) from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun, said once
        _say_run_folder(Path(cfg.out), cfg.data)


def _say_run_folder(out: Path, data: str) -> None:
    """Where a finished train call left its files, and how to score the model on its test patients
    (into RUN/evaluate, with the HTML report)."""
    import json
    import shlex

    names = ("last.safetensors", "best.safetensors", "metrics.jsonl", "curves.png", "summary.json")
    typer.echo(f"run folder: {out} ({', '.join(n for n in names if (out / n).is_file())})")
    try:
        test = json.loads((out / "split.json").read_text()).get("test")
    except (OSError, ValueError, AttributeError):
        return
    if test:
        typer.echo(f"score it on its {len(test)} test patient{'s' * (len(test) != 1)}: tumorseg evaluate --data "
                   f"{shlex.quote(str(data))} --weights {shlex.quote(str(out / 'last.safetensors'))} --out "
                   f"{shlex.quote(str(out / 'evaluate'))} --report")  # fmt: skip


def _validate_options(values: dict):
    """TrainConfig from the train options; errors name the options (--member), not config fields."""
    from pydantic import ValidationError

    from .config import TrainConfig, option_reasons

    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        fail("invalid options: " + option_reasons(exc))


def _show_config_defaults(command) -> None:
    """Show each option's config default in --help: the options default to None, so that
    `--resume` can tell which were given, and help would otherwise show none."""
    import inspect

    from .config import ModelConfig, TrainConfig

    top, model = TrainConfig(), ModelConfig()
    for name, param in inspect.signature(command).parameters.items():
        info = param.default
        if not isinstance(info, typer.models.OptionInfo) or info.default is not None or name == "model":
            continue
        source = top if name in TrainConfig.model_fields else model if name in ModelConfig.model_fields else None
        if source is not None:
            value = getattr(source, name)
            shown = ("on" if value else "off") if isinstance(value, bool) else str(value)
            info.help = f"{info.help}  [default: {shown}]"  # click writes a show_default text as "(text)"


_show_config_defaults(train)


@app.command("check-data")
def check_data_cmd(
    folder: Path | None = typer.Argument(None, metavar="DATA", help="Folder in the kaggle_3m layout."),
    data: Path | None = typer.Option(None, help="The same folder, given as train and evaluate take it."),
) -> None:
    """Check a data folder without training: pairs, sizes, binary masks, duplicates, balance."""
    from .data.check import check_data

    if (folder is None) == (data is None):
        fail("give the data folder once: tumorseg check-data DATA (or --data DATA)")
    report = check_data(folder or data, log=typer.echo)
    if report["errors"]:
        n = len(report["errors"])
        typer.secho(f"{n} error{'s' * (n != 1)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"ok ({len(report['warnings'])} warnings)")


def _threshold(value: float) -> float:
    """--threshold lies strictly between 0 and 1 (NaN too is refused); --help says so, not 0<=x<=1."""
    if not 0 < value < 1:
        raise typer.BadParameter(f"{value}: must lie strictly between 0 and 1 (a pixel is tumor when its "
                                 "probability is above it, so 1 marks nothing and 0 marks every pixel)")  # fmt: skip
    return value


@app.command()
def evaluate(
    data: Path | None = typer.Option(None, help="Folder in the kaggle_3m layout."),
    image: list[Path] = typer.Option(None, help="Image volume (NIfTI or DICOM folder); pair with --mask."),
    mask: list[Path] = typer.Option(None, help="NIfTI mask volume, one per --image."),
    pairs: Path | None = typer.Option(None, help="CSV with columns image,mask listing volume pairs."),
    weights: Path | None = typer.Option(None, help="Checkpoint (.safetensors); default: the shipped model."),
    split: Split = typer.Option(Split.test, help="Patients to score: the checkpoint run's test/val split, or all."),
    out: Path | None = typer.Option(None, help="Write evaluation.json and evaluation.md here (volumes too)."),
    report: bool = typer.Option(False, "--report", help="Also write a self-contained report.html (needs --out)."),
    threshold: float = typer.Option(0.5, callback=_threshold, metavar="T", help="Probability threshold, 0 < T < 1."),
    tta: bool = typer.Option(False, "--tta", help="Average over a left-right flip."),
    min_size: int = typer.Option(0, min=0, help="Drop predicted components under this many pixels."),
    fill_holes: bool = typer.Option(True, "--fill-holes/--no-fill-holes", help=FILL_HELP),
    largest: bool = typer.Option(True, "--largest/--all-parts", help=LARGEST_HELP),
    batch_size: int = typer.Option(32, min=1, help="Slices per forward pass."),
    backend: Backend = typer.Option("auto", help=BACKEND_HELP),
    missing_sequences: bool = typer.Option(
        False,
        "--missing-sequences",
        help="Also score each patient with pre-contrast T1, post-contrast T1 or both replaced by FLAIR, "
        "as the dataset fills a missing sequence.",
    ),
) -> None:
    """Score a checkpoint per patient at the original resolution, beside a no-tumor baseline."""
    from .evaluation import evaluate as run_evaluate
    from .evaluation import evaluate_volumes, read_pairs_csv

    check_out_dir(out)
    if image or mask or pairs:
        if len(image or []) != len(mask or []):
            fail("give one --mask for each --image")
        if data is not None or split != Split.test:
            fail("--data and --split choose kaggle_3m patients; --image/--mask and --pairs score volumes: "
                 "give one or the other")  # fmt: skip
        if missing_sequences:
            fail("--missing-sequences scores a --data folder of kaggle_3m patients, not --image/--pairs volumes")
        if report:
            fail("--report draws kaggle_3m patients (--data); for volumes, `tumorseg predict` writes the masks "
                 "and a summary to view beside them")  # fmt: skip
        todo = list(zip(image or [], mask or [])) + (read_pairs_csv(pairs) if pairs else [])
        result = evaluate_volumes(todo, weights, out, threshold, tta, min_size, backend.value, fill_holes, largest,
                                  batch_size=batch_size)  # fmt: skip
        if result["failed"]:
            raise typer.Exit(1)
        return
    if data is None:
        fail("give --data DIR, or volumes with --image/--mask or --pairs")
    if report and out is None:
        fail("--report needs --out DIR")
    result = run_evaluate(data, weights, split.value, out, threshold, tta, min_size, report, fill_holes, largest,
                          batch_size=batch_size, backend=backend.value, missing=missing_sequences)  # fmt: skip
    if result["failed"]:
        raise typer.Exit(1)


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(
        None,
        help="Image files (.png .tif .tiff .jpg .jpeg), NIfTI volumes (.nii .nii.gz), DICOM series folders, "
        "or folders of them.",
    ),
    t1: Path | None = typer.Option(None, help="Pre-contrast T1, NIfTI or DICOM series folder (with --flair)."),
    flair: Path | None = typer.Option(
        None, help="FLAIR, NIfTI or DICOM series folder; --t1 and --t1c are filled from it when missing."
    ),
    t1c: Path | None = typer.Option(None, help="Post-contrast T1, NIfTI or DICOM series folder (with --flair)."),
    out: Path = typer.Option(..., help="Output folder."),
    weights: Path | None = typer.Option(None, help="Checkpoint (.safetensors); default: the shipped model."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write X_prob.png (0..255)."),
    overlay: bool = typer.Option(
        False, "--overlay", help="Also write X_overlay.png: MRI, mask, overlay (a volume: up to 6 tumor slices)."
    ),
    threshold: float = typer.Option(0.5, callback=_threshold, metavar="T", help="Probability threshold, 0 < T < 1."),
    tta: bool = typer.Option(False, "--tta", help="Average over a left-right flip."),
    min_size: int = typer.Option(0, min=0, help="Drop predicted components under this many pixels."),
    fill_holes: bool = typer.Option(True, "--fill-holes/--no-fill-holes", help=FILL_HELP),
    largest: bool = typer.Option(True, "--largest/--all-parts", help=LARGEST_HELP),
    batch_size: int = typer.Option(32, min=1, help="Slices per forward pass."),
    backend: Backend = typer.Option("auto", help=BACKEND_HELP),
) -> None:
    """Segment image files; writes X_pred.png (0/255) at each input's own size."""
    from .infer import Predictor
    from .predict import PredictResult, predict_files, predict_stacked

    if (t1 or t1c) and not flair:  # the option checks come before the model loads
        fail("--t1 and --t1c need --flair")
    if not inputs and not flair:
        fail("give INPUT files or folders, or --flair")
    check_out_dir(out)
    predictor = Predictor.from_checkpoint(weights, backend.value, batch_size=batch_size, tta=tta, threshold=threshold,
                                          min_size=min_size, fill_holes=fill_holes, largest=largest)  # fmt: skip
    stacked = PredictResult()
    if flair:
        stacked = predict_stacked(flair, t1, t1c, out, predictor, overlay, inputs, probabilities)
        say_close_calls(stacked.notes)
        if not inputs:
            typer.echo(_segmented(1 - len(stacked.failed), 1, len(stacked.written), out))
            raise typer.Exit(1 if stacked.failed else 0)
    res = predict_files(inputs, out, predictor, probabilities, overlay, batch_size)
    res.inputs += stacked.inputs
    res.written = [*stacked.written, *res.written]
    res.failed = [*stacked.failed, *res.failed]
    typer.echo(_segmented(res.inputs - len(res.failed), res.inputs, len(res.written), out))
    say_close_calls(res.notes)
    if res.failed:
        names = ", ".join(str(path) for path, _ in res.failed)
        typer.secho(f"error: {len(res.failed)} input(s) failed (reasons above): {names}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


def _segmented(ok: int, inputs: int, files: int, out: Path) -> str:
    """predict's last line: `2 of 3 inputs segmented; 1 file in out`."""
    return f"{ok} of {inputs} inputs segmented; {files} file{'s' * (files != 1)} in {out}"


@app.command()
def export(
    out: Path = typer.Option(..., help="Where to write the .onnx file."),
    weights: Path | None = typer.Option(None, help="Checkpoint (.safetensors); default: the shipped model."),
    int8: bool = typer.Option(False, "--int8", help="Quantize the convolutions to int8 (needs --data)."),
    data: Path | None = typer.Option(None, help="kaggle_3m folder with the checkpoint's training patients (--int8)."),
) -> None:
    """Export a checkpoint to ONNX, preprocessing inside: uint8 (N,C,H,W) in, probability (N,1,H,W) out."""
    from .export import export_int8, export_onnx

    if int8 and data is None:
        fail("--int8 calibrates on the checkpoint's training patients: give --data DIR")
    if not int8 and data is not None:
        fail("--data is read only by --int8 (its calibration): add --int8, or leave --data out")
    if not int8 and out.name.endswith(".int8.onnx"):  # the name the backends look for an int8 graph under
        fail(f"{out}: a .int8.onnx name is where the backends look for an int8 graph; add --int8, or name "
             "the fp32 graph otherwise")  # fmt: skip
    warn = lambda msg: typer.secho(msg, fg=typer.colors.YELLOW, err=True)  # noqa: E731
    path = export_int8(weights, out, data, log=warn) if int8 else export_onnx(weights, out)
    size = path.stat().st_size
    typer.echo(f"wrote {path} ({size / 1e6:.1f} MB)" if size >= 1e5 else f"wrote {path} ({size / 1e3:.0f} kB)")


@app.command()
def bench(
    inputs: list[Path] = typer.Argument(
        None, help="Slices to time (PNG/TIFF/JPEG files or folders, one size); default: 64 synthetic 256x256 slices."
    ),  # fmt: skip
    weights: Path | None = typer.Option(None, help="Checkpoint (.safetensors); default: the shipped model."),
    backend: Backend = typer.Option("auto", help="The backend to time; auto: every one that can run here."),
    batch_size: int = typer.Option(32, min=1, help="Slices per forward pass."),
    repeats: int = typer.Option(5, min=1, help="Timed passes over the slices; the median is reported."),
    out: Path | None = typer.Option(None, help="Also write the result as JSON here."),
) -> None:
    """Time the inference backends on this machine, and compare their probabilities with torch's."""
    import json

    from .bench import CONCRETE, bench, file_slices, table
    from .infer import Predictor
    from .io import atomic_write_text

    if out is not None and (out.is_dir() or (out.exists() and not out.is_file())):  # before minutes of timing
        fail(f"{out}: --out is the JSON file to write, and this is {'a folder' if out.is_dir() else 'not a file'}")
    if out is not None and out.parent.exists() and not out.parent.is_dir():
        fail(f"{out}: cannot be written: {out.parent} is a file")
    if out is not None:
        check_out_dir(out.parent)  # a file further up, or a folder that cannot be written
    images = None
    if inputs:
        channels = Predictor.from_checkpoint(weights, "torch").config.channels
        images = file_slices(inputs, channels)
    backends = CONCRETE if backend.value == "auto" else (backend.value,)
    result = bench(weights, images, backends, batch_size, repeats, log=lambda msg: typer.echo(msg, err=True))
    typer.echo(table(result))
    if out is not None:
        atomic_write_text(out, json.dumps(result, indent=2))
        typer.echo(f"wrote {out}")


def say_close_calls(notes: list[str]) -> None:
    """Count the notes that are close calls of the largest-region step (others, such as a missing
    sequence, were printed as they came)."""
    calls = [n for n in notes if "close call of the largest-region step" in n]
    if calls:
        msg = f"{len(calls)} close call(s) of the largest-region step above: --all-parts keeps every region"
        typer.secho(msg, fg=typer.colors.YELLOW)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind; 127.0.0.1 keeps it on this machine."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port."),
    weights: Path | None = typer.Option(None, help="Checkpoint (.safetensors); default: the shipped model."),
    workers: int = typer.Option(1, min=1, max=64, help="Server processes, each with the model loaded once."),
    backend: Backend = typer.Option("auto", help=BACKEND_HELP),
    max_upload_mb: int = typer.Option(50, min=1, max=2048, help="Largest accepted upload in MiB."),
    allowed_host: list[str] = typer.Option(
        [],
        help="A name clients may reach the server by (repeatable). Default: 127.0.0.1, localhost and ::1 when "
        "bound to one of them, any name otherwise.",
    ),  # fmt: skip
    limit_concurrency: int | None = typer.Option(
        None, min=1, help="Open connections at most (per worker); more are answered 503. Default: no limit."
    ),
) -> None:
    """Start the web page and REST API (needs the serve extra: pip install 'tumorseg[serve]')."""
    import os

    try:
        import uvicorn
    except ImportError:
        fail("serve needs the serve extra: pip install 'tumorseg[serve]'")
    os.environ["TUMORSEG_SERVE_WEIGHTS"] = str(weights or "")
    os.environ["TUMORSEG_SERVE_BACKEND"] = backend.value
    os.environ["TUMORSEG_SERVE_MAX_UPLOAD"] = str(max_upload_mb * 1024 * 1024)
    from .infer import Predictor, default_weights

    try:
        from .api.app import busy_settings
        from .api.middleware import served_names
    except ImportError:
        fail("serve needs the serve extra: pip install 'tumorseg[serve]'")
    os.environ["TUMORSEG_SERVE_ALLOWED_HOSTS"] = ",".join(served_names(host, allowed_host))
    try:
        busy_settings()  # a bad TUMORSEG_SERVE_MAX_BUSY or _BUSY_WAIT: one error before the port is taken
    except TumorsegError as exc:
        fail(str(exc))
    # Load the model once here, so that a missing or broken checkpoint is one clear error, not
    # a worker that dies at start and is started again and again.
    Predictor.from_checkpoint(weights or default_weights(), backend.value)
    sock = _listen_socket(host, port)
    port = sock.getsockname()[1]
    import shutil
    import tempfile

    results = tempfile.mkdtemp(prefix="tumorseg-serve-")  # one folder for every worker's volume masks
    os.environ["TUMORSEG_SERVE_RESULTS"] = results
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"tumorseg serving on http://{shown}:{port}/  (not a medical device)")
    try:
        config = dict(factory=True, host=host, port=port, workers=workers, log_level="warning",
                      # uvicorn counts the connection asking too: N + 1 lets N be open at once
                      limit_concurrency=limit_concurrency + 1 if limit_concurrency else None)  # fmt: skip
        if workers == 1:  # served on the very socket checked above: no other process can take the port between
            import signal

            server = uvicorn.Server(uvicorn.Config("tumorseg.api.app:app_from_env", **config))
            # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again: end
            # as uvicorn.run does (exit 0), with the results folder removed
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            signal.signal(signal.SIGINT, signal.default_int_handler)  # quietly, as uvicorn.run ends
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:
                pass
            if not server.started:
                raise typer.Exit(3)
        else:  # uvicorn's workers share a socket it binds itself, on the port just found free
            sock.close()
            uvicorn.run("tumorseg.api.app:app_from_env", **config)
    finally:
        sock.close()
        shutil.rmtree(results, ignore_errors=True)


def _listen_socket(host: str, port: int):
    """A socket listening on `host:port` (a free port for 0), bound as uvicorn binds it (IPv6 for
    an address with ':', else IPv4), so that the address printed is the one served and a busy
    port or an address that cannot be bound is one clear error."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}")
    sock.set_inheritable(True)
    return sock


_SIGNALLED: list[int] = []  # the signal that stopped the command: it exits with 128 + its number


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt (a stop signal) is in `exc`'s chain of causes."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _interrupted(signum, frame) -> None:
    # said here: Typer turns the KeyboardInterrupt into a silent exit 130. `train` says more
    # itself once its loop runs; this covers what comes before it.
    if sys.argv[1:2] == ["train"]:
        from .distributed import launched_by_torchrun

        how = "torchrun <your launch options> -m tumorseg train --resume RUN" if launched_by_torchrun() else (
            "tumorseg train --resume RUN")  # fmt: skip
        msg = (f"interrupted: continue from the last complete epoch with `{how}`; "
               "with no epoch complete, run the same command again")  # fmt: skip
    else:
        msg = "interrupted: the outputs written so far are complete; the rest were not made"
    typer.secho(msg, err=True)
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt


class _Outlives:
    """stdout or stderr that outlives its reader: once a pipe's reader has gone (`evaluate ... |
    head`), what follows goes to /dev/null and the command still finishes and writes its files."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def _gone(self) -> None:
        import os

        try:
            fd = self._stream.fileno()
        except (OSError, ValueError):  # no file descriptor to point elsewhere
            return
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    @property
    def buffer(self):  # click writes bytes here when the text stream's encoding does not suit it
        return _Outlives(self._stream.buffer)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main() -> None:
    import signal

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
    # SIGTERM (`kill`, `timeout`, job schedulers) stops a command as Ctrl-C does: the code's own
    # `finally` blocks remove its temporaries, and it exits 143. serve and train set their own.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupted)
    _SIGNALLED.clear()
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Outlives):
            setattr(sys, name, _Outlives(stream))
    try:
        try:
            app()
        except SystemExit as exc:  # Typer ends an interrupted command with 130, whichever signal it was
            if exc.code == 130 and _SIGNALLED:
                sys.exit(128 + _SIGNALLED[0])
            raise
        except Exception as exc:  # what a stop signal broke on its way (an import it cut short)
            if not (_SIGNALLED and _caused_by_interrupt(exc)):
                raise
            typer.secho(f"interrupted ({type(exc).__name__}: {str(exc)[:200]})", err=True)
            sys.exit(128 + _SIGNALLED[0])
    except TumorsegError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except OSError as exc:  # a full disk, a file in the way: named by the exception (`atomic_write_bytes`)
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(128 + (_SIGNALLED[0] if _SIGNALLED else 2))


if __name__ == "__main__":
    main()
