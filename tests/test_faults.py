"""Training under faults: SIGKILL at random points and SIGINT; checkpoints never partial."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tumorseg.checkpoint import load_checkpoint
from tumorseg.runs import state_digest

ARGS = ["--epochs", "6", "--batch-size", "4", "--base", "4", "--depth", "2", "--image-size", "64",
        "--val-frac", "0.5", "--test-frac", "0", "--threads", "1"]  # fmt: skip


def start(data, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "tumorseg", "train", "--data", str(data), "--out", str(out),
                             *ARGS, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def epochs_done(out):
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for(cond, timeout=120):
    t = time.time()
    while not cond():
        if time.time() - t > timeout:
            raise TimeoutError
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, lgg_root):
    from conftest import SMALL_PATIENTS, copy_slices

    base = tmp_path_factory.mktemp("faults")
    data = base / "lgg"
    for pid in SMALL_PATIENTS:
        copy_slices(lgg_root / pid, data / pid, range(8, 20))
    p = start(data, base / "ref")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    return data, [json.loads(x) for x in (base / "ref" / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_at_random_points_then_resume_matches(reference, tmp_path):
    data, ref = reference
    out = tmp_path / "run"
    rng = np.random.default_rng(0)
    p, n = start(data, out), 0
    for _ in range(2):  # kill twice: inside an epoch or while a checkpoint is being written
        wait_for(lambda p=p, n=n: epochs_done(out) > n or p.poll() is not None)
        time.sleep(float(rng.uniform(0, 0.8)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        for ck in out.glob("*.safetensors"):
            load_checkpoint(ck)  # complete and valid, or this raises
        n = epochs_done(out)
        p = start(data, out, "--resume", out) if (out / "last.safetensors").exists() else start(data, out)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    got = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in got] == [m["epoch"] for m in ref]
    assert got[-1]["train_loss"] == pytest.approx(ref[-1]["train_loss"], rel=1e-4)
    assert got[-1]["val_dice"] == pytest.approx(ref[-1]["val_dice"], abs=1e-3)


def test_sigint_saves_and_exits_cleanly(reference, tmp_path):
    data, _ = reference
    out = tmp_path / "run"
    p = start(data, out)
    wait_for(lambda: epochs_done(out) >= 1)
    p.send_signal(signal.SIGINT)
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted in epoch" in stdout and "--resume" in stdout
    ck = load_checkpoint(out / "interrupted.safetensors")
    assert ck.meta["interrupted_in_epoch"] >= 2
    done = epochs_done(out)
    assert not (out / "summary.json").exists()
    # resumed with no epoch left: summary.json is written from the epochs done; the partial epoch is kept
    r = subprocess.run([sys.executable, "-m", "tumorseg", "train", "--resume", str(out), "--epochs", str(done)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0 and "nothing to do" in r.stdout and "resuming" not in r.stdout, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    last = load_checkpoint(out / "last.safetensors")
    assert summary["epochs_done"] == done == last.meta["epoch"] and summary["machine"] is None
    assert summary["weights_sha256"] == state_digest(last.model)
    assert summary["best_metric"] == "val_dice" and summary["best_score"] == last.meta["train_state"]["best"]
    assert (out / "interrupted.safetensors").exists() and f"{out / 'interrupted.safetensors'}: holds a part" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tumorseg", "train", "--resume", str(out)], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"resuming {out} at epoch {done + 1}" in r.stdout
    assert json.loads((out / "summary.json").read_text())["epochs_done"] == 6


def test_sigint_in_the_first_epoch_saves_nothing_and_the_same_command_runs_again(reference, tmp_path):
    """Stopped before any epoch was complete, a run once left a folder that could be neither
    resumed nor started again; now it saves nothing and says to start again."""
    data, _ = reference
    out = tmp_path / "run"
    p = start(data, out, "--epochs", "1")
    wait_for(lambda: (out / "config.json").exists())
    p.send_signal(signal.SIGINT)
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    # in epoch 1 ("before the first epoch was complete") or while the data loads (stopped at once)
    assert "nothing saved; start the run again" in stdout, stdout + err
    assert not list(out.glob("*.safetensors"))
    r = subprocess.run([sys.executable, "-m", "tumorseg", "train", "--resume", str(out)], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "start the run again without --resume" in r.stderr
    p = start(data, out, "--epochs", "1")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert epochs_done(out) == 1


def test_sigterm_stops_like_ctrl_c_and_a_resume_clears_the_stale_interrupt(reference, tmp_path):
    data, _ = reference
    out = tmp_path / "run"
    p = start(data, out)
    wait_for(lambda: epochs_done(out) >= 1)
    p.send_signal(signal.SIGTERM)
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in err, err  # 128 + SIGTERM, as a shell reports a kill
    assert "interrupted in epoch" in stdout and (out / "interrupted.safetensors").exists()
    r = subprocess.run([sys.executable, "-m", "tumorseg", "train", "--resume", str(out)], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not (out / "interrupted.safetensors").exists()  # superseded by a later complete epoch


def _limited_file_size(limit: int):
    """For a child process: files may grow to `limit` bytes, and a larger write fails with EFBIG
    (SIGXFSZ ignored), as a full disk fails a write without naming its file."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_checkpoint_that_cannot_be_written_is_named_and_the_run_can_start_again(reference, tmp_path):
    """A full disk in epoch 1 once ended in a traceback naming no file, and left a folder that the
    same command refused (an earlier run) and --resume refused too (nothing to resume)."""
    data, _ = reference
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tumorseg", "train", "--data", str(data), "--out", str(run), *ARGS]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=_limited_file_size(20_000))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"error: [Errno 27] File too large: '{run / 'last.safetensors'}'" in r.stderr, r.stderr  # saved first
    assert not list(run.glob("*.safetensors")) and not list(run.glob(".*.tmp"))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and f"remove {run / 'metrics.jsonl'} to start it again" in again.stderr
    resumed = subprocess.run(cmd + ["--resume", str(run)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 2 and f"remove {run / 'metrics.jsonl'}, then start" in resumed.stderr
    (run / "metrics.jsonl").unlink()
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=300).returncode == 0


def test_a_run_with_a_best_but_no_last_checkpoint_says_how_to_start_again(reference, tmp_path):
    """best.safetensors was once saved before last.safetensors: a full disk (or a kill) between the two
    left a folder that the same command sent to --resume and --resume sent back ('no epoch was complete')."""
    data, _ = reference
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tumorseg", "train", "--data", str(data), "--out", str(run), *ARGS, "--epochs", "1"]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=300).returncode == 0
    (run / "last.safetensors").unlink()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" not in again.stderr.split("error:")[-1].split(";")[-1], again.stderr
    assert f"move {run / 'best.safetensors'} away" in again.stderr and f"remove {run / 'metrics.jsonl'}" in again.stderr
    resumed = subprocess.run(cmd + ["--resume", str(run)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 2 and "no last.safetensors was saved" in resumed.stderr, resumed.stderr
    assert f"move {run / 'best.safetensors'} away" in resumed.stderr
    for p in (run / "metrics.jsonl", run / "summary.json"):
        p.unlink()
    (run / "best.safetensors").rename(tmp_path / "kept.safetensors")
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=300).returncode == 0
    assert (run / "last.safetensors").is_file()


def test_resume_with_a_damaged_config_or_history_says_so(reference, tmp_path):
    """A cut config.json once failed --resume with no way forward (a missing one falls back to the
    checkpoint's config); a cut metrics.jsonl was rewritten without its lost epochs, without a word."""
    data, _ = reference
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tumorseg", "train", "--data", str(data), "--out", str(run), *ARGS, "--epochs", "2"]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=300).returncode == 0
    config = (run / "config.json").read_text()
    (run / "config.json").write_text(config[: len(config) // 2])
    resume = [sys.executable, "-m", "tumorseg", "train", "--resume", str(run), "--epochs", "3"]
    r = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and f"{run / 'config.json'}: cannot read config" in r.stderr, r.stderr
    assert f"remove it to resume with the config {run / 'last.safetensors'} carries" in r.stderr
    (run / "config.json").write_text(config)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(lines[0][:10] + "\n" + lines[1])  # epoch 1 cut short
    r = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"warning: {run / 'metrics.jsonl'}: has no readable line for 1 of the 2 epochs done" in r.stdout, r.stdout


def test_a_write_cut_short_leaves_the_earlier_file_whole(tmp_path):
    """Every output is written to a temporary file, then renamed: a write that fails part-way (here
    the file-size limit, as a full disk would) leaves the file it replaces as it was, and no
    temporary file. Written in place, the earlier checkpoint or mask would be cut short."""
    target = tmp_path / "last.safetensors"
    target.write_bytes(b"earlier, complete")
    script = (
        "import resource, signal, sys\n"
        "from tumorseg.io import atomic_write_bytes\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    atomic_write_bytes(sys.argv[1], b'x' * 100000)\n"
        "except OSError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    assert str(target) in r.stdout and ".tmp" not in r.stdout  # the error names the output, not its temporary
    assert target.read_bytes() == b"earlier, complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]
