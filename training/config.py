"""The training configuration: a YAML file validated with pydantic.

Every section has defaults, so a config names only what differs. Unknown keys
and bad values raise :class:`ConfigError` naming the dotted key, e.g.
``demo.yaml: optim.lr: Input should be greater than 0``. See
``training/configs/demo.yaml`` for a documented example and
``training/configs/*.yaml`` for the dataset recipes.

``per_architecture`` maps an architecture name to dotted keys that replace the
ones above when ``model.architecture`` is that name (``--set`` still wins), so
one file can train the members of an ensemble with their own learning rates.
Keys left unset (``optim.lr``, ``optim.weight_decay``, ``model.drop_path_rate``,
``model.mean``/``model.std``) take the architecture's defaults
(:mod:`training.architectures`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from node.errors import ModelError
from node.models.registry import GLOBAL_POOLS, OUTPUT_STRIDES, check_architecture

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PatchConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_data",
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
    """``holdout``: ``val_fraction`` (and ``test_fraction``) of the patients, stratified;
    ``kfold``: fold ``fold`` of ``folds``; ``official``: the dataset's own train/test,
    validation carved from its training part by patient (``val_fraction``)."""
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    test_fraction: float = Field(default=0.0, ge=0, lt=1)
    """With ``split: holdout``: patients set aside as a test part (never trained on)."""
    folds: int = Field(default=5, ge=2)
    fold: int = Field(default=0, ge=0)
    """With ``split: kfold``: the fold validated on (the others train)."""
    split_seed: int | None = None
    """Seed of the split; unset: the run's ``seed``. ``breast-train cv`` trains fold ``k``
    with seed ``seed + k`` (its own initialisation, augmentation and patches) and one
    split."""
    patient_overlap: Literal["error", "drop"] = "error"
    """A patient in two of the training, validation and test parts: ``error`` stops
    before training; ``drop`` removes that patient's images from training and
    validation (never from the test part)."""
    cache_dir: Path | None = None
    """Preprocessed images as ``.npy`` (created once, shared by runs of the same input size)."""
    cache_dtype: Literal["uint16", "float16", "float32"] = "uint16"
    """Storage of cached images: 2 bytes a pixel (uint16: steps of 1/65535, float16:
    about 3 significant digits) or 4 (float32)."""
    limit: int | None = Field(default=None, ge=1)
    """Use only the first N images (smoke tests)."""

    @model_validator(mode="after")
    def _fold_in_range(self) -> DataConfig:
        if self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} is not below folds ({self.folds})")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return self


class ModelConfig(_Section):
    """The architecture and its input contract (becomes the card's ``input``)."""

    architecture: str = "breast_cnn_small"
    """Any timm model name (``node.models.registry.ARCHITECTURES`` are tested)."""
    global_pool: str | None = None
    """Global pooling (``avg``, ``max``, ``avgmax``, ``catavgmax``); unset: the
    architecture's default. Written to the card's member."""
    output_stride: int | None = None
    """Stride of the last feature map (8, 16; unset: 32). Finer Grad-CAM maps;
    written to the card's member."""
    pretrained: Path | None = None
    """A local checkpoint to start from (timm or torchvision state dict, ``.safetensors``
    or ``.pth``); 3-channel stems are adapted to ``channels`` as timm does, a classifier
    of another size is left out. Nothing is ever downloaded."""
    mean: tuple[float, ...] | None = None
    """Input normalisation per channel on the ``[0, 1]`` image; unset: the pretrained
    architecture's (ImageNet, averaged over RGB for one channel), else 0.5."""
    std: tuple[float, ...] | None = None
    head_init_scale: float | None = Field(default=None, ge=0)
    """Multiply the classifier's initial weights by this (0: start it at zero, so the first
    logits are 0 and the loss log(classes)); unset: the architecture's initialisation.
    Max pooling under a wide random head gives huge first logits (MobileNetV3, LCNet)."""
    drop_path_rate: float | None = Field(default=None, ge=0, lt=1)
    """Stochastic depth (architectures that have it); unset: the architecture's default."""
    height: int = Field(default=512, ge=32, le=8192)
    width: int = Field(default=256, ge=32, le=8192)
    channels: Literal[1, 3] = 1
    labels: tuple[str, ...] = ("normal", "benign", "malignant")
    modalities: tuple[Literal["MG", "US"], ...] = ("MG",)

    @model_validator(mode="after")
    def _known(self) -> ModelConfig:
        try:
            check_architecture(self.architecture)
        except ModelError as exc:
            raise ValueError(str(exc)) from None
        if self.global_pool is not None and self.global_pool not in GLOBAL_POOLS:
            raise ValueError(
                f"unknown global_pool {self.global_pool!r}; known: {', '.join(GLOBAL_POOLS)}"
            )
        if self.output_stride is not None and self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}")
        if "malignant" not in self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique and include 'malignant'")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and len(values) != self.channels:
                raise ValueError(f"{key} needs one value per channel ({self.channels})")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std values must be greater than 0")
        return self


