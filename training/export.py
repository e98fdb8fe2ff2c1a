"""Export trained runs as a node model folder (``models/<name>/``).

For each run (a member): load ``best.pt``, compute its logits for every TTA view
through the node's preprocessing on the images it is calibrated on, and fit its
temperature (validation NLL). Then fit the ensemble weights, choose operating
thresholds for 90 % and 95 % sensitivity on the study scores (max over breasts
of the max over a breast's images, as the node computes it), and write weights
and card with :func:`node.models.folder.write_model_folder`.

The calibration images are, in this order of preference: ``--val-data`` (a
folder, all of it or its official ``train``/``test`` part), or the runs' own
validation part, found again from their ``run.json`` (the same config and seed
give the same images; a digest checks it). ``breast-train cv`` passes each fold
member its own out-of-fold images instead (:func:`export_fitted`).

Members of the same architecture form one group whose probabilities are
averaged; weights are fitted per group (``--weights``: ``nll``, ``auc``,
``equal``, or ``auto``: the NLL weights only when, cross-fitted on two halves of
the validation patients, they beat equal weights with a 95 % bootstrap interval
of the NLL difference below zero, else equal weights). How the weights were
chosen is written into the card (``ensemble.weighting``).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
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
from training.calibrate import choose_weights, fit_temperature, operating_points
from training.config import DataConfig
from training.data import cache_images, label_index, load_cached
from training.datasets import Sample
from training.loop import Normaliser
from training.metrics import roc_auc
from training.predict import view_logits
from training.selection import Part, parts_digest, read_samples, select_part
from training.train import RUN_FILE

__all__ = [
    "ExportOptions",
    "MemberFit",
    "Run",
    "export_fitted",
    "export_model",
    "fit_member",
    "load_run",
    "official_part",
    "run_part",
]

WeightMode = Literal["nll", "auc", "equal", "auto"]


@dataclass(frozen=True)
class ExportOptions:
    """What :func:`export_model` needs (the ``breast-train export`` arguments)."""

    runs: tuple[Path, ...]
    out: Path
    name: str
    val_data: Path | None = None
    """A folder to calibrate on; ``None``: the runs' own validation part."""
    split: Literal["all", "train", "test"] = "all"
    """With ``val_data``: all of it, or its official train or test part."""
    dataset: str = "auto"
    version: str = "1.0.0"
    card_fields: Path | None = None
    tta: Literal["none", "flip", "multi"] = "flip"
    weights: WeightMode = "nll"
    half: bool = False
    progress: bool = False
    seed: int = 0
    """Seed of the bootstrap behind ``weights: auto``."""
    output_stride: int | None = None
    """Serve every member at this output stride instead of the one it trained with (the
    same weights: strides are not weights); ``None`` keeps each run's own. Temperatures and
    thresholds are fitted at the stride served."""


@dataclass(frozen=True)
class Run:
    """A finished training run: its member name, architecture, input, labels and model."""

    folder: Path
    name: str
    architecture: str
    global_pool: str | None
    output_stride: int | None
    input: InputSpec
    labels: tuple[str, ...]
    modalities: tuple[str, ...]
    model: torch.nn.Module
    info: dict[str, Any]

    def data_config(self) -> DataConfig:
        """The ``data`` section the run was trained with."""
        return DataConfig.model_validate(self.info["config"]["data"])

    @property
    def seed(self) -> int:
        return int(self.info["config"]["seed"])


def load_run(folder: Path, *, output_stride: int | None = None) -> Run:
    """Read ``run.json`` and ``best.pt`` of a training run.

    ``output_stride`` builds the model at that stride instead of the trained one.
    """
    folder = Path(folder)
    try:
        info = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{folder}: not a finished training run (no {RUN_FILE})") from exc
    config = info["config"]
    labels = tuple(config["model"]["labels"])
    spec = InputSpec.model_validate(info["input"])
    global_pool = config["model"].get("global_pool")
    output_stride = output_stride or config["model"].get("output_stride")
    model = create_model(
        config["model"]["architecture"],
        num_classes=len(labels),
        in_chans=spec.channels,
        global_pool=global_pool,
        output_stride=output_stride,
    )
    model.load_state_dict(torch.load(folder / "best.pt", map_location="cpu", weights_only=True))
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", folder.name).lstrip("._-") or "member"
    return Run(
        folder=folder,
        name=name,
        architecture=config["model"]["architecture"],
        global_pool=global_pool,
        output_stride=output_stride,
        input=spec,
        labels=labels,
        modalities=tuple(config["model"]["modalities"]),
        model=model.eval(),
        info=info,
    )


