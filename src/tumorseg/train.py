"""The training loop: fit(cfg) trains, validates per patient, checkpoints and resumes."""

from __future__ import annotations

import copy
import json
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from . import distributed as ddp
from .checkpoint import Checkpoint, save_checkpoint
from .config import TrainConfig, validate_config
from .data.check import check_data
from .data.lgg import CaseArrays, flair_index
from .data.transforms import (
    augment,
    bias_field,
    dim_lesions,
    histogram_shift,
    missing_sequences,
    scale_intensity,
    sequence_groups,
    shuffle_context,
)
from .errors import Interrupted, TumorsegError
from .hardware import available_cores, machine, native_bf16
from .infer import set_threads
from .io import Log, atomic_write_text
from .losses import deep_supervision_loss, make_loss
from .members import fit_ensemble
from .models import UNet
from .models.unet import DeepSupervision, count_parameters
from .runs import (
    check_run_folder,
    data_digest,
    data_split,
    finished,
    first_missing,
    listed_resume,
    nothing_to_do,
    read_history,
    resumable,
    resume_command,
    run_summary,
    stopped_hint,
    summary_on_disk,
)
from .validation import dice_summary, load_cases, validate_counts
from .viz import plot_curves


class SliceDataset(Dataset):
    """In-memory uint8 slices; returns (image (C, S, S), mask (S, S)) tensors."""

    def __init__(self, cases: list[CaseArrays]):
        self.images = np.concatenate([c.images for c in cases])
        self.masks = np.concatenate([c.masks for c in cases])
        self.has_tumor = self.masks.reshape(len(self.masks), -1).any(1)
        self.patient = np.repeat(np.arange(len(cases)), [len(c.masks) for c in cases])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.images[i]), torch.from_numpy(self.masks[i])


def epoch_indices(
    has_tumor: np.ndarray,
    empty_ratio: float,
    rng: np.random.Generator,
    hard: float = 0.0,
    marked: np.ndarray | None = None,
    patient: np.ndarray | None = None,
    balance: float = 0.0,
) -> np.ndarray:
    """Every tumor slice plus `empty_ratio` times as many empty slices, shuffled.

    The empty slices are drawn at random, except a share `hard` of them, drawn with weights
    1 + the tumor (soft pixels) the model last marked in each (`marked`, NaN where never seen:
    weighted as the most marked one, so every slice gets looked at): hard-negative sampling.
    With `balance` > 0 and each slice's `patient`, as many tumor slices are drawn with
    replacement instead, each weighted n ** -balance, n its patient's tumor slices: a patient
    then gets a share of the epoch that grows as n ** (1 - balance), and at 1 every patient the same.
    """
    tumor = np.flatnonzero(has_tumor)
    empty = np.flatnonzero(~has_tumor)
    if len(tumor) == 0:
        return rng.permutation(len(has_tumor))
    if balance and patient is not None:
        _, inverse, per_patient = np.unique(patient[tumor], return_inverse=True, return_counts=True)
        w = per_patient[inverse] ** -float(balance)
        tumor = rng.choice(tumor, len(tumor), replace=True, p=w / w.sum())
    k = min(len(empty), int(round(empty_ratio * len(tumor))))
    n_hard = int(round(hard * k)) if marked is not None else 0
    hard_pick = np.empty(0, np.int64)
    if n_hard:
        m = marked[empty]
        seen = ~np.isnan(m)
        w = 1.0 + np.where(seen, m, m[seen].max() if seen.any() else 0.0)
        hard_pick = rng.choice(empty, n_hard, replace=False, p=w / w.sum())
    rest = np.setdiff1d(empty, hard_pick, assume_unique=True)
    chosen = np.concatenate([tumor, hard_pick, rng.choice(rest, k - n_hard, replace=False)])
    return rng.permutation(chosen)


