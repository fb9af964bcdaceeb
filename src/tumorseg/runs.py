"""A training run's folder: what a fresh run may overwrite, what --resume may continue (the
same options and patients), the split, and summary.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from . import distributed as ddp
from .checkpoint import Checkpoint, load_checkpoint
from .config import RESUME_UNCOMPARED, TrainConfig, load_config
from .data.lgg import Case, find_cases, split_cases
from .errors import DataError, TumorsegError
from .io import Log, atomic_write_text


def first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None when `path` exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def check_run_folder(cfg: TrainConfig, resume: bool) -> None:
    """Before any work: a fresh run never overwrites an earlier run's checkpoints, and the run
    folder can be created (TumorsegError naming the folder otherwise)."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise TumorsegError(f"{out}: the run folder is a file")
    if not resume and out.is_dir():
        found = sorted(p.relative_to(out).as_posix() for p in out.glob("*.safetensors"))
        found += sorted(p.relative_to(out).as_posix() for p in out.glob("member*/last.safetensors"))
        found += [n for n in ("metrics.jsonl", "summary.json") if (out / n).is_file() and (out / n).stat().st_size]
        if found and not has_last(out):  # stopped before last.safetensors was saved (a full disk, a kill)
            raise TumorsegError(f"{out}: holds an earlier run ({', '.join(found[:3])}) but no last.safetensors "
                                f"to resume; {_clear_advice(out)} to start it again, or train into another "
                                "--out")  # fmt: skip
        if found:
            raise TumorsegError(f"{out}: holds an earlier run ({', '.join(found[:3])}); continue it with "
                                f"--resume {out}, or train into another --out")  # fmt: skip
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TumorsegError(f"{out}: cannot create the run folder ({e.strerror or e})") from None


def resume_command(run: Path | str, info: ddp.DistInfo) -> str:
    """The command that continues `run`: under torchrun, launched by torchrun again."""
    cmd = f"tumorseg train --resume {run}"
    if not info.enabled:
        return cmd
    return f"torchrun <your launch options> -m {cmd} (this run had {info.world_size} processes)"


def has_last(out: Path) -> bool:
    """Whether the run folder holds a checkpoint that --resume continues (its own, or a member's)."""
    return (out / "last.safetensors").is_file() or any(out.glob("member*/last.safetensors"))


def _clear_advice(out: Path) -> str:
    """What a fresh start in `out` needs moved out of its way when no last.safetensors was saved."""
    steps = [f"remove {p}" for p in (out / "metrics.jsonl", out / "summary.json") if p.is_file() and p.stat().st_size]
    steps += [f"move {p} away (a model of the run)" for p in sorted(out.glob("*.safetensors"))]
    return " and ".join(steps)


def resumable(cfg: TrainConfig, last_path: Path, split: dict[str, list[str]]) -> Checkpoint:
    """The run's last checkpoint, if `cfg` and its data continue it: the same options (less
    precision and the data folder's path) and the same patients in each part of the split."""
    if not last_path.exists():
        advice = _clear_advice(last_path.parent)
        raise TumorsegError(f"{last_path.parent}: nothing to resume (no last.safetensors was saved); "
                            f"{advice + ', then ' if advice else ''}start the run again without --resume")  # fmt: skip
    ck = load_checkpoint(last_path)
    differ = other_options(cfg, ck)
    if differ:
        raise TumorsegError(f"{last_path}: was trained with other options than {last_path.parent / 'config.json'} "
                            f"says ({', '.join(differ)}); resume with the run's own config")  # fmt: skip
    check_patients(cfg, ck, last_path, split)
    return ck


def other_options(cfg: TrainConfig, ck: Checkpoint) -> list[str]:
    """The options in which `ck` was trained otherwise than `cfg` asks, less those a resume may
    change (`RESUME_UNCOMPARED`; `check_patients` checks the data's patients)."""
    mine, theirs = cfg.model_dump(exclude=RESUME_UNCOMPARED), ck.config.model_dump(exclude=RESUME_UNCOMPARED)
    return sorted(k for k in mine if mine[k] != theirs.get(k))


def data_digest(by_id: dict[str, Case], split: dict[str, list[str]]) -> str:
    """SHA-256 of the split and each patient's slice and mask files (names and sizes): equal on
    every rank of a DDP run only if each read the same data."""
    files = {pid: [(p.name, _size(p)) for p in (*c.images, *c.masks)] for pid, c in by_id.items()}
    return hashlib.sha256(json.dumps([split, files], sort_keys=True).encode()).hexdigest()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone, or a name standing for packed arrays (scripts/cv_recipes.py)
        return -1