def run_part(run: Run, part: Part) -> list[Sample]:
    """A run's validation or test images, found again from its config (digest-checked)."""
    samples = select_part(run.data_config(), run.seed, part)
    recorded = run.info.get("data", {}).get(f"{part}_digest")
    if recorded and recorded != parts_digest(samples):
        raise ValueError(
            f"{run.folder}: its {part} images are not the ones it was trained with "
            "(the dataset changed); give the data explicitly"
        )
    return samples


def official_part(root: Path, kind: str, part: Literal["all", "train", "test"]) -> list[Sample]:
    """All of a dataset folder, or its official train or test images."""
    samples = read_samples(kind, root)
    if part == "all":
        return samples
    wanted = {"train": ("train", "training", "valid", "val", "validation"), "test": ("test",)}
    chosen = [s for s in samples if (s.split or "").lower() in wanted[part]]
    if not chosen:
        raise ValueError(f"{root}: has no official {part} images")
    return chosen


@dataclass(frozen=True)
class MemberFit:
    """A member calibrated on some of the samples."""

    run: Run
    indices: tuple[int, ...]
    """Which samples (of the list given to :func:`export_fitted`) it was calibrated on."""
    temperature: float
    probabilities: npt.NDArray[np.float64]
    """``(len(indices), C)`` calibrated, view-averaged probabilities."""
    val_auc: float


def _images(
    samples: Sequence[Sample], spec: InputSpec, labels: Sequence[str], progress: bool
) -> tuple[torch.Tensor, npt.NDArray[np.int64]]:
    with tempfile.TemporaryDirectory(prefix="export-cache-") as tmp:
        # float32, as the node computes them: calibration sees exactly the served input
        entries = cache_images(
            samples,
            spec.preprocess_options(),
            labels,
            Path(tmp),
            dtype="float32",
            progress=progress,
        )
        images = torch.from_numpy(np.stack([load_cached(e.image) for e in entries]))[:, None]
    return images, np.array([e.target for e in entries], dtype=np.int64)


def fit_member(
    run: Run,
    samples: Sequence[Sample],
    indices: Sequence[int],
    tta: Literal["none", "flip", "multi"],
    *,
    progress: bool = False,
) -> MemberFit:
    """Temperature and calibrated probabilities of ``run`` on ``samples[indices]``."""
    chosen = [samples[i] for i in indices]
    images, targets = _images(chosen, run.input, run.labels, progress)
    normalise = Normaliser(run.input.channels, run.input.mean, run.input.std)
    logits = view_logits(run.model, images, tta_views(tta), normalise)
    temperature = fit_temperature(logits, targets)
    probs = np.mean([calibrated_probabilities(v, temperature) for v in logits], axis=0)
    malignant = run.labels.index("malignant")
    auc = roc_auc(targets == malignant, probs[:, malignant])
    return MemberFit(run, tuple(indices), temperature, probs, auc)


