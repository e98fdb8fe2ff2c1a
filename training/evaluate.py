"""Evaluate a model folder on a labelled dataset, computing what the node would compute.

DICOM datasets run through :class:`node.inference.engine.InferenceEngine` itself
(preprocessing, TTA, temperatures, weights, breast and study aggregation,
Grad-CAM); image-file datasets (BUSI, folders, the Kaggle CBIS JPEGs) through
the same preprocessing, registry and ensemble functions.

Reported per image, per breast and per study: AUC for malignant vs not with a
seeded bootstrap 95 % CI (resampling patients), sensitivity and specificity at
each of the card's operating points; per image also the confusion matrix of
the predicted class, the expected calibration error and, where lesion masks
exist, the Grad-CAM localisation score: the fraction of malignant images whose
map peak lies inside the lesion mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import yaml

from node.config import InferenceSettings
from node.inference.engine import ImageInput, InferenceEngine, StudyInferenceError, StudyInput
from node.inference.ensemble import calibrated_probabilities, combine_members
from node.models.card import CARD_FILE, ModelCard, card_from_data, read_card
from node.models.folder import load_model_folder
from training.aggregate import breast_level, study_level
from training.data import label_index, preprocess_sample
from training.datasets import Sample, detect_kind, lesion_mask, load_dataset
from training.loop import Normaliser
from training.metrics import (
    bootstrap_auc,
    confusion_matrix,
    expected_calibration_error,
    roc_auc,
    stats_at_threshold,
)
from training.predict import view_logits
from training.progress import progress_bar

__all__ = ["ImagePrediction", "cam_hit", "evaluate_model", "predict_samples", "summary"]

_STUDIES_PER_CALL = 8


@dataclass(frozen=True)
class ImagePrediction:
    """The model's output for one sample."""

    probabilities: npt.NDArray[np.float64]  # (C,) over the card's labels
    cam_hit: bool | None  # map peak inside the lesion mask; None without CAM or mask


def cam_hit(heatmap: npt.NDArray[np.float32], geometry: Any, mask: npt.NDArray[np.bool_]) -> bool:
    """Whether the heat map's peak, mapped to original pixels, lies inside ``mask``."""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    ((x, y),) = geometry.to_original([[col + 0.5, row + 0.5]])
    r = min(max(int(y), 0), mask.shape[0] - 1)
    c = min(max(int(x), 0), mask.shape[1] - 1)
    return bool(mask[r, c])


def _engine_predictions(
    model_dir: Path, card: ModelCard, samples: Sequence[Sample], progress: bool
) -> list[ImagePrediction]:
    settings = InferenceSettings(
        tta=card.ensemble.tta,
        breast_aggregation=card.ensemble.breast_aggregation,
        cam=any(s.malignant and s.has_lesion_outline for s in samples),
        max_regions=0,
        batch_size=16,
    )
    engine = InferenceEngine.load(model_dir, settings)
    studies: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        studies.setdefault(sample.study_id, []).append(i)
    ids = list(studies)
    out: dict[int, ImagePrediction] = {}
    chunks = [ids[i : i + _STUDIES_PER_CALL] for i in range(0, len(ids), _STUDIES_PER_CALL)]
    for chunk in progress_bar(chunks, "evaluate", enabled=progress):
        inputs = [
            StudyInput(
                study_uid=s,
                images=tuple(ImageInput(samples[i].path, f"{i}") for i in studies[s]),
            )
            for s in chunk
        ]
        for result in engine.infer_each(inputs):
            if isinstance(result, StudyInferenceError):
                raise ValueError(f"study {result.study_uid}: {result.reason}")
            for image in result.images:
                index = int(image.sop_instance_uid)
                sample = samples[index]
                hit = None
                if image.heatmap is not None and sample.malignant and sample.has_lesion_outline:
                    rows, cols = image.geometry.original_shape
                    mask = lesion_mask(sample, rows, cols)
                    hit = None if mask is None else cam_hit(image.heatmap, image.geometry, mask)
                probs = np.array([image.class_probabilities[label] for label in card.labels])
                out[index] = ImagePrediction(probs, hit)
    return [out[i] for i in range(len(samples))]


