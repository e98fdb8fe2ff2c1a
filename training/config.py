"""The training configuration: a YAML file validated with pydantic.

Every section has defaults, so a config names only what differs. Unknown keys
and bad values raise :class:`ConfigError` naming the dotted key, e.g.
``demo.yaml: optim.lr: Input should be greater than 0``. See
``training/configs/demo.yaml`` for a documented example.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from node.models.registry import ARCHITECTURES, GLOBAL_POOLS

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "read_sections",
]


class ConfigError(ValueError):
    """A training config is missing, not YAML, or has a bad key or value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where the images are and how they are split."""

    kind: str = "synthetic"
    """Dataset adapter (``training.datasets.DATASETS``), or ``auto`` to detect it."""
    root: Path
    """The dataset folder."""
    val_root: Path | None = None
    """A separate validation folder (same kind); otherwise validation comes from ``root``."""
    split: Literal["holdout", "kfold", "official"] = "holdout"
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    folds: int = Field(default=5, ge=2)
    fold: int = Field(default=0, ge=0)
    """With ``split: kfold``: the fold validated on (the others train)."""
    cache_dir: Path | None = None
    """Preprocessed images as ``.npy`` (created once, shared by runs of the same input size)."""
    limit: int | None = Field(default=None, ge=1)
    """Use only the first N images (smoke tests)."""

    @model_validator(mode="after")
    def _fold_in_range(self) -> DataConfig:
        if self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} is not below folds ({self.folds})")
        return self


class ModelConfig(_Section):
    """The architecture and its input contract (becomes the card's ``input``)."""

    architecture: str = "breast_cnn_small"
    global_pool: str | None = None
    """Global pooling (``avg``, ``max``, ``avgmax``, ``catavgmax``); unset: the
    architecture's default. Written to the card's member."""
    height: int = Field(default=512, ge=32, le=8192)
    width: int = Field(default=256, ge=32, le=8192)
    channels: Literal[1, 3] = 1
    labels: tuple[str, ...] = ("normal", "benign", "malignant")
    modalities: tuple[Literal["MG", "US"], ...] = ("MG",)

    @model_validator(mode="after")
    def _known(self) -> ModelConfig:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}"
            )
        if self.global_pool is not None and self.global_pool not in GLOBAL_POOLS:
            raise ValueError(
                f"unknown global_pool {self.global_pool!r}; known: {', '.join(GLOBAL_POOLS)}"
            )
        if "malignant" not in self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique and include 'malignant'")
        return self


class OptimConfig(_Section):
    """Optimiser, schedule, stopping."""

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    schedule: Literal["cosine", "plateau", "constant"] = "cosine"
    plateau_patience: int = Field(default=2, ge=0)
    plateau_factor: float = Field(default=0.3, gt=0, lt=1)
    early_stopping: int = Field(default=0, ge=0)
    """Stop after this many epochs without a better validation AUC (0: never)."""
    amp: bool = True
    """Mixed precision on CUDA (ignored on CPU)."""
    grad_clip: float = Field(default=0.0, ge=0)


class LossConfig(_Section):
    """Loss and class balance."""

    kind: Literal["cross_entropy", "focal"] = "cross_entropy"
    focal_gamma: float = Field(default=2.0, ge=0)
    class_weights: Literal["none", "inverse", "sqrt_inverse"] = "sqrt_inverse"
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    weighted_sampling: bool = False
    """Draw each class equally often (instead of, or with, class weights)."""


class AugmentConfig(_Section):
    """Augmentations on the preprocessed ``[0, 1]`` tensors (probabilities per image)."""

    hflip: float = Field(default=0.5, ge=0, le=1)
    vflip: float = Field(default=0.0, ge=0, le=1)
    affine: float = Field(default=0.5, ge=0, le=1)
    degrees: float = Field(default=10.0, ge=0, le=180)
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = Field(default=0.05, ge=0, le=0.5)
    elastic: float = Field(default=0.0, ge=0, le=1)
    elastic_alpha: float = Field(default=0.02, ge=0)
    """Displacement amplitude as a fraction of the image size."""
    elastic_grid: int = Field(default=6, ge=2)
    brightness_contrast: float = Field(default=0.5, ge=0, le=1)
    brightness: float = Field(default=0.1, ge=0, le=1)
    contrast: float = Field(default=0.2, ge=0, le=1)
    gamma: float = Field(default=0.2, ge=0, le=1)
    clahe: float = Field(default=0.0, ge=0, le=1)
    speckle: float = Field(default=0.0, ge=0, le=1)
    """Multiplicative speckle noise (ultrasound)."""
    speckle_sigma: float = Field(default=0.15, ge=0)


class TrainConfig(_Section):
    """The whole training run."""

    name: str = "run"
    seed: int = 0
    output: Path = Path("var/train/run")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    num_workers: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(default=0, ge=0)
    """CPU threads for torch (0: torch's default)."""


def _error(source: str | Path, exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(config)"
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
    return ConfigError(f"{source}: {key}: {message}{more}")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to config data."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(text)
    return data


def read_sections(path: Path, what: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The YAML mapping in ``path`` (a ``what``: "config", "recipe") with ``overrides``
    applied; :class:`ConfigError` naming the file when it cannot be read or is not one."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of sections")
    return apply_overrides(data, list(overrides))


def load_config(path: Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read and validate a YAML config; relative paths in it are relative to the working dir."""
    data = read_sections(path, "config", overrides or [])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise _error(path, exc) from None
