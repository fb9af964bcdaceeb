"""DDP with torchrun: 2 CPU processes over gloo on a tiny model and real patients."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tumorseg.evaluation import evaluate

SCRIPT = textwrap.dedent(
    """
    import gc, json, os, sys
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from tumorseg.config import validate_config
    from tumorseg.train import fit
    # DDP wrappers still alive when the process group is destroyed keep it until they are
    # collected, which may be at interpreter shutdown, where gloo can abort (SIGABRT)
    alive, destroy = [], dist.destroy_process_group
    def counted(*args, **kwargs):
        alive.append(sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects()))
        return destroy(*args, **kwargs)
    dist.destroy_process_group = counted
    cfg = validate_config(json.loads(sys.argv[1]))
    summary = fit(cfg, resume=len(sys.argv) > 2, progress=False)
    summary["ddp_alive_at_destroy"] = alive
    rank = os.environ.get("RANK", "0")
    with open(os.path.join(cfg.out, f"rank{rank}.json"), "w") as f:
        json.dump(summary, f)
    """
)


def launch(tmp_path, cfg: dict, nproc: int, resume: bool = False) -> subprocess.CompletedProcess:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    args = [str(script), json.dumps(cfg)] + (["resume"] if resume else [])
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    else:
        cmd = [sys.executable, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in range(nproc if nproc > 1 else 0):
        summary = json.loads((Path(cfg["out"]) / f"rank{rank}.json").read_text())
        assert summary["ddp_alive_at_destroy"] == [0], f"rank {rank}: DDP outlived its process group"
    return r


def base_cfg(data, out, **kw):
    cfg = {"data": str(data), "out": str(out), "epochs": 2, "batch_size": 8, "lr": 3e-3, "val_frac": 0.0,
           "test_frac": 0.0, "threads": 1, "ema": 0.0, "model": {"base": 4, "depth": 2, "image_size": 64}}  # fmt: skip
    cfg.update(kw)
    return cfg


def read_metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_ensemble(lgg_root, tmp_path_factory):
    """A 2-member ensemble trained by 2 processes for 1 epoch, validated on 2 of 3 patients (one
    per rank: 1 training patient is too few to split by rank)."""
    from conftest import SMALL_PATIENTS, copy_slices

    base = tmp_path_factory.mktemp("ddp_ensemble")
    for pid in (*SMALL_PATIENTS, "TCGA_CS_4944_20010208"):
        copy_slices(lgg_root / pid, base / "lgg" / pid, range(6, 22))
    cfg = base_cfg(base / "lgg", base / "ens", val_frac=0.5, epochs=1)
    cfg["model"]["members"] = 2
    return base / "lgg", base / "ens", launch(base, cfg, nproc=2)


def test_each_members_validation_under_ddp_equals_evaluate_in_one_process(ddp_ensemble):
    """Each rank scores its own validation patient; the gathered scores are what one process gets."""
    data, run, r = ddp_ensemble
    assert "DDP: 2 processes, 4 slices each" in r.stdout
    assert r.stdout.count("epoch 1:") == 2  # one line per member, from rank 0 only
    for member in (run / "member0", run / "member1"):
        last = read_metrics(member)[-1]
        assert len(last["val_per_patient"]) == 2
        res = evaluate(data, member / "last.safetensors", "val", log=lambda *a: None)  # one process
        for row in res["per_patient"]:
            assert row["dice"] == pytest.approx(last["val_per_patient"][row["patient"]], abs=1e-6)


def test_an_ensemble_under_ddp_scores_its_validation_patients_across_ranks(ddp_ensemble):
    """An ensemble's summary.json once gave no validation Dice of its own. Under torchrun the ranks
    share its validation patients (all-reduced counts); the result equals evaluate's, logged once."""
    data, run, r = ddp_ensemble
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["val_per_patient"]) == 2 and r.stdout.count("ensemble val per-patient Dice mean") == 1
    assert all("last_val_dice" in m for m in summary["member_results"])  # each member's own, beside it
    res = evaluate(data, run / "last.safetensors", "val", largest=False, fill_holes=False, log=lambda *a: None)
    assert {row["patient"]: row["dice"] for row in res["per_patient"]} == pytest.approx(summary["val_per_patient"],
                                                                                         abs=1e-6)  # fmt: skip


