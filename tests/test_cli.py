import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_here
from PIL import Image


def tumorseg(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tumorseg", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_help_lists_commands():
    r = tumorseg("--help")
    assert r.returncode == 0
    assert "train" in r.stdout


def test_the_package_and_its_help_load_without_torch():
    """`import tumorseg` once loaded PyTorch (1.9 s for `tumorseg --help`); its names load on first use."""
    code = ("import sys, tumorseg, tumorseg.cli; assert 'torch' not in sys.modules, 'torch loaded'; "
            "assert tumorseg.UNet.__name__ == 'UNet' and 'torch' in sys.modules; "
            "assert set(tumorseg.__all__) <= set(dir(tumorseg)); assert not {'importlib', 'TYPE_CHECKING', "
            "'annotations', 'cli'} & set(dir(tumorseg)), dir(tumorseg); tumorseg.nothing_of_that_name")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "AttributeError: module 'tumorseg' has no attribute 'nothing_of_that_name'" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "tumorseg", "--help"], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and "predict" in r.stdout and " torch\n" not in r.stderr


def test_help_keeps_the_install_hint_brackets():
    # Rich markup would take "[serve]" for a tag and print "pip install 'tumorseg'"
    r = tumorseg("serve", "--help", env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0
    assert "pip install 'tumorseg[serve]'" in r.stdout


def test_predict_help_names_every_input_it_reads():
    """Its inputs line once left out DICOM series folders, which predict reads."""
    r = tumorseg("predict", "--help", env={**os.environ, "COLUMNS": "250"})
    shown = " ".join(r.stdout.split())
    assert r.returncode == 0 and ".jpeg" in shown and ".nii.gz" in shown and "DICOM series folders" in shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "--epochs: Input should be greater than or equal to 1"),
        (["--image-size", "100"], "invalid options: --image-size 100 must be divisible by 2\\*\\*depth"),
        (["--lr", "-1"], "--lr: Input should be greater than 0"),
        (["--dim-lesions", "1.5"], "--dim-lesions: Input should be less than or equal to 1"),
        (["--zoom", "1"], "--zoom: Input should be less than 1"),
        (["--member", "8"], "--member: Input should be less than or equal to 7"),
        (["--val-frac", "0.6", "--test-frac", "0.5"], "--val-frac \\+ --test-frac must be below 1"),
    ],
)
def test_out_of_range_options(args, message, tmp_path):
    import re

    r = cli_here("train", "--data", tmp_path, "--out", tmp_path / "r", *args)
    assert r.returncode != 0
    assert re.search(message, r.stderr), r.stderr
    assert "Traceback" not in r.stderr


def test_missing_data_folder(tmp_path):
    r = cli_here("train", "--data", tmp_path / "missing", "--out", tmp_path / "r")
    assert r.returncode == 2
    assert "missing: data folder does not exist" in r.stderr and "Traceback" not in r.stderr


def test_empty_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli_here("train", "--data", tmp_path / "empty", "--out", tmp_path / "r")
    assert r.returncode == 2 and "no slices found" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_file_named(tiny_lgg, tmp_path):
    victim = next(tiny_lgg.glob("*/*_12.png"))
    victim.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = cli_here("train", "--data", tiny_lgg, "--out", tmp_path / "r", "--epochs", "1")
    assert r.returncode == 2
    assert f"{victim}: cannot read image" in r.stderr and "Traceback" not in r.stderr