def _groups(fits: Sequence[MemberFit]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for m, fit in enumerate(fits):
        groups.setdefault(fit.run.architecture, []).append(m)
    return groups


def _group_probabilities(
    fits: Sequence[MemberFit], groups: dict[str, list[int]], count: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """``(G, N, C)`` group means where every group covers a sample, and which samples do."""
    classes = fits[0].probabilities.shape[1]
    out = np.zeros((len(groups), count, classes))
    covered = np.ones(count, dtype=bool)
    for g, members in enumerate(groups.values()):
        total = np.zeros((count, classes))
        seen = np.zeros(count)
        for m in members:
            index = np.array(fits[m].indices, dtype=np.int64)
            total[index] += fits[m].probabilities
            seen[index] += 1
        covered &= seen > 0
        out[g] = total / np.maximum(seen, 1)[:, None]
    return out, covered


def export_fitted(
    options: ExportOptions,
    fits: Sequence[MemberFit],
    samples: Sequence[Sample],
    *,
    evaluated_on: str,
) -> ModelCard:
    """Weights, thresholds and the model folder from calibrated members (any coverage)."""
    runs = [f.run for f in fits]
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
    malignant = first.labels.index("malignant")
    groups = _groups(fits)
    stacked, covered = _group_probabilities(fits, groups, len(samples))
    if not covered.all():
        raise ValueError(f"{int((~covered).sum())} calibration images have no member prediction")
    targets = np.array([label_index(s.label, first.labels) for s in samples], dtype=np.int64)
    patients = [s.patient_id for s in samples]
    choice = choose_weights(
        stacked, targets, malignant, options.weights, patients, seed=options.seed
    )
    member_weights = np.zeros(len(fits))
    for g, members in enumerate(groups.values()):
        member_weights[members] = choice.weights[g] / len(members)
    ensemble = np.tensordot(choice.weights, stacked, axes=1)[:, malignant]
    _, study_labels, study_scores = study_level(samples, ensemble)
    card = _card_data(options, fits, member_weights)
    card["ensemble"]["weighting"] = choice.description
    card["operating_points"] = operating_points(study_labels, study_scores)
    card["default_operating_point"] = "sens90"
    card.setdefault("training_data", {}).setdefault("images", _training_images(runs))
    card["metrics"] = {
        "evaluated_on": evaluated_on,
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


def export_model(options: ExportOptions, *, say: Callable[[str], None] | None = None) -> ModelCard:
    """Calibrate the runs on validation data and write the model folder; returns its card."""
    runs = [load_run(folder, output_stride=options.output_stride) for folder in options.runs]
    if options.val_data is not None:
        samples = official_part(options.val_data, options.dataset, options.split)
        where = f"{options.val_data.name}" + (
            f" ({options.split} part)" if options.split != "all" else ""
        )
    else:
        samples = run_part(runs[0], "val")
        digest = parts_digest(samples)
        for run in runs[1:]:
            if parts_digest(run_part(run, "val")) != digest:
                raise ValueError(
                    f"{run.folder}: validated on other images than {runs[0].folder}; "
                    "give --val-data to calibrate them together"
                )
        where = f"the runs' validation part of {runs[0].data_config().root.name}"
    everything = tuple(range(len(samples)))
    fits = []
    for run in runs:
        fits.append(fit_member(run, samples, everything, options.tta, progress=options.progress))
        if say is not None:
            say(f"{run.name}: validation AUC {fits[-1].val_auc:.4f}, T {fits[-1].temperature:.3f}")
    studies = len({s.study_id for s in samples})
    return export_fitted(
        options,
        fits,
        samples,
        evaluated_on=f"validation: {where}, {len(samples)} images, {studies} studies",
    )


def _training_images(runs: Sequence[Run]) -> int | None:
    counts = [r.info.get("data", {}).get("train_images") for r in runs]
    if counts and all(isinstance(c, int) for c in counts) and len(set(counts)) == 1:
        return int(counts[0])
    root = runs[0].info["config"]["data"]["root"]
    labels = Path(root) / "labels.csv"
    if not labels.exists():
        return None
    with labels.open(encoding="utf-8") as handle:
        return sum(1 for _ in handle) - 1


def _card_data(
    options: ExportOptions, fits: Sequence[MemberFit], weights: npt.NDArray[np.float64]
) -> dict[str, Any]:
    first = fits[0].run
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
                    "name": fit.run.name,
                    "architecture": fit.run.architecture,
                    **({"global_pool": fit.run.global_pool} if fit.run.global_pool else {}),
                    **({"output_stride": fit.run.output_stride} if fit.run.output_stride else {}),
                    "weight": round(float(w), 4),
                    "temperature": round(float(fit.temperature), 4),
                    "metrics": {"val_auc": round(fit.val_auc, 4)},
                }
                for fit, w in zip(fits, weights, strict=True)
            ],
            "tta": options.tta,
            "breast_aggregation": "max",
        },
    }
    extra_ensemble = extra.pop("ensemble", None)
    card.update(extra)
    if isinstance(extra_ensemble, dict):
        card["ensemble"].update(extra_ensemble)
    return card