def data_split(cfg: TrainConfig) -> tuple[dict[str, Case], dict[str, list[str]]]:
    """The patients `cfg` trains on (the first `max_patients`, by id) and their split."""
    by_id = {c.id: c for c in find_cases(cfg.data, limit=cfg.max_patients)}
    return by_id, split_cases(list(by_id), cfg.seed, cfg.val_frac, cfg.test_frac, cfg.folds, cfg.fold)


def check_patients(cfg: TrainConfig, ck: Checkpoint, path: Path, split: dict[str, list[str]]) -> None:
    """Refuse to continue the checkpoint at `path` on other patients than it trained on (data
    moved or changed): its saved split (or its run's split.json) must be `split`."""
    trained = ck.meta.get("split")
    if trained is None:
        try:
            trained = json.loads((path.parent / "split.json").read_text())
        except (OSError, ValueError):
            if Path(cfg.data).resolve() != Path(ck.config.data).resolve():
                raise TumorsegError(f"{path}: saves no split to check {cfg.data} against; "
                                    f"resume with the data it trained on ({ck.config.data})") from None  # fmt: skip
            return
    if trained != split:
        changes = _split_change(trained, split)
        raise TumorsegError(f"{cfg.data}: does not hold the patients {path} trained on ({changes}); "
                            "resume with the data the run trained on")  # fmt: skip


def _split_change(trained: dict[str, list[str]], now: dict[str, list[str]]) -> str:
    """`2 of its 6 patients gone, 1 new`: how the data's patients differ from a run's (a patient
    gone or new moves others between the parts of the split, so parts are not counted)."""
    before, after = set().union(*trained.values()), set().union(*now.values())
    gone, new = len(before - after), len(after - before)
    said = [f"{gone} of its {len(before)} patient{'s' * (len(before) != 1)} gone"] if gone else []
    said += [f"{new} new"] if new else []
    return ", ".join(said) or "the same patients, split otherwise"


def run_summary(out: Path, history: list[dict], best: float, best_epoch: int, has_val: bool,
                 weights: dict[str, torch.Tensor], machine_info: dict | None) -> dict:  # fmt: skip
    """summary.json: the best epoch and score, the saved weights' digest, the training time of
    every epoch on record (resumed runs included) and the machine that trained the last of them."""
    summary = {"run": str(out), "best_epoch": best_epoch, "best_metric": "val_dice" if has_val else "train_loss",
               "best_score": best if has_val else -best, "epochs_done": len(history)}  # fmt: skip
    summary["weights_sha256"] = state_digest(weights)
    summary["train_seconds"] = sum(h["epoch_seconds"] for h in history)
    summary["machine"] = machine_info
    if history:
        summary["last"] = {k: v for k, v in history[-1].items() if k != "val_per_patient"}
    return summary


def summary_on_disk(out: Path, ck: Checkpoint, write: bool = True, log: Log = print) -> dict:
    """A finished run's summary.json. One that is missing, unreadable or of fewer epochs than its
    last checkpoint (the run was stopped, then resumed with no epoch left to train) is written from
    metrics.jsonl and the checkpoint; its machine is unknown (None): nothing trained now."""
    path, state = out / "summary.json", ck.meta.get("train_state", {})
    try:
        summary = json.loads(path.read_text())
        if isinstance(summary, dict) and summary.get("epochs_done", -1) >= state.get("epoch", 0):
            return summary
    except (OSError, ValueError):
        pass
    history = read_history(out / "metrics.jsonl", state.get("epoch", 0) + 1)
    has_val = bool((ck.meta.get("split") or {}).get("val"))
    summary = run_summary(out, history, state.get("best", float("-inf")), state.get("best_epoch", 0), has_val,
                           ck.model, None)  # fmt: skip
    if write:
        atomic_write_text(path, json.dumps(summary, indent=2))
        stale = out / "interrupted.safetensors"
        if stale.exists():
            n = state.get("epoch")
            log(f"{stale}: holds a part of an epoch beyond the {n} kept; left as it was (remove it, or resume "
                f"with --epochs above {n} to train on from the last complete one)")  # fmt: skip
    return summary