class OptimConfig(_Section):
    """Optimiser, schedule, stopping."""

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float | None = Field(default=None, gt=0)
    """Peak learning rate; unset: the architecture's default."""
    weight_decay: float | None = Field(default=None, ge=0)
    """AdamW weight decay; unset: the architecture's default."""
    schedule: Literal["cosine", "plateau", "constant"] = "cosine"
    """After warm-up: cosine decay to 0 over the remaining steps, ReduceLROnPlateau-like
    steps on validation AUC after each epoch, or constant."""
    warmup_epochs: float = Field(default=0.0, ge=0)
    """Linear warm-up from 0 to ``lr`` over this many epochs (fractions allowed)."""
    plateau_patience: int = Field(default=2, ge=0)
    plateau_factor: float = Field(default=0.3, gt=0, lt=1)
    early_stopping: int = Field(default=0, ge=0)
    """Stop after this many epochs without a better validation AUC (0: never)."""
    accumulate: int = Field(default=1, ge=1)
    """Gradient accumulation: one optimiser step per this many batches (effective batch
    ``batch_size * accumulate * GPUs``)."""
    ema: float = Field(default=0.0, ge=0, lt=1)
    """Exponential moving average of the weights with this decay per optimiser step
    (0: off). Validation, ``best.pt`` and export use the averaged weights."""
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
    """Draw each class equally often (instead of, or with, class weights); works
    under torchrun too (one draw per epoch, shared out between processes)."""


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


class PatchConfig(_Section):
    """The optional patch stage (Shen et al. 2019): a patch classifier trained on lesion
    and background patches cut from the cached images with their masks, whose weights
    then start the whole-image model."""

    epochs: int = Field(default=0, ge=0)
    """Epochs of the patch stage (0: no patch stage)."""
    size: int = Field(default=128, ge=16, le=2048)
    """Patch side in model-input pixels."""
    per_lesion: int = Field(default=4, ge=1)
    """Patches per lesion image and epoch, centred on random lesion pixels (jittered)."""
    background: int = Field(default=2, ge=0)
    """Background patches per image and epoch, inside the breast, off every lesion."""
    lr: float | None = Field(default=None, gt=0)
    """Learning rate of the patch stage; unset: the whole-image ``optim.lr``."""
    batch_size: int = Field(default=64, ge=1)


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
    patch: PatchConfig = Field(default_factory=PatchConfig)
    per_architecture: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Architecture name -> ``{dotted.key: value}`` applied when it is the architecture."""
    num_workers: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(default=0, ge=0)
    """CPU threads for torch (0: torch's default)."""


def _error(source: str | Path, exc: ValidationError, prefix: str = "") -> ConfigError:
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(config)"
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
    return ConfigError(f"{source}: {prefix}{key}: {message}{more}")


def _set(data: dict[str, Any], key: str, value: Any, what: str) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to config data."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        _set(data, key, yaml.safe_load(text), f"override {item!r}")
    return data


def config_from_data(
    data: dict[str, Any], overrides: list[str] | None = None, source: str | Path = "(config)"
) -> TrainConfig:
    """Validate config data: ``--set`` overrides, then the architecture's
    ``per_architecture`` keys, then the overrides again (they win)."""
    data = apply_overrides(copy.deepcopy(data), overrides or [])
    table = data.get("per_architecture") or {}
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: per_architecture: must map architecture names to keys")
    architecture = (data.get("model") or {}).get("architecture", "breast_cnn_small")
    keys = table.get(architecture) or {}
    if not isinstance(keys, dict):
        raise ConfigError(f"{source}: per_architecture.{architecture}: must map keys to values")
    for key, value in keys.items():
        if key.split(".")[0] in ("per_architecture", "model") and key.endswith("architecture"):
            raise ConfigError(f"{source}: per_architecture.{architecture}: cannot set {key}")
        _set(data, key, value, f"{source}: per_architecture.{architecture}")
    data = apply_overrides(data, overrides or [])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        prefix = f"(with per_architecture.{architecture}) " if keys else ""
        raise _error(source, exc, prefix) from None


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
    return config_from_data(read_sections(path, "config"), overrides, path)
