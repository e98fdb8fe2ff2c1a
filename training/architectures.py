"""Per-architecture training defaults, and the settings a config resolves to.

A config that leaves ``optim.lr``, ``optim.weight_decay`` or
``model.drop_path_rate`` unset gets the architecture's values below: starting
points for fine-tuning from ImageNet weights at mammography resolution, the
range the open reimplementations and the RSNA 2023 solutions use (AdamW;
ConvNeXt with weight decay 0.05 and stochastic depth; VGG without batch norm
needs the smallest rate). Architectures outside the table get ``lr 3e-4``,
weight decay ``1e-4`` and no stochastic depth. The small CPU networks (the demo
ensemble's) train from scratch and take larger rates.

``model.mean``/``model.std`` unset: the pretrained architecture's normalisation
from timm's pretrained config (ImageNet for these), averaged over the three
channels for a one-channel model (a one-channel stem is the sum of the RGB
filters, so it expects the mean of the three normalisations); 0.5 / 0.5 when
training from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm

from training.config import TrainConfig

__all__ = ["DEFAULTS", "ArchitectureDefaults", "Resolved", "resolve"]


@dataclass(frozen=True)
class ArchitectureDefaults:
    """Training defaults of one architecture."""

    lr: float
    weight_decay: float
    drop_path_rate: float = 0.0


DEFAULTS: dict[str, ArchitectureDefaults] = {
    "breast_cnn_small": ArchitectureDefaults(2e-3, 1e-4),
    "mobilenetv3_small_050": ArchitectureDefaults(1e-3, 1e-4),
    "lcnet_050": ArchitectureDefaults(1e-3, 1e-4),
    "efficientnet_b0": ArchitectureDefaults(3e-4, 1e-5, 0.1),
    "efficientnet_b1": ArchitectureDefaults(3e-4, 1e-5, 0.1),
    "tf_efficientnetv2_b0": ArchitectureDefaults(3e-4, 1e-5, 0.1),
    "resnet50": ArchitectureDefaults(1e-4, 1e-4, 0.05),
    "densenet121": ArchitectureDefaults(1e-4, 1e-4),
    "convnext_tiny": ArchitectureDefaults(1e-4, 0.05, 0.1),
    "convnext_small": ArchitectureDefaults(1e-4, 0.05, 0.2),
    "vgg16": ArchitectureDefaults(5e-5, 5e-4),
}
"""Architecture -> defaults (see the module docstring)."""

_OTHER = ArchitectureDefaults(3e-4, 1e-4)


@dataclass(frozen=True)
class Resolved:
    """What a config trains with once the architecture's defaults fill its gaps."""

    lr: float
    weight_decay: float
    drop_path_rate: float
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _normalisation(config: TrainConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    model = config.model
    channels = model.channels
    if model.mean is not None and model.std is not None:
        return model.mean, model.std
    mean: tuple[float, ...] = (0.5,) * channels
    std: tuple[float, ...] = (0.5,) * channels
    cfg = timm.get_pretrained_cfg(model.architecture) if model.pretrained else None
    if cfg is not None and cfg.mean and cfg.std:
        if channels == len(cfg.mean):
            mean, std = tuple(cfg.mean), tuple(cfg.std)
        else:
            mean = (round(sum(cfg.mean) / len(cfg.mean), 4),) * channels
            std = (round(sum(cfg.std) / len(cfg.std), 4),) * channels
    return model.mean or mean, model.std or std


def resolve(config: TrainConfig) -> Resolved:
    """The learning rate, weight decay, stochastic depth and normalisation of ``config``."""
    defaults = DEFAULTS.get(config.model.architecture, _OTHER)
    mean, std = _normalisation(config)
    optim, model = config.optim, config.model
    return Resolved(
        lr=optim.lr if optim.lr is not None else defaults.lr,
        weight_decay=optim.weight_decay
        if optim.weight_decay is not None
        else defaults.weight_decay,
        drop_path_rate=model.drop_path_rate
        if model.drop_path_rate is not None
        else defaults.drop_path_rate,
        mean=mean,
        std=std,
    )
