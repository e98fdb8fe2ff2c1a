"""Export trained runs as a node model folder (``models/<name>/``).

For each run (a member): load ``best.pt``, compute its logits on the
validation data for every TTA view through the node's preprocessing, fit its
temperature (validation NLL). Then fit the ensemble weights, choose operating
thresholds on the validation studies' scores for 90 % and 95 % sensitivity
(study score = max over breasts of the max over a breast's images, as the node
computes it), and write weights and card with
:func:`node.models.folder.write_model_folder`.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import yaml

from node.inference.ensemble import calibrated_probabilities, tta_views
from node.models.card import InputSpec, ModelCard
from node.models.folder import write_model_folder
from node.models.registry import create_model
from training.aggregate import study_level
from training.calibrate import fit_temperature, fit_weights, operating_points
from training.data import cache_images
from training.datasets import Sample, detect_kind, load_dataset
from training.loop import Normaliser
from training.metrics import roc_auc
from training.predict import view_logits
from training.train import RUN_FILE

__all__ = ["ExportOptions", "Run", "export_model", "load_run"]


@dataclass(frozen=True)
class ExportOptions:
    """What :func:`export_model` needs (the ``breast-train export`` arguments)."""

    runs: tuple[Path, ...]
    val_data: Path
    out: Path
    name: str
    dataset: str = "auto"
    version: str = "1.0.0"
    card_fields: Path | None = None
    tta: Literal["none", "flip", "multi"] = "flip"
    weights: Literal["nll", "auc", "equal"] = "nll"
    half: bool = False
    progress: bool = False


@dataclass(frozen=True)
class Run:
    """A finished training run: its member name, architecture, input, labels and model."""

    folder: Path
    name: str
    architecture: str
    global_pool: str | None
    input: InputSpec
    labels: tuple[str, ...]
    modalities: tuple[str, ...]
    model: torch.nn.Module
    info: dict[str, Any]


def load_run(folder: Path) -> Run:
    """Read ``run.json`` and ``best.pt`` of a training run."""
    folder = Path(folder)
    try:
        info = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{folder}: not a finished training run (no {RUN_FILE})") from exc
    config = info["config"]
    labels = tuple(config["model"]["labels"])
    spec = InputSpec.model_validate(info["input"])
    global_pool = config["model"].get("global_pool")
    model = create_model(
        config["model"]["architecture"],
        num_classes=len(labels),
        in_chans=spec.channels,
        global_pool=global_pool,
    )
    model.load_state_dict(torch.load(folder / "best.pt", map_location="cpu", weights_only=True))
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", folder.name).lstrip("._-") or "member"
    return Run(
        folder=folder,
        name=name,
        architecture=config["model"]["architecture"],
        global_pool=global_pool,
        input=spec,
        labels=labels,
        modalities=tuple(config["model"]["modalities"]),
        model=model.eval(),
        info=info,
    )


def _images(
    samples: Sequence[Sample],
    spec: InputSpec,
    labels: Sequence[str],
    cache: Path,
    progress: bool,
) -> tuple[torch.Tensor, npt.NDArray[np.int64]]:
    entries = cache_images(samples, spec.preprocess_options(), labels, cache, progress=progress)
    images = torch.from_numpy(np.stack([np.load(e.image) for e in entries]))[:, None]
    return images, np.array([e.target for e in entries], dtype=np.int64)


def export_model(options: ExportOptions, samples: Sequence[Sample] | None = None) -> ModelCard:
    """Calibrate the runs on validation data and write the model folder; returns its card.

    ``samples``: the validation images (the validation part of the runs' own split);
    without them, every image of ``options.val_data`` is one."""
    runs = [load_run(folder) for folder in options.runs]
    first = runs[0]
    for run in runs[1:]:
        if run.input != first.input or run.labels != first.labels:
            raise ValueError(
                f"{run.folder}: input or labels differ from {first.folder}; "
                "ensemble members must share the input contract"
            )
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run folder names must be unique (they name the members): {names}")
    if samples is None:
        kind = detect_kind(options.val_data) if options.dataset == "auto" else options.dataset
        samples = load_dataset(kind, options.val_data)
    malignant = first.labels.index("malignant")
    with tempfile.TemporaryDirectory(prefix="export-cache-") as tmp:
        images, targets = _images(samples, first.input, first.labels, Path(tmp), options.progress)
    normalise = Normaliser(first.input.channels, first.input.mean, first.input.std)
    views = tta_views(options.tta)
    temperatures, member_probs, member_metrics = [], [], []
    for run in runs:
        logits = view_logits(run.model, images, views, normalise)
        temperature = fit_temperature(logits, targets)
        probs = np.mean([calibrated_probabilities(v, temperature) for v in logits], axis=0)
        temperatures.append(temperature)
        member_probs.append(probs)
        member_metrics.append(
            {"val_auc": round(roc_auc(targets == malignant, probs[:, malignant]), 4)}
        )
    stacked = np.stack(member_probs)
    weights = fit_weights(stacked, targets, malignant, options.weights)
    ensemble = np.tensordot(weights, stacked, axes=1)[:, malignant]
    _, study_labels, study_scores = study_level(samples, ensemble)
    card = _card_data(options, runs, temperatures, weights, member_metrics)
    card["operating_points"] = operating_points(study_labels, study_scores)
    card["default_operating_point"] = "sens90"
    card.setdefault("training_data", {}).setdefault("images", _training_images(runs))
    card["metrics"] = {
        "evaluated_on": f"validation ({options.val_data.name}, {len(samples)} images)",
        "values": {
            "auc_image": round(roc_auc(targets == malignant, ensemble), 4),
            "auc_study": round(roc_auc(study_labels, study_scores), 4),
        },
    }
    states = {
        run.name: {
            k: (v.half() if options.half and v.is_floating_point() else v)
            for k, v in run.model.state_dict().items()
        }
        for run in runs
    }
    result = write_model_folder(options.out, card, states)
    for run in runs:
        if (run.folder / "metrics.csv").exists():
            shutil.copyfile(run.folder / "metrics.csv", options.out / f"{run.name}-metrics.csv")
    return result


def _training_images(runs: Sequence[Run]) -> int | None:
    root = runs[0].info["config"]["data"]["root"]
    labels = Path(root) / "labels.csv"
    if not labels.exists():
        return None
    with labels.open(encoding="utf-8") as handle:
        return sum(1 for _ in handle) - 1


def _card_data(
    options: ExportOptions,
    runs: Sequence[Run],
    temperatures: Sequence[float],
    weights: npt.NDArray[np.float64],
    member_metrics: Sequence[dict[str, float]],
) -> dict[str, Any]:
    first = runs[0]
    extra: dict[str, Any] = {}
    if options.card_fields is not None:
        extra = yaml.safe_load(options.card_fields.read_text(encoding="utf-8")) or {}
    card: dict[str, Any] = {
        "name": options.name,
        "version": options.version,
        "description": "",
        "intended_use": "Research use only. Not a medical device, not for clinical use.",
        "modalities": list(first.modalities),
        "input": first.input.model_dump(mode="json"),
        "labels": list(first.labels),
        "malignant_label": "malignant",
        "ensemble": {
            "members": [
                {
                    "name": run.name,
                    "architecture": run.architecture,
                    **({"global_pool": run.global_pool} if run.global_pool else {}),
                    "weight": round(float(w), 4),
                    "temperature": round(float(t), 4),
                    "metrics": m,
                }
                for run, t, w, m in zip(runs, temperatures, weights, member_metrics, strict=True)
            ],
            "tta": options.tta,
            "breast_aggregation": "max",
        },
    }
    card.update(extra)
    return card