def _array_predictions(
    model_dir: Path, card: ModelCard, samples: Sequence[Sample], progress: bool
) -> list[ImagePrediction]:
    from node.inference.ensemble import tta_views

    model = load_model_folder(model_dir)
    options = card.input.preprocess_options()
    images = torch.from_numpy(
        np.stack(
            [
                preprocess_sample(s, options).image
                for s in progress_bar(samples, "preprocess", enabled=progress)
            ]
        )
    )[:, None]
    normalise = Normaliser(card.input.channels, card.input.mean, card.input.std)
    views = tta_views(card.ensemble.tta)
    member_probs = []
    for member in model.members:
        logits = view_logits(member.model, images, views, normalise)
        member_probs.append(
            np.mean([calibrated_probabilities(v, member.spec.temperature) for v in logits], axis=0)
        )
    weights = [m.spec.weight for m in model.members]
    probs, _ = combine_members(np.stack(member_probs), weights, card.malignant_index)
    return [ImagePrediction(p, None) for p in probs]


def predict_samples(
    model_dir: Path, samples: Sequence[Sample], *, progress: bool = False
) -> list[ImagePrediction]:
    """The model's prediction for every sample (the engine for DICOM, else the same arithmetic)."""
    card = read_card(Path(model_dir))
    if all(s.is_dicom for s in samples):
        return _engine_predictions(Path(model_dir), card, samples, progress)
    return _array_predictions(Path(model_dir), card, samples, progress)