# one run of each kind serves several tests: torchrun starts cost about 6 s each here
COMPARED = dict(epochs=2, augment=False, schedule="none", hard_empty=1.0, empty_ratio=100.0)


@pytest.fixture(scope="module")
def one_and_two(lgg_root, tmp_path_factory):
    """The same run (every empty slice drawn and ranked by hard_empty) in 1 process and in 2."""
    from conftest import SMALL_PATIENTS, copy_slices

    base = tmp_path_factory.mktemp("one_and_two")
    for pid in SMALL_PATIENTS:
        copy_slices(lgg_root / pid, base / "lgg" / pid, range(8, 20))
    launch(base, base_cfg(base / "lgg", base / "one", **COMPARED), nproc=1)
    launch(base, base_cfg(base / "lgg", base / "two", **COMPARED), nproc=2)
    return base / "lgg", base / "one", base / "two"


def test_two_processes_follow_the_single_process_loss_curve(one_and_two):
    _, one, two = one_and_two
    a, b = read_metrics(one), read_metrics(two)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        # every slice each epoch; batch-norm statistics differ (4 vs 8 slices), and epoch 2's order,
        # drawn from each run's own hard-empty marks
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=0.05)
    s0, s1 = (json.loads((two / f"rank{i}.json").read_text()) for i in (0, 1))
    assert s0["weights_sha256"] == s1["weights_sha256"]


def test_hard_empty_under_ddp_ranks_the_slices_one_process_ranks(one_and_two):
    """Each rank marks the empty slices it saw; the summed views match one process's (only
    batch-norm statistics differ), so every rank draws the next epoch's slices alike."""
    import numpy as np

    from tumorseg.checkpoint import load_checkpoint

    _, one, two = one_and_two
    a, b = (load_checkpoint(r / "last.safetensors").extra["hard_empty.marked"].numpy() for r in (one, two))
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    seen = ~np.isnan(a)
    assert seen.sum() >= 4
    np.testing.assert_allclose(b[seen], a[seen], rtol=0.03)
    assert np.corrcoef(a[seen], b[seen])[0, 1] > 0.9  # the same slices, not a shuffle of them


def test_deep_supervision_under_ddp_keeps_heads_and_weights_equal_on_every_rank(tiny_lgg, tmp_path):
    """The heads are inside the DDP wrapper (a head outside it would fail or drift): every rank ends
    with the same U-Net, the loss follows one process's, and rank 0 saves the heads for --resume."""
    from tumorseg.checkpoint import load_checkpoint

    one, two = tmp_path / "one", tmp_path / "two"
    cfg = dict(epochs=2, augment=False, schedule="none", deep_supervision=True)
    launch(tmp_path, base_cfg(tiny_lgg, one, **cfg), nproc=1)
    launch(tmp_path, base_cfg(tiny_lgg, two, **cfg), nproc=2)
    s0, s1 = (json.loads((two / f"rank{i}.json").read_text()) for i in (0, 1))
    assert s0["weights_sha256"] == s1["weights_sha256"]
    for x, y in zip(read_metrics(one), read_metrics(two)):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=0.05)
    heads = load_checkpoint(two / "last.safetensors").extra
    assert sorted(k for k in heads if k.startswith("aux.")) == ["aux.0.bias", "aux.0.weight"]


def test_single_process_checkpoint_resumes_under_ddp(one_and_two, tmp_path):
    import shutil

    data, one, _ = one_and_two
    run = tmp_path / "r"
    shutil.copytree(one, run)
    r = launch(tmp_path, base_cfg(data, run, **{**COMPARED, "epochs": 3}), nproc=2, resume=True)
    assert "resuming" in r.stdout
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2, 3]
    s0, s1 = (json.loads((run / f"rank{i}.json").read_text()) for i in (0, 1))
    assert s0["weights_sha256"] == s1["weights_sha256"]


