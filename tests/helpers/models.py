"""Small model folders for tests, written with the same code the training export uses.

``write_random_model_folder(tmp_path / "model")`` gives a valid folder whose
members have seeded random weights (accepting MG and US by default, so that a node
serving it alone covers the default eligibility rules); ``bright_spot_state`` gives weights with a
known answer (the malignant logit measures bright pixels) for explanation tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from node.models.folder import write_model_folder
from node.models.registry import create_model

__all__ = [
    "LABELS",
    "bright_spot_state",
    "card_data",
    "symmetric_state",
    "write_random_model_folder",
]

LABELS = ("normal", "benign", "malignant")


def card_data(
    members: Sequence[Mapping[str, Any]],
    *,
    labels: Sequence[str] = LABELS,
    height: int = 128,
    width: int = 64,
    channels: int = 1,
    modalities: Sequence[str] = ("MG", "US"),
    threshold: float = 0.3,
    **extra: Any,
) -> dict[str, Any]:
    """Card data for :func:`node.models.folder.write_model_folder` (hashes filled in there)."""
    data: dict[str, Any] = {
        "name": "tiny-test",
        "version": "0.0.1",
        "description": "random weights for tests",
        "intended_use": "Software tests only. Not for clinical use.",
        "modalities": list(modalities),
        "input": {
            "height": height,
            "width": width,
            "channels": channels,
            "mean": [0.5] * channels,
            "std": [0.5] * channels,
        },
        "labels": list(labels),
        "malignant_label": "malignant" if "malignant" in labels else labels[-1],
        "operating_points": [
            {"name": "sens90", "threshold": threshold, "sensitivity": 0.9},
            {"name": "sens95", "threshold": threshold / 2, "sensitivity": 0.95},
        ],
        "ensemble": {"members": [dict(m) for m in members], "tta": "flip"},
        "training_data": {"description": "none", "datasets": [], "images": 0},
        "metrics": {"evaluated_on": "nothing", "values": {}},
    }
    data.update(extra)
    return data


def write_random_model_folder(
    folder: Path,
    architectures: Sequence[str] = ("breast_cnn_small",),
    *,
    weights: Sequence[float] | None = None,
    temperatures: Sequence[float] | None = None,
    seed: int = 0,
    states: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    **card_options: Any,
) -> Path:
    """Write a valid model folder with one seeded random member per architecture.

    Members are named ``m0``, ``m1``, ...; ``states`` replaces a member's random
    weights. ``card_options`` go to :func:`card_data`. Returns ``folder``.
    """
    labels = card_options.get("labels", LABELS)
    channels = card_options.get("channels", 1)
    members = []
    tensors: dict[str, Mapping[str, torch.Tensor]] = {}
    for index, architecture in enumerate(architectures):
        name = f"m{index}"
        torch.manual_seed(seed + index)
        model = create_model(architecture, num_classes=len(labels), in_chans=channels)
        tensors[name] = (states or {}).get(name, model.state_dict())
        members.append(
            {
                "name": name,
                "architecture": architecture,
                "weight": 1.0 if weights is None else weights[index],
                "temperature": 1.0 if temperatures is None else temperatures[index],
            }
        )
    write_model_folder(folder, card_data(members, **card_options), tensors)
    return folder


def symmetric_state(seed: int = 0, num_classes: int = 3) -> dict[str, torch.Tensor]:
    """Random ``breast_cnn_small`` weights with mirror-symmetric kernels: a flip-invariant model."""
    torch.manual_seed(seed)
    state = create_model("breast_cnn_small", num_classes=num_classes, in_chans=1).state_dict()
    return {
        key: (value + value.flip(-1)) / 2 if value.ndim == 4 else value
        for key, value in state.items()
    }


def bright_spot_state(threshold: float = 0.7, gain: float = 20.0) -> dict[str, torch.Tensor]:
    """``breast_cnn_small`` (3 labels, 1 channel) whose malignant logit measures bright pixels.

    Feature channel 0 is ``relu(patch mean - threshold)`` carried through every
    stage unchanged (centre-tap convolutions, identity batch norms, max pooling);
    all other channels are 0. The malignant logit is ``gain`` times that
    channel's spatial mean, the others 0, so Grad-CAM is that channel: it lights
    up exactly where the input is brighter than ``threshold``.
    """
    model = create_model("breast_cnn_small", num_classes=3, in_chans=1)
    state = {key: torch.zeros_like(value) for key, value in model.state_dict().items()}
    for key, value in state.items():
        if key.endswith("running_var"):
            value.fill_(1.0 - 1e-5)  # with eps, the batch norm divides by exactly 1
        elif key.endswith(".weight") and value.ndim == 1:  # batch-norm scale
            value.fill_(1.0)
    state["stem.0.weight"][0, 0] = 1.0 / 16  # 4 x 4 patch mean
    state["stem.1.bias"][0] = -threshold
    for index in range(3):
        state[f"stages.{index}.0.weight"][0, 0, 1, 1] = 1.0
    state["fc.weight"][2, 0] = gain
    return state