def listed_resume(cfg: TrainConfig, last_path: Path) -> Checkpoint | None:
    """`resumable` against the split of the data as its file names list it, before any slice is
    read; None when the data cannot be listed (check-data then says why)."""
    try:
        split = data_split(cfg)[1]
    except DataError:
        return None
    return resumable(cfg, last_path, split)


def nothing_to_do(out: Path, cfg: TrainConfig, state: dict) -> str:
    """Why a finished run (or ensemble member) needs nothing more, and what would train it on."""
    n = state.get("epoch", 0)
    if n >= cfg.epochs:
        done = f"its {n} epoch" if n == 1 else f"all {n} epochs"
        return f"{out}: already trained {done}; nothing to do (give --epochs above {n} to train longer)"
    return (f"{out}: stopped early at epoch {n} (no improvement for {cfg.patience} epoch{'s' * (cfg.patience != 1)}); "
            "nothing to do (give a larger --patience to train on)")  # fmt: skip


def finished(cfg: TrainConfig, ck: Checkpoint) -> bool:
    """The checkpoint's run has trained cfg.epochs epochs, or stopped early under cfg.patience."""
    state = ck.meta.get("train_state", {})
    return state.get("epoch", 0) >= cfg.epochs or bool(cfg.patience and state.get("bad_epochs", 0) >= cfg.patience)


def read_history(path: Path, before_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    history = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if record.get("epoch", before_epoch) < before_epoch:
            history.append(record)
    return history


def state_digest(state: dict[str, torch.Tensor]) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def saved_config(run: Path) -> TrainConfig:
    """A run's config.json, or, when that is gone, the config its last checkpoint carries."""
    if not run.is_dir():
        what = "is a file, not a run folder" if run.exists() else "no such run folder"
        raise TumorsegError(f"{run}: {what}; --resume takes the folder a run was trained into (its --out)")
    last = (run / "last.safetensors").is_file()
    if not (run / "config.json").exists():
        if not last:  # such as a folder a run stopped while it loaded, or runs/ itself
            raise TumorsegError(f"{run}: holds no run to resume (no config.json or last.safetensors); start the "
                                "run without --resume")  # fmt: skip
        return load_checkpoint(run / "last.safetensors").config
    try:
        return load_config(run / "config.json")
    except TumorsegError as e:
        if not last:
            raise
        raise TumorsegError(f"{e}; fix it, or remove it to resume with the config {run / 'last.safetensors'} "
                            "carries") from None  # fmt: skip


def resume_values(run: Path, top: dict, model: dict, data: Path | None) -> dict:
    """The config values that continue `run`: its saved config with the options given (`top` and
    `model`, None where not given) applied. Only those a resume may change (`RESUME_UNCOMPARED`)
    may differ; `data` may move the run's patients. TumorsegError naming the options otherwise."""
    saved = saved_config(run).model_dump()
    top = dict(top)
    changed = {k for k, v in top.items() if v is not None and k not in RESUME_UNCOMPARED and saved.get(k) != v}
    if data is not None and Path(saved["data"]).resolve() == data.resolve():
        top["data"] = None  # the same folder, spelt another way: the run keeps its spelling
    elif data is None and not Path(saved["data"]).is_dir():
        where = "" if Path(saved["data"]).is_absolute() else f" from {Path.cwd()} (a relative path)"
        raise TumorsegError(f"{run}: the run's data folder {saved['data']} is not found{where}; "
                            "give --data with where its patients are now")  # fmt: skip
    changed |= {k for k, v in model.items() if v is not None and saved["model"].get(k) != v}
    if changed:
        named = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(changed))
        raise TumorsegError(f"--resume continues a run with its saved config; these options differ from it: {named}")
    saved["out"] = str(run)
    saved.update({k: v for k, v in top.items() if v is not None})
    saved["model"].update({k: v for k, v in model.items() if v is not None})
    return saved


def stopped_hint(out: Path, info: ddp.DistInfo, resume: bool = False) -> str:
    """What a run (or ensemble) in `out` stopped at once by a signal has kept, and how to go on
    (a --resume with options of its own: the same command, which config.json may not hold yet)."""
    if resume:
        return f"the epochs saved before stay in {out}; run the same command again to continue"
    if has_last(out):
        return f"the epochs saved before stay in {out}; continue with: {resume_command(out, info)}"
    return f"nothing saved; start the run again (the same command; {out} may be reused)"
