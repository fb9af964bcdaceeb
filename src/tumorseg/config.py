"""Typed, validated configs. Each run saves its config; each checkpoint carries it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import TumorsegError

SCHEMA_VERSION = 1
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")  # inference backends, by Predictor
# TrainConfig fields a resumed run may change: they extend or place the training, and do not
# change what one epoch does
RESUME_MAY_CHANGE = frozenset({"out", "workers", "threads", "device", "epochs", "patience"})
# what a resumed run's checkpoint is not compared on: those, the precision, and the data folder's
# path (the same patients may be elsewhere: the run checks them)
RESUME_UNCOMPARED = RESUME_MAY_CHANGE | {"precision", "data"}


def split_problem(val_frac: float, test_frac: float, folds: int, fold: int) -> str | None:
    """What is wrong with these split settings (TrainConfig's rule, and split_cases'), or None."""
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        return (f"val_frac + test_frac must be below 1 (got {val_frac} + {test_frac}; each in [0, 1), their sum "
                "below 1)")  # fmt: skip
    if folds == 1 or folds < 0 or not 0 <= fold < max(folds, 1):
        return f"fold must be in 0..folds-1 with folds >= 2 (got fold {fold} of {folds})"
    if folds and val_frac:
        return "folds choose the validation patients: leave val_frac at 0"
    return None


Channels = Literal["all", "flair"]
Intensity = Literal["fixed", "percentile", "volume"]


class ModelConfig(BaseModel):
    """What it takes to rebuild the network and feed it."""

    model_config = ConfigDict(extra="forbid")

    in_channels: int = Field(3, ge=1, le=64)
    base: int = Field(16, ge=2, le=256)
    depth: int = Field(4, ge=1, le=7)
    image_size: int = Field(128, ge=16, le=1024)
    channels: Channels = "all"
    intensity: Intensity = "percentile"
    context: int = Field(0, ge=0, le=3)
    members: int = Field(1, ge=1, le=8)

    @property
    def sequence_channels(self) -> int:
        """Channels of one slice: 3 sequences (`all`) or FLAIR alone."""
        return 3 if self.channels == "all" else 1

    @model_validator(mode="before")
    @classmethod
    def _derive_in_channels(cls, data):
        """in_channels, when not given, follows `channels` and `context`."""
        context = data.get("context", 0) if isinstance(data, dict) else None
        if isinstance(context, int) and "in_channels" not in data:
            data = {**data, "in_channels": (1 if data.get("channels") == "flair" else 3) + 2 * context}
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.image_size % (2**self.depth):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**depth = {2**self.depth}")
        want = self.sequence_channels + 2 * self.context
        if self.in_channels != want:
            raise ValueError(
                f"channels={self.channels!r} with context={self.context} needs in_channels={want}, "
                f"got {self.in_channels}"
            )
        return self


class TrainConfig(BaseModel):
    """Everything that decides a training run."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    data: str = "../shared/data/lgg"
    out: str = "runs/default"
    model: ModelConfig = ModelConfig()
    epochs: int = Field(80, ge=1, le=10000)
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, le=1.0)
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    schedule: Literal["none", "cosine", "plateau"] = "cosine"
    loss: Literal["bce", "bce+dice", "bce+tversky", "bce+tversky-slice"] = "bce+tversky"
    empty_ratio: float = Field(1.0, ge=0, le=100)
    augment: bool = True
    zoom: float = Field(0.1, ge=0, lt=1)  # random zoom drawn from [1 - zoom, 1 + zoom] (with augment)
    dim_lesions: float = Field(0.0, ge=0, le=1)  # share of tumor slices with a part of the tumor darkened
    missing_sequences: float = Field(0.0, ge=0, le=1)  # share of slices shown with T1 sequences replaced by FLAIR
    hard_empty: float = Field(0.0, ge=0, le=1)  # share of empty slices drawn by the tumor last marked in them
    patient_balance: float = Field(0.0, ge=0, le=1)  # tumor slices drawn with weight n**-balance, n: its patient's
    sequence_jitter: bool = False  # brightness, contrast and gamma drawn per MRI sequence (with augment)
    bias_field: float = Field(0.0, ge=0, le=1)  # largest coefficient of a smooth random intensity field (0 = off)
    histogram_shift: float = Field(0.0, ge=0, le=1)  # share of slices through a random monotone intensity curve
    deep_supervision: bool = False  # 1x1 heads on the coarser decoder outputs, trained only
    ema: float = Field(0.99, ge=0, lt=1.0)
    seed: int = Field(0, ge=0)
    val_frac: float = Field(0.0, ge=0, lt=1)
    test_frac: float = Field(0.2, ge=0, lt=1)
    folds: int = Field(0, ge=0, le=100)
    fold: int = Field(0, ge=0)
    patience: int = Field(0, ge=0)
    workers: int = Field(0, ge=0, le=64)
    threads: int = Field(0, ge=0, le=1024)
    max_patients: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sync_bn: bool = False
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    member: int = Field(0, ge=0, le=7)  # which ensemble member a run trains: init and sampling use seed + member

    @field_validator("data", "out", mode="before")
    @classmethod
    def _path_text(cls, value):
        """A pathlib.Path is taken as its text."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if problem := split_problem(self.val_frac, self.test_frac, self.folds, self.fold):
            raise ValueError(problem)
        if self.missing_sequences and self.model.channels != "all":
            raise ValueError("missing_sequences needs channels='all' (it replaces the T1 sequences by FLAIR)")
        if self.member and self.model.members > 1:
            raise ValueError("member trains one ensemble member alone: leave it at 0 with members > 1")
        if self.deep_supervision and self.model.depth < 2:
            raise ValueError("deep_supervision needs depth >= 2 (its heads read the decoder outputs below full size)")
        if self.batch_size == 1 and self.model.image_size == 2**self.model.depth:
            raise ValueError(f"batch_size 1 with image_size {self.model.image_size} = 2**depth: the bottleneck is "
                             "1x1, where batch norm needs more than one value per channel; use batch_size >= 2 "
                             "or a smaller depth")  # fmt: skip
        return self


def validate_config(data: dict, source: str = "config") -> TrainConfig:
    """Build a TrainConfig from a dict, raising TumorsegError with readable reasons."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise TumorsegError(f"{source}: invalid config: {_reasons(exc)}") from None


def _reasons(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def option_reasons(exc: ValidationError) -> str:
    """`_reasons` as the CLI's options: `--member`, `--val-frac`, not config fields."""
    import re

    named = sorted(n for n in {*TrainConfig.model_fields, *ModelConfig.model_fields} if "_" in n)
    flags = re.compile(r"\b(" + "|".join(named) + r")\b")
    parts = []
    for err in exc.errors():
        where = [str(p) for p in err["loc"] if p != "model"]
        msg = flags.sub(lambda m: "--" + m.group(1).replace("_", "-"), err["msg"].removeprefix("Value error, "))
        parts.append(f"--{where[-1].replace('_', '-')}: {msg}" if where else msg)
    return "; ".join(parts)


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TumorsegError(f"{path}: cannot read config ({exc})") from None
    return validate_config(data, str(path))