def test_cli_train_and_resume(tiny_lgg, tmp_path):
    run = tmp_path / "run"
    common = ["--base", "4", "--depth", "2", "--image-size", "64", "--val-frac", "0.5", "--test-frac", "0"]
    r = tumorseg("train", "--data", tiny_lgg, "--out", run, "--epochs", "1", *common)
    assert r.returncode == 0, r.stderr
    assert "parameters" in r.stdout and "val per-patient Dice" in r.stdout
    assert "validation scores the EMA weights" in r.stdout  # why a short run's Dice barely moves
    assert "img_s" not in r.stderr  # progress bars only on a terminal, never as junk in a log file
    r = tumorseg("train", "--resume", run, "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and "epoch 2:" in r.stdout
    said = "--epochs 2, where the run was started for 1: the cosine schedule is recomputed, so epoch 2 trains at"
    assert said in r.stdout  # once the schedule was stretched without a word
    r = cli_here("train", "--resume", run, "--data", f"{tiny_lgg}/../{os.path.basename(tiny_lgg)}")
    assert r.returncode == 0 and "options differ" not in r.stderr, r.stderr  # the same folder, another spelling
    r = cli_here("train", "--resume", run, "--base", "8")
    assert r.returncode == 2 and "options differ from it: --base" in r.stderr
    r = cli_here("train", "--resume", run)  # all its epochs done
    assert r.returncode == 0, r.stderr
    assert "already trained all 2 epochs; nothing to do" in r.stdout and "resuming" not in r.stdout
    config = (run / "config.json").read_text()
    r = cli_here("train", "--resume", run, "--epochs", "1")  # fewer epochs: nothing to do, and nothing rewritten
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr
    assert (run / "config.json").read_text() == config  # once saved "epochs": 1, so a plain resume stopped there
    (run / "config.json").unlink()  # its last checkpoint carries the config: resuming still works
    r = tumorseg("train", "--resume", run, "--epochs", "3")
    assert r.returncode == 0 and "epoch 3:" in r.stdout, r.stderr
    assert (run / "config.json").is_file()
    # a fresh run into it, and --out beside --resume, are refused before anything changes
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    r = cli_here("train", "--data", tiny_lgg, "--out", run, "--epochs", "1", "--base", "8", *common[2:])
    assert r.returncode == 2 and f"{run}: holds an earlier run" in r.stderr and f"--resume {run}" in r.stderr
    r = cli_here("train", "--resume", run, "--out", tmp_path / "elsewhere", "--epochs", "3")
    assert r.returncode == 2 and "leave out --out" in r.stderr and not (tmp_path / "elsewhere").exists()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # an --out that cannot be created is named, without a traceback
    (tmp_path / "afile").write_text("x")
    r = cli_here("train", "--data", tiny_lgg, "--out", tmp_path / "afile" / "run", "--epochs", "1", *common)
    assert r.returncode == 2 and "afile is a file" in r.stderr and "Traceback" not in r.stderr


def test_resume_finds_its_data_after_a_move_and_refuses_other_patients(tiny_lgg, tmp_path):
    """A relative --data is kept as typed: resumed from another folder, or after the data moved,
    the run says where it looked and takes --data; other patients there are refused, before
    anything in the run folder changes."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "lgg").symlink_to(tiny_lgg)
    common = ["--base", "4", "--depth", "2", "--image-size", "64", "--val-frac", "0.5", "--test-frac", "0"]
    r = tumorseg("train", "--data", "lgg", "--out", "run", "--epochs", "1", *common, cwd=work)
    assert r.returncode == 0, r.stderr
    run = work / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = cli_here("train", "--resume", run, "--epochs", "2", cwd=elsewhere)
    assert r.returncode == 2 and f"{run}: the run's data folder lgg is not found from {elsewhere}" in r.stderr
    assert "give --data" in r.stderr and "Traceback" not in r.stderr
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    first = sorted(tiny_lgg.iterdir())[0]
    (fewer / first.name).symlink_to(first)
    r = cli_here("train", "--resume", run, "--data", fewer, "--epochs", "2", cwd=elsewhere)
    assert r.returncode == 2 and f"{fewer}: does not hold the patients {run / 'last.safetensors'}" in r.stderr
    # counted over all patients (once "10 patients differ" for a part of 5: a symmetric difference)
    assert re.search(r"\(\d+ of its \d+ patients gone\)", r.stderr), r.stderr
    (tmp_path / "empty").mkdir()
    cases = [(tmp_path / "nowhere", "no such run folder"), (run / "config.json", "is a file, not a run"),
             (tmp_path / "empty", "holds no run to resume (no config.json or last.safetensors)")]  # fmt: skip
    for where, said in cases:
        r = cli_here("train", "--resume", where)  # once "nowhere/config.json: cannot read config ([Errno 2] ..."
        assert r.returncode == 2 and f"{where}: {said}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    r = tumorseg("train", "--resume", run, "--data", "../work/lgg", "--epochs", "2", cwd=elsewhere)
    assert r.returncode == 0 and "resuming" in r.stdout, r.stderr
    assert '"data": "../work/lgg"' in (run / "config.json").read_text()  # where it is read from now


def test_cli_train_device_cuda_without_cuda(tiny_lgg, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    r = cli_here("train", "--data", tiny_lgg, "--out", tmp_path / "run", "--epochs", "1", "--device", "cuda")
    why = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
    assert r.returncode == 2 and f"--device cuda: {why}" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("threshold", ["0", "1", "nan", "1.5"])
def test_a_threshold_of_0_or_1_is_refused_before_any_work(command, threshold, tmp_path):
    """`probs > 1` marks nothing and `probs > 0` every pixel: both are refused, and nothing is written.
    --help once showed the range as 0.0<=x<=1.0."""
    (tmp_path / "in").mkdir()
    args = [tmp_path / "in"] if command == "predict" else ["--data", tmp_path / "in"]
    r = cli_here(command, *args, "--out", tmp_path / "o", "--threshold", threshold)
    assert r.returncode == 2
    assert f"--threshold': {float(threshold)}: must lie strictly between 0 and 1" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
    shown = " ".join(tumorseg(command, "--help").stdout.split())
    assert "0 < T < 1" in shown and "<=x<=" not in shown


def test_train_help_shows_the_config_defaults():
    """The train options default to None (so --resume knows what was given); help shows the config's."""
    from tumorseg.config import TrainConfig

    r = tumorseg("train", "--help", env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    lines: dict[str, str] = {}  # each option's help, its wrapped lines joined
    for line in r.stdout.splitlines():
        if line.lstrip().startswith("--"):
            option = line.split()[0]
            lines[option] = line
        elif lines and line.startswith("      "):
            lines[option] += " " + line.strip()
    lines = {k: " ".join(v.split()) for k, v in lines.items()}
    d = TrainConfig()
    for option, value in (("--epochs", d.epochs), ("--test-frac", d.test_frac), ("--out", d.out),
                          ("--depth", d.model.depth), ("--loss", d.loss)):  # fmt: skip
        assert f"[default: {value}]" in lines[option], lines[option]
    assert "[default: on]" in lines["--augment"] and "[default:" not in lines["--resume"]


def test_resume_of_an_early_stopped_run_does_nothing(tiny_lgg, tmp_path):
    """An early-stopped run once trained on when resumed; an ensemble member in that state
    already counted as finished."""
    run = tmp_path / "run"
    common = ["--base", "4", "--depth", "2", "--image-size", "64", "--val-frac", "0.5", "--test-frac", "0"]
    # a learning rate this small leaves the validation Dice where it was, so the run stops after epoch 2
    r = tumorseg("train", "--data", tiny_lgg, "--out", run, "--epochs", "6", "--patience", "1", "--lr", "1e-9", *common)
    assert r.returncode == 0 and "early stop" in r.stdout, r.stdout + r.stderr
    kept = ("config.json", "split.json", "metrics.jsonl", "last.safetensors")
    away = tmp_path / "away"
    away.mkdir()
    for ck in run.glob("*.safetensors"):  # checkpoints moved away: the run's record is still not overwritten
        ck.rename(away / ck.name)
    r = cli_here("train", "--data", tiny_lgg, "--out", run, "--epochs", "1", *common)
    assert r.returncode == 2 and "holds an earlier run (metrics.jsonl, summary.json)" in r.stderr, r.stderr
    for ck in away.iterdir():
        ck.rename(run / ck.name)
    kept += ("summary.json",)  # not even rewritten alike (atomic writes make new inodes), nor the data read:
    next(p for p in sorted(tiny_lgg.rglob("*.png")) if "_mask" not in p.name).write_bytes(b"not read")
    before = {name: ((run / name).read_bytes(), (run / name).stat().st_ino) for name in kept}
    r = cli_here("train", "--resume", run)
    assert r.returncode == 0, r.stderr
    assert "stopped early at epoch 2" in r.stdout and "nothing to do" in r.stdout and "resuming" not in r.stdout
    assert "train slices" not in r.stdout
    assert {name: ((run / name).read_bytes(), (run / name).stat().st_ino) for name in kept} == before


def test_more_folds_than_patients_and_too_few_for_a_test_split_are_said(tiny_lgg, tmp_path):
    common = ["--base", "4", "--depth", "2", "--image-size", "64", "--epochs", "1"]
    for fold in ("2", "0"):  # fold 0 has a validation patient, but fold 2 of the same split none
        r = cli_here("train", "--data", tiny_lgg, "--out", tmp_path / "a" / "b" / "f", "--folds", "3", "--fold", fold,
                     "--test-frac", "0", *common)  # fmt: skip
        assert r.returncode == 2 and "--folds 3: only 2 patients are outside the test split" in r.stderr, r.stderr
        # not even an empty folder, nor those it made above it (a/b/ once stayed)
        assert "use --folds 2 or fewer" in r.stderr and not (tmp_path / "a").exists()
    r = tumorseg("train", "--data", tiny_lgg, "--out", tmp_path / "t", "--val-frac", "0.5", *common)
    assert r.returncode == 0 and "--test-frac 0.2 gives no test patients with 2 patients" in r.stdout, r.stderr


def test_train_outside_the_repository_says_the_default_data_is_missing(tmp_path):
    """Run from another folder without --data: once "../shared/data/lgg: data folder does not exist",
    with no word of the default or of --data, and an empty runs/ left behind."""
    r = cli_here("train", "--epochs", "1", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    said = f"no --data given, and the default ../shared/data/lgg is not found from {tmp_path}; give --data DIR"
    assert said in r.stderr
    assert not any(tmp_path.iterdir())


def test_a_data_folder_one_level_too_high_points_to_the_patients(lgg_root, tmp_path):
    """`dl/kaggle_3m/TCGA_...` given as `dl` once got "no slices found" with no word of kaggle_3m."""
    (tmp_path / "dl" / "kaggle_3m").mkdir(parents=True)
    (tmp_path / "dl" / "kaggle_3m" / "TCGA_CS_4941_19960909").symlink_to(lgg_root / "TCGA_CS_4941_19960909")
    hint = f"did you mean {tmp_path / 'dl' / 'kaggle_3m'}?"
    for cmd in (["check-data", tmp_path / "dl"], ["evaluate", "--data", tmp_path / "dl"],
                ["predict", tmp_path / "dl", "--out", tmp_path / "o"]):  # fmt: skip
        r = cli_here(*cmd)
        assert r.returncode in (1, 2) and hint in r.stdout + r.stderr, (cmd, r.stdout, r.stderr)
        if cmd[0] == "check-data":  # its warning once said the opposite ("no slices in this folder"), and "1 errors"
            said = r.stdout + r.stderr
            assert "kaggle_3m: no slices in this folder but patient folders inside it, which are not searched" in said
            assert said.rstrip().endswith("1 error"), said


def test_a_missing_tumorseg_weights_is_named_as_the_variable(tmp_path, monkeypatch):
    from tumorseg.errors import TumorsegError
    from tumorseg.infer import default_weights

    monkeypatch.setenv("TUMORSEG_WEIGHTS", str(tmp_path / "nowhere.safetensors"))
    with pytest.raises(TumorsegError, match=r"\$TUMORSEG_WEIGHTS=.*nowhere\.safetensors: no such file"):
        default_weights()
    monkeypatch.delenv("TUMORSEG_WEIGHTS")
    monkeypatch.setattr("tumorseg.infer.DEFAULT_WEIGHTS", tmp_path / "gone.safetensors")
    with pytest.raises(TumorsegError, match=r"gone\.safetensors is missing: reinstall tumorseg, or give --weights"):
        default_weights()  # said for the Python API too ("no --weights given" once read as a CLI-only error)


def test_help_keeps_option_names_whole_in_80_columns():
    r = subprocess.run([sys.executable, "-m", "tumorseg", "train", "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "80"}, timeout=60)  # fmt: skip
    assert r.returncode == 0
    for flag in ("--missing-sequences", "--sequence-jitter", "--deep-supervision", "--hard-empty"):
        assert flag in r.stdout, flag


def test_export_never_replaces_a_device_or_fifo(tiny_run, tmp_path):
    """`export --out /dev/full` once printed "wrote /dev/full" and left a regular file where the
    device was: the write is renamed over its target."""
    import stat

    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    r = cli_here("export", "--weights", tiny_run / "last.safetensors", "--out", fifo)
    said = f"{fifo}: cannot write the graph (exists and is not a regular file, so it is not replaced)"
    assert r.returncode == 2 and said in r.stderr, r.stdout + r.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and "Traceback" not in r.stderr


def test_train_refuses_what_would_fail_later_and_warns_of_what_cannot_work(tiny_lgg, tmp_path):
    """Batch 1 with a 1x1 bottleneck failed in batch norm after the data was read; a --val-frac that
    gives no validation patient, and training slices without tumor, passed without a word."""
    r = cli_here("train", "--data", tiny_lgg, "--out", tmp_path / "a", "--image-size", "16", "--depth", "4",
                 "--batch-size", "1")  # fmt: skip
    assert r.returncode == 2 and "the bottleneck is 1x1" in r.stderr and not (tmp_path / "a").exists(), r.stderr
    one = tmp_path / "one"
    (one / "p").mkdir(parents=True)
    src = sorted(tiny_lgg.iterdir())[0]
    for f in src.iterdir():  # one patient, its tumor-free slices only
        mask = f if f.stem.endswith("_mask") else f.with_name(f"{f.stem}_mask{f.suffix}")
        if np.asarray(Image.open(mask)).max() == 0:
            (one / "p" / f.name).write_bytes(f.read_bytes())
    r = tumorseg("train", "--data", one, "--out", tmp_path / "b", "--epochs", "1", "--base", "4", "--depth", "2",
                 "--image-size", "64", "--val-frac", "0.5", "--test-frac", "0", "--patience", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "--val-frac 0.5 gives no validation patients with 1 patient " in r.stdout
    assert "no training slice has tumor" in r.stdout and "give --val-frac" not in r.stdout


def test_a_run_folder_inside_the_data_is_not_a_patient(tiny_run, tiny_lgg):
    """`train --out` inside `--data`: its curves.png once made check-data, evaluate and train refuse
    the data ("image has no mask")."""
    import shutil

    from tumorseg.data.check import check_data
    from tumorseg.data.lgg import find_cases

    before = [c.id for c in find_cases(tiny_lgg)]
    shutil.copytree(tiny_run, tiny_lgg / "run")
    assert list((tiny_lgg / "run").glob("*.png")), "a run folder holds images"
    assert [c.id for c in find_cases(tiny_lgg)] == before and not check_data(tiny_lgg)["errors"]


def test_fractions_that_leave_no_training_patient_are_named(tiny_lgg, lgg_root, tmp_path):
    """`--val-frac 0.7` on 3 patients said only "too few patients (3) to train"."""
    from conftest import copy_slices

    copy_slices(lgg_root / "TCGA_CS_4944_20010208", tiny_lgg / "TCGA_CS_4944_20010208", range(10, 13))
    r = cli_here("train", "--data", tiny_lgg, "--out", tmp_path / "r", "--epochs", "1", "--val-frac", "0.7")
    assert r.returncode == 2
    assert "--val-frac 0.7 and --test-frac 0.2 leave none to train on (train/val/test 0/2/1)" in r.stderr, r.stderr


def test_predict_counts_its_files_in_words():
    """`1 of 1 inputs segmented; 1 files in o` read as a typo."""
    from tumorseg.cli import _segmented

    assert _segmented(1, 1, 1, Path("o")) == "1 of 1 inputs segmented; 1 file in o"
    assert _segmented(0, 3, 0, Path("o")) == "0 of 3 inputs segmented; 0 files in o"


def test_version_names_tumorseg_torch_and_python():
    import platform
    from importlib.metadata import version

    import tumorseg

    env = {k: v for k, v in os.environ.items() if k != "TUMORSEG_WEIGHTS"}
    r = subprocess.run([sys.executable, "-m", "tumorseg", "--version"], capture_output=True, text=True, timeout=60,
                       env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    said = f"tumorseg {tumorseg.__version__} (torch {version('torch')}, Python {platform.python_version()})"
    from tumorseg.infer import DEFAULT_WEIGHTS

    card = DEFAULT_WEIGHTS.parent / "MODEL_CARD.md"
    extras = "extras: " + "; ".join(f"{e} ({', '.join(f'{p} {version(p)}' for p in ps)})" for e, ps in
                                   (("onnx", ("onnxruntime", "onnxscript")), ("medical", ("nibabel", "pydicom")),
                                    ("serve", ("fastapi", "uvicorn"))))  # fmt: skip
    assert r.stdout.splitlines() == [said, extras, f"shipped model: {DEFAULT_WEIGHTS} (CC BY-NC-SA 4.0, "
                                                   f"non-commercial; model card: {card})"]  # fmt: skip
    assert version("tumorseg") == tumorseg.__version__  # pyproject reads it from the package
    r = subprocess.run([sys.executable, "-m", "tumorseg", "--version"], capture_output=True, text=True, timeout=60,
                       env={**env, "TUMORSEG_WEIGHTS": "/x/w.safetensors"})  # fmt: skip
    assert r.stdout.splitlines()[3] == "used without --weights: $TUMORSEG_WEIGHTS=/x/w.safetensors"
    code = "import sys; from tumorseg.cli import main; sys.argv = ['tumorseg', '--version']\n"
    code += "try: main()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.splitlines()[-1] == "False", r.stdout + r.stderr  # fast: PyTorch is not loaded


def test_version_reads_the_extras_pyproject_defines():
    tomllib = pytest.importorskip("tomllib")
    from tumorseg.cli import EXTRAS

    defined = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    optional = defined["project"]["optional-dependencies"]
    for extra, packages in EXTRAS.items():
        listed = {req.split(">")[0].split("=")[0].strip().lower() for req in optional[extra]}
        assert set(packages) <= listed, (extra, packages, listed)


def test_the_closing_evaluate_command_quotes_paths_and_needs_a_split(tmp_path, capsys):
    """train's last lines: a path with a space is quoted so the command runs as printed; a run folder
    with no split.json (or no test patients) gets no command."""
    import json
    import shlex

    from tumorseg.cli import _say_run_folder

    run = tmp_path / "my run"
    run.mkdir()
    (run / "last.safetensors").write_bytes(b"x")
    _say_run_folder(run, "my data")
    assert capsys.readouterr().out == f"run folder: {run} (last.safetensors)\n"
    (run / "split.json").write_text(json.dumps({"train": ["a"], "val": [], "test": ["b", "c"]}))
    _say_run_folder(run, "my data")
    said = capsys.readouterr().out.splitlines()[1]
    command = shlex.split(said.split(": ", 1)[1])
    assert said.startswith("score it on its 2 test patients: ")
    assert command == ["tumorseg", "evaluate", "--data", "my data", "--weights", str(run / "last.safetensors"),
                       "--out", str(run / "evaluate"), "--report"]  # fmt: skip