def test_ddp_run_resumes_with_the_same_world_size(one_and_two, tmp_path):
    """Stopped after epoch 1 and resumed, a DDP run ends where the unbroken one did: the
    hard-empty marks and the optimizer come back on every rank."""
    data, _, full = one_and_two
    part = tmp_path / "part"
    launch(tmp_path, base_cfg(data, part, **{**COMPARED, "epochs": 1}), nproc=2)  # stopped after epoch 1
    r = launch(tmp_path, base_cfg(data, part, **COMPARED), nproc=2, resume=True)
    assert "resuming" in r.stdout and "at epoch 2" in r.stdout
    a, b = read_metrics(full), read_metrics(part)
    assert [m["epoch"] for m in b] == [1, 2]
    assert b[1]["train_loss"] == pytest.approx(a[1]["train_loss"], rel=1e-4)


def test_ctrl_c_under_torchrun_stops_every_rank_after_one_batch_and_saves(tiny_lgg, tmp_path):
    """A terminal's Ctrl-C reaches torchrun (its ranks run in sessions of their own), which
    forwards it to each rank. Once that killed the ranks at once and saved nothing; now they agree
    on a batch, rank 0 saves interrupted.safetensors, and --resume under torchrun finishes the run."""
    import os
    import signal
    import time

    from tumorseg.checkpoint import load_checkpoint

    run = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = ["-m", "tumorseg", "train", "--data", str(tiny_lgg), "--out", str(run), "--epochs", "12",
            "--batch-size", "8", "--base", "4", "--depth", "2", "--image-size", "64", "--val-frac", "0",
            "--test-frac", "0", "--threads", "1"]  # fmt: skip
    p = subprocess.Popen(torchrun + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)  # fmt: skip
    t = time.time()
    while not ((run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2):
        assert p.poll() is None and time.time() - t < 240, p.stderr.read() if p.poll() is not None else "timeout"
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGINT)  # what the terminal does: every process of its group
    t = time.time()
    stdout, err = p.communicate(timeout=120)
    assert time.time() - t < 28  # the ranks ended by themselves, before torchrun's 30 s SIGKILL
    assert "interrupted in epoch" in stdout, stdout + err[-3000:]
    assert f"continue with: torchrun <your launch options> -m tumorseg train --resume {run} (this run had 2" in stdout
    assert "SIGKILL" not in err
    ck = load_checkpoint(run / "interrupted.safetensors")
    done = len((run / "metrics.jsonl").read_text().splitlines())
    assert ck.meta["interrupted_in_epoch"] == done + 1 < 13
    r = subprocess.run(torchrun + args[:3] + ["--resume", str(run)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [m["epoch"] for m in read_metrics(run)] == list(range(1, 13))
    assert not (run / "interrupted.safetensors").exists()
    assert json.loads((run / "summary.json").read_text())["machine"]["processes"] == 2


def test_sigterm_to_one_rank_stops_them_all_and_rank_0_saves(tiny_lgg, tmp_path):
    """Only rank 1 is signalled (a scheduler or a user killing one process): it tells the others at
    the next batch and all stop there; rank 0 saves, and the ranks end after that save."""
    import os
    import signal
    import time

    from tumorseg.checkpoint import load_checkpoint

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tumorseg",
           "train", "--data", str(tiny_lgg), "--out", str(run), "--epochs", "12", "--batch-size", "8", "--base", "4",
           "--depth", "2", "--image-size", "64", "--val-frac", "0", "--test-frac", "0", "--threads", "1"]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = time.time()
    while not ((run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2):
        assert p.poll() is None and time.time() - t < 240, p.stderr.read() if p.poll() is not None else "timeout"
        time.sleep(0.02)
    ranks = {}
    for task in Path(f"/proc/{p.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                ranks[int(rank[0][5:])] = int(child)
    os.kill(ranks[1], signal.SIGTERM)
    stdout, err = p.communicate(timeout=120)
    assert "interrupted in epoch" in stdout, stdout + err[-3000:]
    # rank 0 ends as the signalled rank does, 143 (once 130), unless torchrun, seeing rank 1 end
    # first, terminates it on its way out (-15): both after rank 0 has saved
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", err)
    assert codes and set(codes) <= {"143", "-15"}, err[-3000:]
    ck = load_checkpoint(run / "interrupted.safetensors")
    assert ck.meta["interrupted_in_epoch"] == len(read_metrics(run)) + 1 < 13


def test_ranks_that_see_other_data_or_one_slice_at_a_1x1_bottleneck_are_refused(tiny_lgg, tmp_path):
    """Each node reads its own copy of --data: rank 1 with a partial copy of one patient once trained
    on other slices until the collectives hung, and with another patient its validation Dice was
    filed under rank 0's names. Batch 2 over 2 processes at a 1x1 bottleneck gave a raw traceback."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_lgg, other)
    pid = sorted(p.name for p in other.iterdir())[0]
    for p in (other / pid).glob(f"{pid}_19*"):  # a copy that lost slice 19 and its mask
        p.unlink()
    script = tmp_path / "rank_data.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, sys
        from tumorseg.config import validate_config
        from tumorseg.errors import TumorsegError
        from tumorseg.train import fit
        cfg = json.loads(sys.argv[1])
        if os.environ["RANK"] == "1":
            cfg["data"] = {str(other)!r}
        try:
            fit(validate_config(cfg), progress=False)
        except TumorsegError as exc:
            print(f"error: {{exc}}", file=sys.stderr)
            sys.exit(2)
        """))  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    cfg = base_cfg(tiny_lgg, tmp_path / "run", epochs=1)
    r = subprocess.run([*torchrun, json.dumps(cfg)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "the processes do not see the same data: rank 1 on " in r.stderr, r.stderr[-3000:]
    assert (
        "give every node an identical copy of the data" in r.stderr
        and not (tmp_path / "run" / "last.safetensors").exists()
    )
    cfg = base_cfg(tiny_lgg, tmp_path / "bottleneck", batch_size=2, model={"base": 4, "depth": 4, "image_size": 16})
    r = subprocess.run([*torchrun, json.dumps(cfg)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "is 1 slice per process" in r.stderr, r.stderr[-3000:]
    assert "Expected more than 1 value per channel" not in r.stderr  # refused before training, not batch norm's error


def test_rank_and_world_size_set_by_hand_without_master_addr_are_refused(tiny_lgg, tmp_path):
    """Once a ValueError traceback from init_process_group, with an empty run folder left behind."""
    import os

    from conftest import cli_here

    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    r = cli_here("train", "--data", str(tiny_lgg), "--epochs", "1", "--out", str(tmp_path / "x" / "run"),
                 env={**env, "WORLD_SIZE": "2", "RANK": "0"})  # fmt: skip
    assert r.returncode == 2 and "RANK and WORLD_SIZE are set but MASTER_ADDR and MASTER_PORT not" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_what_the_processes_cannot_train_is_refused_before_they_join(tiny_lgg, tmp_path):
    """A batch the processes cannot share and --sync-bn on CPU were refused by every rank after it
    joined the process group (--sync-bn after every patient was read): a rank alone then waited
    for peers that never came. Both are now refused from WORLD_SIZE, before anything is made."""
    import os

    from conftest import cli_here, free_port

    env = {**os.environ, "WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}  # fmt: skip
    args = ["train", "--data", str(tiny_lgg), "--epochs", "1", "--out", str(tmp_path / "x" / "run")]
    r = cli_here(*args, "--batch-size", "16", env=env)
    assert r.returncode == 2 and "batch size 16 is not divisible by the 3 processes" in r.stderr, r.stderr
    r = cli_here(*args, "--batch-size", "12", "--sync-bn", "--device", "cpu", env=env)
    assert r.returncode == 2 and "--sync-bn needs CUDA" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_a_rank_waiting_for_a_peer_that_never_starts_says_so(tiny_lgg, tmp_path):
    """A rank whose peers never joined waited PyTorch's 30 minutes without a word."""
    import os
    import signal
    import time

    from conftest import free_port

    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}  # fmt: skip
    cmd = [sys.executable, "-m", "tumorseg", "train", "--data", str(tiny_lgg), "--epochs", "1", "--out",
           str(tmp_path / "run"), "--threads", "1"]  # fmt: skip
    import threading

    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read() -> None:
        for line in p.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    note = "rank 0: still waiting for all 2 processes to join at 127.0.0.1:"
    deadline = time.monotonic() + 120  # start-up, then the 10 s before the note (a fixed sleep raced start-up)
    while not any(note in line for line in lines) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    reader.join(10)
    assert any(note in line for line in lines), "".join(lines)[-3000:]
