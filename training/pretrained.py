"""Start a model from a local checkpoint file (ImageNet weights, an earlier run, the patch stage).

Nothing is downloaded: the file is read from disk (``.safetensors``, or a
``.pth``/``.pt``/``.bin`` torch file read with ``weights_only=True``). The state
dict may be wrapped (``state_dict``, ``model``, ``model_ema``) and carry a DDP
``module.`` prefix. Then what timm's own pretrained loading does:

1. the architecture's checkpoint filter, when timm has one (it maps, e.g., a
   torchvision VGG16 classifier onto timm's layout, or a ConvNeXt checkpoint of
   the original repository onto timm's keys);
2. the stem (timm's ``first_conv``) adapted to the model's input channels with
   :func:`timm.layers.adapt_input_conv` (for one channel: the RGB filters summed);
3. a classifier of another size (timm's ``classifier``) left out: it starts at random.

Every other tensor must be in the file with the model's shape, or
:class:`ValueError` names what is missing or different.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from node.models.folder import sha256_file

__all__ = ["PretrainedLoad", "load_pretrained", "read_state_dict"]

_WRAPPERS = ("state_dict", "model", "model_ema", "state_dict_ema", "module")
_SHOWN = 5


@dataclass(frozen=True)
class PretrainedLoad:
    """What :func:`load_pretrained` did (recorded in ``run.json``)."""

    file: str
    sha256: str
    loaded: int
    """Tensors of the model taken from the file."""
    adapted: tuple[str, ...]
    """Stem weights adapted to the model's input channels."""
    reset: tuple[str, ...]
    """Model tensors left at their random start (a classifier of another size)."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped, ``module.`` prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: pretrained checkpoint file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(path, device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader error: the file is not a checkpoint
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    while isinstance(data, Mapping):
        inner = next((data[k] for k in _WRAPPERS if isinstance(data.get(k), Mapping)), None)
        if inner is None:
            break
        data = inner
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{path}: holds no state dict")
    state = {str(k).removeprefix("module."): v for k, v in data.items()}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _filter_fn(model: nn.Module) -> Any:
    module = sys.modules.get(type(model).__module__)
    for name in ("checkpoint_filter_fn", "_filter_fn"):
        function = getattr(module, name, None)
        if callable(function):
            return function
    return None


def _names(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _shown(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def load_pretrained(model: nn.Module, path: Path) -> PretrainedLoad:
    """Fill ``model`` (a timm model) from the checkpoint at ``path``; see the module docstring."""
    from timm.models import adapt_input_conv

    path = Path(path)
    state = read_state_dict(path)
    filter_fn = _filter_fn(model)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except TypeError:
            state = filter_fn(state)
        except (KeyError, RuntimeError, ValueError):
            pass  # the filter expects another layout: load the keys as they are
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    target = model.state_dict()
    adapted = []
    for conv in _names(cfg.get("first_conv")):
        key = f"{conv}.weight"
        if key in state and key in target and state[key].shape != target[key].shape:
            in_chans = target[key].shape[1] * getattr(model.get_submodule(conv), "groups", 1)
            weight = state[key].float()
            state[key] = adapt_input_conv(in_chans, weight, base_chans=weight.shape[1])
            adapted.append(key)
    reset = []
    for head in _names(cfg.get("classifier")):
        for key in (f"{head}.weight", f"{head}.bias"):
            if key in target and (key not in state or state[key].shape != target[key].shape):
                state.pop(key, None)
                reset.append(key)
    missing = sorted(k for k in target if k not in state and k not in reset)
    unexpected = sorted(k for k in state if k not in target)
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(target[k].shape)}"
        for k in state
        if k in target and state[k].shape != target[k].shape
    )
    problems = [
        f"{label}: {_shown(items)}"
        for label, items in (
            ("missing", missing),
            ("not in the model", unexpected),
            ("shape", wrong),
        )
        if items
    ]
    if problems:
        arch = cfg.get("architecture", type(model).__name__)
        raise ValueError(f"{path}: does not fit {arch}: {'; '.join(problems)}")
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in state.items()}, strict=not reset)
    return PretrainedLoad(
        file=str(path),
        sha256=sha256_file(path),
        loaded=len(state),
        adapted=tuple(adapted),
        reset=tuple(reset),
    )