def _level(
    labels: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
    groups: Sequence[str],
    card: ModelCard,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    low, high = bootstrap_auc(labels, scores, groups=groups, resamples=resamples, seed=seed)
    return {
        "n": int(labels.size),
        "positives": int(labels.sum()),
        "auc": roc_auc(labels, scores),
        "auc_ci95": [low, high],
        "operating_points": {
            p.name: stats_at_threshold(labels, scores, p.threshold).to_dict()
            for p in card.operating_points
        },
    }


def evaluate_model(
    model_dir: Path,
    data_dir: Path,
    *,
    dataset: str = "auto",
    plots: Path | None = None,
    record: bool = False,
    resamples: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model_dir`` on the dataset at ``data_dir``; returns the report (JSON-ready)."""
    model_dir, data_dir = Path(model_dir), Path(data_dir)
    card = read_card(model_dir)
    kind = detect_kind(data_dir) if dataset == "auto" else dataset
    samples = load_dataset(kind, data_dir)
    predictions = predict_samples(model_dir, samples, progress=progress)
    malignant = card.malignant_index
    scores = np.array([p.probabilities[malignant] for p in predictions])
    labels = np.array([s.malignant for s in samples])
    patients = [s.patient_id for s in samples]
    mode = card.ensemble.breast_aggregation

    image = _level(labels, scores, patients, card, resamples, seed)
    patient_of = {s.study_id: s.patient_id for s in samples}
    names, breast_labels, breast_values = breast_level(samples, scores, mode)
    breast_patients = [patient_of[k.split("|")[0]] for k in names]
    breast = _level(breast_labels, breast_values, breast_patients, card, resamples, seed)
    study_ids, study_labels, study_values = study_level(samples, scores, mode)
    study_patients = [patient_of[k] for k in study_ids]
    study = _level(study_labels, study_values, study_patients, card, resamples, seed)

    targets = np.array([label_index(s.label, card.labels) for s in samples])
    predicted = np.array([int(np.argmax(p.probabilities)) for p in predictions])
    hits = [p.cam_hit for p in predictions if p.cam_hit is not None]
    report: dict[str, Any] = {
        "model": card.name,
        "version": card.version,
        "data": str(data_dir),
        "dataset": kind,
        "auc": image["auc"],
        "auc_ci95": image["auc_ci95"],
        "image": image,
        "breast": breast,
        "study": study,
        "labels": list(card.labels),
        "confusion_matrix": confusion_matrix(targets, predicted, len(card.labels)).tolist(),
        "ece": expected_calibration_error(labels, scores),
        "cam_localisation": (sum(hits) / len(hits)) if hits else None,
        "cam_images": len(hits),
        "bootstrap": {"resamples": resamples, "seed": seed, "resampled": "patients"},
    }
    if plots is not None:
        from training.plots import write_plots

        report["plots"] = [
            str(p)
            for p in write_plots(
                plots,
                model_dir,
                levels={
                    "image": (labels, scores),
                    "breast": (breast_labels, breast_values),
                    "study": (study_labels, study_values),
                },
                confusion=np.array(report["confusion_matrix"]),
                class_names=card.labels,
            )
        ]
    if record:
        record_metrics(model_dir, report)
    return report


def _card_values(report: dict[str, Any]) -> dict[str, float]:
    values: dict[str, float] = {}
    for level in ("image", "breast", "study"):
        data = report[level]
        values[f"auc_{level}"] = data["auc"]
        values[f"auc_{level}_ci95_low"], values[f"auc_{level}_ci95_high"] = data["auc_ci95"]
        for name, stats in data["operating_points"].items():
            for what in ("sensitivity", "specificity"):
                values[f"{what}_{level}_{name}"] = stats[what]
                low, high = stats[f"{what}_ci95"]
                values[f"{what}_{level}_{name}_ci95_low"] = low
                values[f"{what}_{level}_{name}_ci95_high"] = high
    values["ece_image"] = report["ece"]
    if report["cam_localisation"] is not None:
        values["cam_localisation"] = report["cam_localisation"]
    return {k: round(float(v), 4) for k, v in values.items() if not math.isnan(float(v))}


def record_metrics(model_dir: Path, report: dict[str, Any]) -> ModelCard:
    """Write the report's headline numbers into the card's ``metrics`` (weights untouched)."""
    path = model_dir / CARD_FILE
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    study = report["study"]
    data["metrics"] = {
        "evaluated_on": (
            f"{report['dataset']} data at {Path(report['data']).name}: {report['image']['n']} "
            f"images, {study['n']} studies ({study['positives']} with cancer); "
            f"CI: {report['bootstrap']['resamples']} patient bootstrap resamples"
        ),
        "values": _card_values(report),
    }
    card = card_from_data(data, path)
    text = yaml.safe_dump(card.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return card


def _interval(values: Sequence[float]) -> str:
    low, high = values
    return f"[{low:.3f}, {high:.3f}]"


def summary(report: dict[str, Any]) -> str:
    """A few readable lines of the report (sensitivity and specificity with their 95 %
    Wilson intervals)."""
    lines = [
        f"model {report['model']} {report['version']} on {report['data']} ({report['dataset']})"
    ]
    for level in ("image", "breast", "study"):
        data = report[level]
        low, high = data["auc_ci95"]
        ops = ", ".join(
            f"{name}: sens {s['sensitivity']:.3f} {_interval(s['sensitivity_ci95'])} "
            f"spec {s['specificity']:.3f} {_interval(s['specificity_ci95'])}"
            for name, s in data["operating_points"].items()
        )
        lines.append(
            f"{level:>6}: n={data['n']} (+{data['positives']}) AUC {data['auc']:.4f} "
            f"[{low:.4f}, {high:.4f}]; {ops}"
        )
    lines.append(f"ECE (image) {report['ece']:.4f}")
    if report["cam_localisation"] is not None:
        lines.append(
            f"Grad-CAM peak inside the lesion: {report['cam_localisation']:.3f} "
            f"of {report['cam_images']} malignant images"
        )
    lines.append(f"confusion matrix (rows true {report['labels']}): {report['confusion_matrix']}")
    return "\n".join(lines)