def update_marked(marked: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Fold one epoch's tumor marked per empty slice (`sums` over `counts` views) into `marked`:
    the mean of the old value and the new one, or the new one for a slice not seen before."""
    seen = counts > 0
    new = np.where(seen, sums / np.maximum(counts, 1), np.nan)
    return np.where(~seen, marked, np.where(np.isnan(marked), new, (marked + new) / 2))


class EMA:
    """Exponential moving average of parameters and buffers."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for e, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.is_floating_point():
                e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
            else:
                e.copy_(p)


def _optim_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for idx, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            out[f"optim.{idx}.{name}"] = torch.as_tensor(value).cpu()
    return out


def _load_optim(opt: torch.optim.Optimizer, extra: dict[str, torch.Tensor], lr: float) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, value in extra.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    sd["state"] = state
    for g in sd["param_groups"]:
        g["lr"] = lr
    opt.load_state_dict(sd)


def lr_at(cfg: TrainConfig, epoch: int, plateau_scale: float) -> float:
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
    return cfg.lr * plateau_scale


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    """`auto` -> bf16 autocast where the hardware has it natively, else fp32."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if native_bf16(device) else "fp32"


def fit(cfg: TrainConfig, resume: bool = False, progress: bool = True, log: Log = print) -> dict:
    """Train a U-Net as `cfg` says and write the run to `cfg.out`.

    Writes config.json, split.json, metrics.jsonl (one line per epoch), curves.png,
    last.safetensors (with optimizer state, for `resume`), best.safetensors (the epoch of
    the best validation per-patient Dice; with no validation patients, `val_frac` 0 as by
    default, of the lowest training loss) and summary.json. Returns the final summary.

    With `model.members` > 1 it trains that many U-Nets one after another, each a run of its
    own in out/member<i> (seed + i for init and sampling, one split), and writes their
    ensemble (probabilities averaged) as out/last.safetensors.

    Launched by torchrun, it trains with DistributedDataParallel: `batch_size` is the
    global batch, split evenly across processes, so the learning rate needs no rescaling;
    validation counts are all-reduced; rank 0 alone logs, plots and saves.
    """
    values = cfg.model_dump(warnings=False)  # a config changed after it was made is checked again,
    values["model"].pop("in_channels")  # with in_channels derived anew from channels and context
    cfg = validate_config(values)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        why = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise TumorsegError(f"--device cuda: {why}; use --device cpu, or install PyTorch's CUDA build first, e.g. "
                            "pip install torch --index-url https://download.pytorch.org/whl/cu124 (pick the CUDA "
                            "version your driver supports)")  # fmt: skip
    ddp.check_launch()  # before the run folder is made: a refusal leaves none
    check_processes(cfg, ddp.launched_world_size())  # before any data is read, not on every rank after
    made = first_missing(Path(cfg.out))
    check_run_folder(cfg, resume)
    info = ddp.setup("cuda" if ddp.uses_cuda(cfg.device) else "cpu")
    stop = _StopOnSigint(torchrun=info.enabled)
    try:
        run = partial(fit_ensemble, fit_member=_fit) if cfg.model.members > 1 else _fit
        summary = run(cfg, resume, progress, log, info, stop)
        ddp.barrier(info)  # no rank tears the process group down while another still uses it
        return summary
    except Interrupted as exc:  # at once: loading, or a second signal; the loop says what it saved itself
        if not exc.said and info.is_main:
            log(f"interrupted: {stopped_hint(Path(cfg.out), info, resume)}")
        raise
    except TumorsegError:  # refused (bad data, too many folds): no empty run folder is left behind
        if made and info.is_main:
            for folder in (Path(cfg.out), *Path(cfg.out).parents):  # those made here, while still empty
                try:
                    folder.rmdir()
                except OSError:
                    break
                if folder == made:
                    break
        raise
    finally:
        stop.restore()
        ddp.cleanup()


class _StopOnSigint:
    """The first Ctrl-C (SIGINT) or SIGTERM (what `kill` and job schedulers send) asks the loop
    to stop after the current batch; the second stops at once.

    Under torchrun a repeat within GRACE seconds is the same request: torchrun runs its ranks in
    their own sessions and forwards a signal once (a second Ctrl-C makes it send SIGTERM); a job
    scheduler may signal both torchrun and every rank, so a rank gets it twice. There, until
    `armed` (until the epochs start, when there is nothing to save yet) a signal stops at once.
    """

    GRACE = 5.0

    def __init__(self, torchrun: bool = False):
        import signal
        import threading

        self.grace = self.GRACE if torchrun else 0.0
        self.armed = not torchrun
        self._first: float | None = None  # when this process itself got its first signal
        self.signum = signal.SIGINT  # the first signal this process got: the CLI exits with 128 + it
        self._old: dict = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self._first is None:
            self.signum = signum
        if not self.armed or (self._first is not None and now - self._first >= self.grace):
            raise Interrupted(self.signum)
        if self._first is None:
            self._first = now

    @property
    def requested(self) -> bool:
        return self._first is not None

    def agreed(self, info: ddp.DistInfo) -> bool:
        """Whether to stop: asked of this process, or under torchrun of any rank (a collective:
        every rank calls it at the same point). A rank stopped by another takes its signal, so
        every rank exits with the same status (143 for a SIGTERM to one rank)."""
        got = ddp.max_over_ranks(self.signum if self.requested else 0, info)
        if got and not self.requested:
            self.signum = got
        return bool(got)

    def halt_if_asked(self, info: ddp.DistInfo, log: Log, said: str) -> None:
        """At a point every rank reaches: if a stop was asked for (and the handler is armed), log
        `said` (what is kept, how to go on), meet the other ranks, and raise Interrupted."""
        if self.armed and self.agreed(info):
            log(said)
            ddp.barrier(info)  # every rank ends together, with the same status
            raise Interrupted(self.signum, said=True)

    def restore(self) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def check_processes(cfg: TrainConfig, world_size: int) -> None:
    """Refuse, before anything is read or written, a run that `world_size` processes cannot train:
    a batch they cannot share evenly, one slice each over a 1x1 bottleneck, --sync-bn off CUDA."""
    if cfg.batch_size % world_size:
        raise TumorsegError(f"batch size {cfg.batch_size} is not divisible by the {world_size} processes")
    if cfg.batch_size // world_size == 1 and cfg.model.image_size == 2**cfg.model.depth:  # as the config refuses 1
        raise TumorsegError(f"batch size {cfg.batch_size} over {world_size} processes is 1 slice per process, "
                            f"and image size {cfg.model.image_size} = 2**depth leaves a 1x1 bottleneck, which "
                            "batch norm cannot train on one slice; use a larger --batch-size or --image-size, "
                            "or a smaller --depth")  # fmt: skip
    if cfg.sync_bn and world_size > 1 and not ddp.uses_cuda(cfg.device):
        raise TumorsegError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm does not run on CPU")


def _fit(
    cfg: TrainConfig, resume: bool, progress: bool, log, info: ddp.DistInfo, stop: _StopOnSigint,
    resume_dir: Path | None = None,
) -> dict:  # fmt: skip
    local_batch = cfg.batch_size // info.world_size  # check_processes has refused what does not divide
    main = info.is_main
    stop.armed = False  # while this run (or member) loads, a signal stops at once: nothing to save yet
    if not main:
        log, progress = (lambda *a: None), False
    out = Path(cfg.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads or max(1, available_cores() // info.local_world_size))
    if cfg.model.members > 1:
        raise TumorsegError("an ensemble is trained member by member: use fit(), not _fit()")
    seed = cfg.seed + cfg.member  # init and sampling; the split stays cfg.seed's
    torch.manual_seed(seed)

    last_path, metrics_path = out / "last.safetensors", out / "metrics.jsonl"
    ck = listed_resume(cfg, last_path) if resume else None  # checked before anything is written
    if ck is not None and finished(cfg, ck):  # nothing to train: no slice read, only summary.json completed
        log(nothing_to_do(out, cfg, ck.meta["train_state"]))
        return summary_on_disk(out, ck, write=main, log=log)
    report = check_data(cfg.data, limit=cfg.max_patients)  # the same checks as `tumorseg check-data`
    if report["errors"]:
        shown = "; ".join(report["errors"][:5])
        raise TumorsegError(f"{cfg.data}: {len(report['errors'])} data errors (see `tumorseg check-data`): {shown}")
    skipped, others = set(report["skipped_folders"]), 0  # every skipped folder is said; 10 other warnings
    for w in report["warnings"]:
        others += w not in skipped
        if w in skipped or others <= 10:
            log(f"warning: {w}")
    if others > 10:
        log(f"warning: and {others - 10} more (`tumorseg check-data {cfg.data}` lists them all)")
    by_id, split = data_split(cfg)
    if info.enabled and (unlike := ddp.ranks_unlike_rank0(data_digest(by_id, split), info)):  # a copy per node
        named = ", ".join(f"rank {r} on {host}" for r, host in unlike)
        raise TumorsegError(f"{cfg.data}: the processes do not see the same data: {named} differ from rank 0 in "
                            "their patients, split or slice files (names and sizes); give every node an identical "
                            "copy of the data")  # fmt: skip
    if not split["train"]:
        sizes = "/".join(str(len(split[k])) for k in ("train", "val", "test"))
        raise TumorsegError(f"{cfg.data}: too few patients ({len(by_id)}) to train: --val-frac {cfg.val_frac} and "
                            f"--test-frac {cfg.test_frac} leave none to train on (train/val/test {sizes})")  # fmt: skip
    rest = len(split["train"]) + len(split["val"])
    if cfg.folds > rest:  # some fold would have no validation patients, whichever this is
        raise TumorsegError(f"--folds {cfg.folds}: only {rest} patients are outside the test split, so not "
                            f"every fold has validation patients; use --folds {rest} or fewer")  # fmt: skip
    metric = "validation per-patient Dice" if split["val"] else "training loss"
    if cfg.val_frac and not split["val"]:
        log(f"warning: --val-frac {cfg.val_frac} gives no validation patients with {len(by_id)} "
            f"patient{'s' * (len(by_id) != 1)} "
            "(at least 2 are needed outside the test split)")  # fmt: skip
    if cfg.patience and not split["val"]:
        log(f"warning: no validation patients, so --patience {cfg.patience} stops on the training loss "
            "(with enough patients, --val-frac or --folds make it stop on the validation Dice)")  # fmt: skip
    if cfg.test_frac and not split["test"]:
        log(
            f"warning: --test-frac {cfg.test_frac} gives no test patients with {len(by_id)} "
            f"patient{'s' * (len(by_id) != 1)} (3 are needed)"
        )
    if cfg.folds:
        log(f"fold {cfg.fold} of {cfg.folds} (0-based): its val patients are this fold's")
    for name, ids in split.items():
        log(f"{name:>5}: {len(ids):3d} patient{'s' * (len(ids) != 1)}  {' '.join(ids)}".rstrip())
    if resume and ck is None:  # the data could not be listed before check-data
        ck = resumable(cfg, last_path, split)
    if main:
        atomic_write_text(out / "split.json", json.dumps(split, indent=2))
        atomic_write_text(out / "config.json", cfg.model_dump_json(indent=2))

    train_cases = load_cases(cfg, split["train"], by_id, "loading train", progress=progress)
    val_ids = split["val"]
    my_val = val_ids[info.rank :: info.world_size]  # each rank scores its share of patients
    val_cases = load_cases(cfg, my_val, by_id, "loading val", native=True, progress=progress)
    data = SliceDataset(train_cases)
    log(f"train slices: {len(data)} ({int(data.has_tumor.sum())} with tumor)")
    if not data.has_tumor.any():
        log("warning: no training slice has tumor: the model can only learn to mark nothing")

    m = cfg.model
    device = ddp.train_device(cfg.device, info)
    torch.use_deterministic_algorithms(True, warn_only=True)  # after the checks: it imports torch._inductor (1 s)
    net = UNet(m.in_channels, 1, m.base, m.depth)
    if cfg.sync_bn and info.enabled:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(device, memory_format=torch.channels_last)
    precision = resolve_precision(cfg, device)
    log(f"precision: {precision}" + (" (autocast; weights, loss and optimizer in fp32)" if precision == "bf16" else ""))
    log(f"UNet(in_channels={m.in_channels}, base={m.base}, depth={m.depth}): {count_parameters(net):,} parameters")
    if info.enabled:
        log(f"DDP: {info.world_size} processes, {local_batch} slices each per step (global batch {cfg.batch_size})")
    # the heads train with the U-Net (after its parameters, so optimizer state lines up) and are saved apart
    trained = DeepSupervision(net).to(device, memory_format=torch.channels_last) if cfg.deep_supervision else net
    aux_heads = trained.heads if cfg.deep_supervision else None
    opt = torch.optim.Adam(trained.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(net, cfg.ema) if cfg.ema else None
    loss_fn = make_loss(cfg.loss)
    groups = sequence_groups(m.sequence_channels, flair_index(m.channels), m.context) if cfg.sequence_jitter else None

    start, best, best_epoch, plateau_scale, bad_epochs = 1, float("-inf"), 0, 1.0, 0
    marked = np.full(len(data), np.nan) if cfg.hard_empty else None  # tumor marked per empty slice
    if ck is not None:
        state = ck.meta["train_state"]
        raw = {k[4:]: v for k, v in ck.extra.items() if k.startswith("raw.")}
        net.load_state_dict(raw or ck.model)
        if ema:
            ema.model.load_state_dict(ck.model)
        if aux_heads is not None:
            aux = {k[4:]: v for k, v in ck.extra.items() if k.startswith("aux.")}
            if not aux:
                raise TumorsegError(f"{last_path}: no deep-supervision heads saved; resume without them")
            aux_heads.load_state_dict(aux)
        start = state["epoch"] + 1
        best, best_epoch = state["best"], state["best_epoch"]
        plateau_scale, bad_epochs = state["plateau_scale"], state["bad_epochs"]
        if "hard_empty.marked" in ck.extra:
            marked = ck.extra["hard_empty.marked"].numpy().astype(np.float64)
        _load_optim(opt, ck.extra, lr_at(cfg, start, plateau_scale))
        log(f"resuming {out} at epoch {start}")
        was = ck.config.epochs
        if cfg.schedule == "cosine" and was != cfg.epochs:  # the schedule is a function of --epochs
            old, new = lr_at(ck.config, start, 1.0), lr_at(cfg, start, 1.0)
            log(f"warning: --epochs {cfg.epochs}, where the run was started for {was}: the cosine schedule is "
                f"recomputed, so epoch {start} trains at learning rate {new:.2g}, not {old:.2g}, and the run will "
                f"not equal a fresh {cfg.epochs}-epoch one")  # fmt: skip
    model = (
        DistributedDataParallel(trained, device_ids=[device.index] if device.type == "cuda" else None)
        if info.enabled
        else trained
    )
    history = read_history(metrics_path, start) if main else []
    lost = sorted(set(range(1, start)) - {h.get("epoch") for h in history}) if main else []
    if lost:  # lines cut short or removed: the run goes on from its checkpoint, its record cannot
        log(f"warning: {metrics_path}: has no readable line for {len(lost)} of the {start - 1} epochs done "
            f"(such as epoch {lost[0]}); curves.png and summary.json (epochs, training time) will miss "
            "them")  # fmt: skip
    if main:
        atomic_write_text(metrics_path, "".join(json.dumps(h) + "\n" for h in history))

    if val_ids and cfg.ema:
        steps = round(1 / (1 - cfg.ema))
        log(f"validation scores the EMA weights (--ema {cfg.ema}: an average over about the last {steps} steps, "
            "so early in a short run they barely move; --ema 0 scores the weights as trained)")  # fmt: skip
    ddp.barrier(info)  # every rank arms together (rank 0 alone wrote metrics.jsonl above)
    stop.armed = True  # from here a signal stops after the batch, and the epochs done are saved
    for epoch in range(start, cfg.epochs + 1):
        lr = lr_at(cfg, epoch, plateau_scale)
        for g in opt.param_groups:
            g["lr"] = lr
        rng = np.random.default_rng([seed, epoch])
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7919 * info.rank)
        # the same on every rank
        indices = epoch_indices(
            data.has_tumor, cfg.empty_ratio, rng, cfg.hard_empty, marked, data.patient, cfg.patient_balance
        )
        drop_last = len(indices) > cfg.batch_size
        if info.enabled:
            # the epoch's order is already a seeded shuffle: rank r takes positions r, r+W, ...,
            # so each global step sees the same slices as one process with the global batch
            if drop_last:
                indices = indices[: len(indices) // cfg.batch_size * cfg.batch_size]
            epoch_set = Subset(data, indices.tolist())
            sampler = DistributedSampler(epoch_set, info.world_size, info.rank, shuffle=False, drop_last=True)
            sampler.set_epoch(epoch)
            loader = DataLoader(epoch_set, batch_size=local_batch, sampler=sampler, num_workers=cfg.workers)
            order = indices[list(sampler)]  # the slices this rank sees, in its loader's order
        else:
            loader = DataLoader(
                data, batch_size=cfg.batch_size, sampler=indices.tolist(), num_workers=cfg.workers, drop_last=drop_last
            )
            order = indices
        if marked is not None:
            marked_sum, marked_n = np.zeros(len(data)), np.zeros(len(data))
        model.train()
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
        for images, masks in bar:
            x = scale_intensity(images.to(device), m.intensity)
            y = masks.to(device)[:, None].float()
            if cfg.augment:
                x, y = augment(x, y, gen, scale=cfg.zoom, channel_groups=groups)
                if cfg.histogram_shift:
                    x = histogram_shift(x, gen, cfg.histogram_shift, groups)
                if cfg.bias_field:
                    x = bias_field(x, gen, cfg.bias_field, groups)
                if cfg.dim_lesions:
                    x, y = dim_lesions(x, y, gen, cfg.dim_lesions)
                if cfg.missing_sequences:
                    x = missing_sequences(x, gen, cfg.missing_sequences, flair_index(m.channels))
            if m.context:  # also without --augment: single slices are predicted with their own FLAIR
                x = shuffle_context(x, m.sequence_channels, flair_index(m.channels), gen)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(x)
            if aux_heads is not None:
                logits, aux = logits
                loss = deep_supervision_loss(loss_fn, logits.float(), aux, y)
            else:
                loss = loss_fn(logits.float(), y)
            if marked is not None:  # soft tumor pixels marked in each slice of the batch
                at = order[seen : seen + len(x)]
                np.add.at(marked_sum, at, torch.sigmoid(logits.detach().float()).sum((1, 2, 3)).cpu().numpy())
                np.add.at(marked_n, at, 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema:
                ema.update(net)
            seen += len(x)
            loss_sum += loss.item() * len(x)
            rate = seen * info.world_size / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.1f}")
            if stop.agreed(info):  # under torchrun every rank stops after the same batch
                break
        if stop.agreed(info):  # again: a signal may come after the loop's last check, or with no batch
            bar.close()
            ddp.average_buffers(net, info)
            if ema:
                ddp.average_buffers(ema.model, info)
            if main and not last_path.exists():  # no epoch complete: nothing worth keeping or resuming
                how = (f"continue the ensemble with: {resume_command(resume_dir, info)}" if resume_dir
                       else f"start the run again (the same command; {out} may be reused)")  # fmt: skip
                log(f"interrupted in epoch {epoch}, before the first epoch was complete: nothing saved; {how}")
            elif main:
                path = out / "interrupted.safetensors"
                weights = {k: v.cpu() for k, v in (ema.model if ema else net).state_dict().items()}
                save_checkpoint(path, Checkpoint(cfg, weights, {"epoch": epoch - 1, "interrupted_in_epoch": epoch,
                                                                "split": split}))  # fmt: skip
                log(f"interrupted in epoch {epoch}: weights saved to {path}; the last complete epoch is in "
                    f"{last_path}; continue with: {resume_command(resume_dir or out, info)}")  # fmt: skip
            ddp.barrier(info)  # no rank ends (torchrun would then stop the rest) before rank 0 has saved
            raise Interrupted(stop.signum, said=True)
        train_time = time.perf_counter() - t0
        ddp.average_buffers(net, info)
        if ema:
            ddp.average_buffers(ema.model, info)
        totals = ddp.all_reduce_sum(torch.tensor([loss_sum, float(seen)], dtype=torch.float64), info)
        loss_sum, seen = float(totals[0]), int(totals[1])
        if marked is not None:
            views = ddp.all_reduce_sum(torch.from_numpy(np.stack([marked_sum, marked_n])), info).numpy()
            views[:, data.has_tumor] = 0  # only empty slices are ranked
            marked = update_marked(marked, views[0], views[1])
        eval_model = ema.model if ema else net
        record = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": loss_sum / max(seen, 1),
            "train_images_per_s": seen / train_time,
            "epoch_seconds": train_time,
            "precision": precision,
        }
        if val_ids:
            counts = torch.zeros(len(val_ids), 4, dtype=torch.int64)
            if val_cases:
                counts[info.rank :: info.world_size] = validate_counts(eval_model, val_cases, m)
            counts = ddp.all_reduce_sum(counts, info)  # counts, never averaged averages
            v = dice_summary(val_ids, counts)
            record.update(v)
            score = v["val_dice"]
        else:
            score = -record["train_loss"]
        improved = score > best
        if improved:
            best, best_epoch, bad_epochs = score, epoch, 0
        else:
            bad_epochs += 1
            if cfg.schedule == "plateau" and bad_epochs % 3 == 0:
                plateau_scale *= 0.5
        record["epoch_seconds"] = time.perf_counter() - t0
        if main:
            history.append(record)
            _save_epoch(cfg, out, record, history, split, net, eval_model, opt, ema, improved, best, best_epoch,
                        plateau_scale, bad_epochs, marked, aux_heads)  # fmt: skip
        ddp.barrier(info)
        msg = f"epoch {epoch}: loss {record['train_loss']:.4f}, {record['train_images_per_s']:.1f} img/s"
        if val_ids:
            msg += f", val per-patient Dice mean {record['val_dice']:.4f} median {record['val_dice_median']:.4f}"
        secs = record["epoch_seconds"]
        log(msg + (f", {secs:.0f} s" if secs >= 10 else f", {secs:.1f} s"))
        if cfg.patience and bad_epochs >= cfg.patience:
            log(f"early stop: no improvement of the {metric} for {cfg.patience} epochs (best epoch {best_epoch})")
            break
    # the weights saved (EMA's when on), equal on every rank under DDP
    weights = (ema.model if ema else net).state_dict()
    summary = run_summary(out, history, best, best_epoch, bool(val_ids), weights,
                           {**machine(device), "processes": info.world_size})  # fmt: skip
    if main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    more = f"; continue the ensemble with: {resume_command(resume_dir, info)}" if resume_dir else ""
    # asked during the last epoch's validation or saving: stopped, and said so
    stop.halt_if_asked(info, log, f"interrupted after the last epoch: {out} is complete{more}")
    return summary


def _save_epoch(cfg, out, record, history, split, net, eval_model, opt, ema, improved, best, best_epoch,
                plateau_scale, bad_epochs, marked=None, aux_heads=None) -> None:  # fmt: skip
    """Rank 0: append the epoch to metrics.jsonl, save last (and best) checkpoints, redraw curves."""
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    meta = {
        "epoch": record["epoch"],
        "metrics": {k: v for k, v in record.items() if k != "val_per_patient"},
        "split": split,
        "train_state": {
            "epoch": record["epoch"],
            "best": best,
            "best_epoch": best_epoch,
            "plateau_scale": plateau_scale,
            "bad_epochs": bad_epochs,
        },
    }
    extra = _optim_tensors(opt)
    if ema:
        extra.update({f"raw.{k}": v.cpu() for k, v in net.state_dict().items()})
    if aux_heads is not None:  # deep-supervision heads, for --resume only
        extra.update({f"aux.{k}": v.cpu() for k, v in aux_heads.state_dict().items()})
    if marked is not None:  # hard-negative sampling state, so a resumed run draws as an unbroken one
        extra["hard_empty.marked"] = torch.from_numpy(marked)
    weights = {k: v.cpu() for k, v in eval_model.state_dict().items()}
    # last first: a write that fails (a full disk) then never leaves a best without a last to resume
    save_checkpoint(out / "last.safetensors", Checkpoint(cfg, weights, meta, extra))
    if improved:
        save_checkpoint(out / "best.safetensors", Checkpoint(cfg, weights, meta))
    (out / "interrupted.safetensors").unlink(missing_ok=True)  # an earlier interrupt's, now superseded
    plot_curves(history, out / "curves.png")
