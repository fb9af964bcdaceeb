"""An ensemble trained member by member: each U-Net a run of its own in out/member<i>, then
their weights combined into out/last.safetensors and the ensemble validated as one model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from . import distributed as ddp
from .checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data.lgg import Case
from .errors import TumorsegError
from .io import Log, atomic_write_text
from .runs import (
    check_patients,
    data_split,
    finished,
    nothing_to_do,
    other_options,
    resume_command,
    state_digest,
    summary_on_disk,
)
from .validation import dice_summary, load_cases, validate_counts


def member_config(cfg: TrainConfig, i: int) -> TrainConfig:
    """The run that trains ensemble member `i`: one U-Net in `out/member{i}`, seeded with
    seed + i for its init and sampling, on the same split (seed) as every other member."""
    model = cfg.model.model_copy(update={"members": 1})
    return cfg.model_copy(update={"model": model, "member": i, "out": str(Path(cfg.out) / f"member{i}")})


def member_state(cfg: TrainConfig, split: dict[str, list[str]] | None = None) -> str:
    """`finished`, `partial` or `absent`: how far the member run in cfg.out got, read from its
    last checkpoint. A checkpoint trained with other options, or (given `split`, that of the
    data now) on other patients, raises: it is another run."""
    path = Path(cfg.out) / "last.safetensors"
    if not path.exists():
        return "absent"
    ck = load_checkpoint(path)
    if other_options(cfg, ck):
        raise TumorsegError(f"{path}: trained with other options than this ensemble's member; "
                            "move it away or train the ensemble in a new folder")  # fmt: skip
    if split is not None:
        check_patients(cfg, ck, path, split)
    return "finished" if finished(cfg, ck) else "partial"


def fit_ensemble(cfg: TrainConfig, resume: bool, progress: bool, log: Log, info: ddp.DistInfo, stop,
                 fit_member: Callable[..., dict]) -> dict:  # fmt: skip
    """Train the members one after another with `fit_member` (train.py's one-run loop), then write
    their ensemble to out/last.safetensors (and out/best.safetensors when every member has a
    best). `resume` keeps finished members and continues an unfinished one; without it every
    member is trained afresh. `stop` is train.py's signal handler, shared by the members."""
    out = Path(cfg.out)
    if not info.is_main:
        log = lambda *a: None  # noqa: E731
    n = cfg.model.members
    runs = [member_config(cfg, i) for i in range(n)]
    # every member checked (a corrupt or foreign one raises) before anything here changes
    split = data_split(cfg)[1] if resume and info.is_main else None
    states = ddp.broadcast_object([member_state(m, split) if resume else "absent" for m in runs]
                                  if info.is_main else None, info)  # fmt: skip
    done = _ensemble_state(out, runs) if set(states) == {"finished"} and info.is_main else None
    done = ddp.broadcast_object(done, info)
    if done is not None:  # nothing to do: the run is left as it was
        early = [s for s in done if s.get("epoch", 0) < cfg.epochs]  # stopped by --patience
        state = early[0] if early else max(done, key=lambda s: s.get("epoch", 0))
        log(f"every member is trained and combined; {nothing_to_do(out, cfg, state)}")
        return json.loads((out / "summary.json").read_text())  # _ensemble_state found it newer than the members
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if (out / "last.safetensors").exists() and set(states) != {"finished"}:  # usable if this is stopped
            log(f"{out / 'last.safetensors'} stays the earlier ensemble until this one is written")
        atomic_write_text(out / "config.json", cfg.model_dump_json(indent=2))
    go_on = resume_command(out, info)
    for i, (mcfg, state) in enumerate(zip(runs, states)):
        name = f"member{i} ({i + 1} of {n})"
        if state == "finished":
            log(f"{name}: already trained in {mcfg.out}")
            continue
        # asked while the member before was validated or saved
        stop.halt_if_asked(info, log, f"interrupted before {name}; continue the ensemble with: {go_on}")
        log(f"{name}: {mcfg.out} (init and sampling seed {cfg.seed + i})")
        fit_member(mcfg, state == "partial", progress, log, info, stop, resume_dir=out)
        ddp.barrier(info)
    # asked during the last member's last epoch: the members are combined on resume
    stop.halt_if_asked(info, log, f"interrupted before the members were combined; continue the ensemble with: {go_on}")
    # every member is saved: in one process a signal while they are combined and validated stops at
    # once; under torchrun each rank may wait in a collective, so the ranks agree after validation
    stop.armed = info.enabled
    summary = {"run": str(out), "members": [m.out for m in runs]}
    if info.is_main:
        # a member stopped, then resumed with no epoch left, has its summary.json written here
        member_summaries = [summary_on_disk(Path(m.out), load_checkpoint(Path(m.out) / "last.safetensors"), log=log)
                            for m in runs]  # fmt: skip
        for name in ("last", "best"):
            paths = [Path(m.out) / f"{name}.safetensors" for m in runs]
            if all(p.exists() for p in paths):
                combine_members(cfg, paths, out / f"{name}.safetensors")
            else:  # an earlier ensemble's, now of other members
                (out / f"{name}.safetensors").unlink(missing_ok=True)
    ddp.barrier(info)  # the combined last.safetensors is on disk for every rank
    by_id, split = data_split(cfg)
    last = load_checkpoint(out / "last.safetensors")
    val = _ensemble_validation(cfg, last, by_id, split["val"], info, progress)
    if info.is_main:
        atomic_write_text(out / "split.json", json.dumps(split, indent=2))
        summary.update(_ensemble_summary(member_summaries, last, val, log))
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
        best = " and best.safetensors (each member's best epoch)" if (out / "best.safetensors").exists() else ""
        log(f"ensemble of {n} members: {out / 'last.safetensors'} (each member's last epoch){best}")
    # torchrun: asked while the members were combined or validated
    stop.halt_if_asked(info, log, f"interrupted after the ensemble was combined: {out} is complete")
    return summary


def _ensemble_validation(cfg: TrainConfig, last: Checkpoint, by_id: dict[str, Case], ids: list[str],
                         info: ddp.DistInfo, progress: bool) -> dict | None:  # fmt: skip
    """The combined `last` checkpoint's per-patient validation Dice on patients `ids`, as `evaluate
    --split val` scores it (each rank its share of the patients, on its device); None without any."""
    if not ids:
        return None
    model = build_model(last, Path(cfg.out) / "last.safetensors").to(ddp.train_device(cfg.device, info))
    mine = ids[info.rank :: info.world_size]
    cases = load_cases(cfg, mine, by_id, "loading val", native=True, progress=progress)
    counts = torch.zeros(len(ids), 4, dtype=torch.int64)
    if cases:
        counts[info.rank :: info.world_size] = validate_counts(model, cases, cfg.model)
    return dice_summary(ids, ddp.all_reduce_sum(counts, info))


def _ensemble_summary(members: list[dict], last: Checkpoint, val: dict | None, log: Log) -> dict:
    """An ensemble's summary.json beyond its member folders: each member's result, the combined
    weights' (`last`) digest, the time and machine, and `val` (the ensemble's own validation Dice)."""
    keys = ("best_epoch", "best_metric", "best_score", "epochs_done", "weights_sha256")
    summary: dict = {"member_results": [{k: m.get(k) for k in keys} for m in members]}
    for m, result in zip(members, summary["member_results"]):
        if "val_dice" in m.get("last", {}):
            result["last_val_dice"] = m["last"]["val_dice"]
    summary["train_seconds"] = sum(m.get("train_seconds", 0.0) for m in members)
    summary["machine"] = members[-1].get("machine")
    summary["weights_sha256"] = state_digest(last.model)
    if val is not None:
        summary.update(val)
        alone = ", ".join(f"{r['last_val_dice']:.4f}" for r in summary["member_results"] if "last_val_dice" in r)
        log(f"ensemble val per-patient Dice mean {val['val_dice']:.4f} median {val['val_dice_median']:.4f}"
            f" (the members alone: {alone})")  # fmt: skip
    return summary


def combine_members(cfg: TrainConfig, paths: list[Path], target: Path) -> None:
    """One checkpoint holding every member's weights (keys `members.<i>.`) and `cfg`."""
    weights, members, split = {}, [], None
    for i, path in enumerate(paths):
        ck = load_checkpoint(path)
        if split is not None and ck.meta.get("split") != split:
            raise TumorsegError(f"{path}: trained on a different split from the other members")
        split = ck.meta.get("split")
        weights.update({f"members.{i}.{k}": v for k, v in ck.model.items()})
        members.append({"source": f"{path.parent.name}/{path.name}", "epoch": ck.meta.get("epoch"),
                        "metrics": ck.meta.get("metrics")})  # fmt: skip
    meta = {"epochs": [m["epoch"] for m in members], "split": split, "members": members}
    save_checkpoint(target, Checkpoint(cfg, weights, meta))


def _ensemble_state(out: Path, runs: list[TrainConfig]) -> list[dict] | None:
    """The members' train states when `out` holds their ensemble as they are now: last (and best,
    when every member has one) combined from the members' own checkpoints, and summary.json
    written after them. None when anything is missing or older."""
    try:
        states: list[dict] = []
        for name in ("last", "best"):
            paths = [Path(m.out) / f"{name}.safetensors" for m in runs]
            if name == "best" and not all(p.exists() for p in paths):
                continue
            members = [load_checkpoint(p) for p in paths]
            combined = load_checkpoint(out / f"{name}.safetensors").meta.get("epochs")
            if combined != [c.meta.get("epoch") for c in members]:
                return None
            states = states or [c.meta.get("train_state", {}) for c in members]
        newest = max((out / f"{n}.safetensors").stat().st_mtime_ns for n in ("last", "best")
                     if (out / f"{n}.safetensors").exists())  # fmt: skip
        return states if (out / "summary.json").stat().st_mtime_ns >= newest else None
    except (OSError, TumorsegError):
        return None
