"""Evaluate a model folder on labelled images, computing what the node would compute.

DICOM datasets run through :class:`node.inference.engine.InferenceEngine` itself
(preprocessing, TTA, temperatures, weights, breast and study aggregation,
Grad-CAM); image-file datasets (BUSI, folders, the Kaggle CBIS JPEGs) through
the same preprocessing, registry and ensemble functions.

Reported per image, per breast and per study: AUC for malignant vs not with a
seeded bootstrap 95 % CI (resampling patients), the probabilistic F1, and
sensitivity and specificity with Wilson 95 % intervals at each of the card's
operating points. Per image also: each member's AUC on the same images (with
its CI), the members' disagreement (the node's uncertainty output: the weighted
standard deviation of their malignancy probabilities) on cancers and on the
other images, and on the images the default operating point gets wrong and
right, the confusion matrix, the expected calibration error and, where
lesion masks exist, the Grad-CAM localisation per lesion type with Wilson
intervals (:mod:`training.localisation` says the criterion of each type).

Which images: a folder (all of it, or its official ``train``/``test`` part), or
a training run's own ``val``/``test`` part found again from its ``run.json``.
"""

from __future__ import annotations

import json
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
from node.inference.ensemble import calibrated_probabilities, combine_members, tta_views
from node.models.card import CARD_FILE, ModelCard, card_from_data, read_card
from node.models.folder import load_model_folder
from training.aggregate import breast_level, study_level
from training.data import label_index, preprocess_sample
from training.datasets import Sample, lesion_mask
from training.localisation import cam_hit, criterion, is_calcification
from training.loop import Normaliser
from training.metrics import (
    bootstrap_auc,
    confusion_matrix,
    expected_calibration_error,
    probabilistic_f1,
    roc_auc,
    stats_at_threshold,
    wilson_interval,
)
from training.predict import view_logits
from training.progress import progress_bar

__all__ = [
    "ImagePrediction",
    "cam_hit",
    "evaluate_model",
    "evaluate_samples",
    "predict_samples",
    "summary",
    "write_report",
]

_STUDIES_PER_CALL = 8
_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class ImagePrediction:
    """The model's output for one sample."""

    probabilities: npt.NDArray[np.float64]  # (C,) over the card's labels
    members: npt.NDArray[np.float64]  # (M,) each member's calibrated malignancy probability
    uncertainty: float  # the members' weighted standard deviation (the node's output)
    cam_hit: bool | None  # map peak meets the lesion type's criterion; None without CAM/mask


def _spacing_mm(sample: Sample) -> float | None:
    """Pixel spacing of a DICOM sample (mean of rows and columns), else ``None``."""
    if not sample.is_dicom:
        return None
    import pydicom

    ds = pydicom.dcmread(sample.path, stop_before_pixels=True)
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value:
            return float(np.mean([float(v) for v in value]))
    return None


def _hit(sample: Sample, heatmap: npt.NDArray[np.float32] | None, geometry: Any) -> bool | None:
    if heatmap is None or not (sample.malignant and sample.has_lesion_outline):
        return None
    rows, cols = geometry.original_shape
    mask = lesion_mask(sample, rows, cols)
    if mask is None:
        return None
    spacing = _spacing_mm(sample) if is_calcification(sample.lesion_type) else None
    return cam_hit(heatmap, geometry, mask, sample.lesion_type, spacing)


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
    names = [m.name for m in card.ensemble.members]
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
                probs = np.array([image.class_probabilities[label] for label in card.labels])
                members = np.array([image.member_probabilities[n] for n in names])
                hit = _hit(samples[index], image.heatmap, image.geometry)
                out[index] = ImagePrediction(probs, members, image.uncertainty, hit)
    return [out[i] for i in range(len(samples))]


def _array_predictions(
    model_dir: Path, card: ModelCard, samples: Sequence[Sample], progress: bool
) -> list[ImagePrediction]:
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
    stacked = np.stack(member_probs)
    probs, spread = combine_members(stacked, weights, card.malignant_index)
    malignant = stacked[:, :, card.malignant_index]
    return [
        ImagePrediction(p, malignant[:, i], float(spread[i]), None) for i, p in enumerate(probs)
    ]


def predict_samples(
    model_dir: Path, samples: Sequence[Sample], *, progress: bool = False
) -> list[ImagePrediction]:
    """The model's prediction for every sample (the engine for DICOM, else the same arithmetic)."""
    card = read_card(Path(model_dir))
    if all(s.is_dicom for s in samples):
        return _engine_predictions(Path(model_dir), card, samples, progress)
    return _array_predictions(Path(model_dir), card, samples, progress)


def _stats(labels: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64], threshold: float) -> Any:
    return stats_at_threshold(labels, scores, threshold).to_dict()


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
        "pf1": probabilistic_f1(labels, scores),
        "operating_points": {
            p.name: _stats(labels, scores, p.threshold) for p in card.operating_points
        },
    }


def _distribution(values: npt.NDArray[np.float64]) -> dict[str, Any]:
    if values.size == 0:
        return {"n": 0}
    quantiles = np.quantile(values, _QUANTILES)
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        **{f"p{round(q * 100)}": float(v) for q, v in zip(_QUANTILES, quantiles, strict=True)},
        "max": float(values.max()),
    }


def _localisation(samples: Sequence[Sample], predictions: Sequence[ImagePrediction]) -> Any:
    by_type: dict[str, list[bool]] = {}
    for sample, prediction in zip(samples, predictions, strict=True):
        if prediction.cam_hit is not None:
            by_type.setdefault(sample.lesion_type or "lesion", []).append(prediction.cam_hit)
    out = {}
    for kind, hits in sorted(by_type.items()):
        low, high = wilson_interval(sum(hits), len(hits))
        out[kind] = {
            "criterion": criterion(kind),
            "images": len(hits),
            "hits": int(sum(hits)),
            "fraction": sum(hits) / len(hits),
            "ci95": [low, high],
        }
    return out


def evaluate_samples(
    model_dir: Path,
    samples: Sequence[Sample],
    *,
    data: str,
    resamples: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """The report (JSON-ready) of ``model_dir`` on ``samples``; ``data`` names them."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
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

    members = {}
    member_scores = np.array([p.members for p in predictions])
    for m, spec in enumerate(card.ensemble.members):
        values = member_scores[:, m]
        low, high = bootstrap_auc(labels, values, groups=patients, resamples=resamples, seed=seed)
        members[spec.name] = {
            "architecture": spec.architecture,
            "weight": spec.weight,
            "auc": roc_auc(labels, values),
            "auc_ci95": [low, high],
        }
    spread = np.array([p.uncertainty for p in predictions])
    called = scores >= card.operating_point().threshold
    wrong = called != labels
    targets = np.array([label_index(s.label, card.labels) for s in samples])
    predicted = np.array([int(np.argmax(p.probabilities)) for p in predictions])
    localisation = _localisation(samples, predictions)
    hits = [p.cam_hit for p in predictions if p.cam_hit is not None]
    kind = sorted({s.label_source for s in samples})
    return {
        "model": card.name,
        "version": card.version,
        "data": data,
        "label_sources": kind,
        "auc": image["auc"],
        "auc_ci95": image["auc_ci95"],
        "image": image,
        "breast": breast,
        "study": study,
        "members": members,
        "disagreement": {
            "what": "weighted standard deviation of the members' malignancy probabilities",
            "cancer": _distribution(spread[labels]),
            "other": _distribution(spread[~labels]),
            "wrong": _distribution(spread[wrong]),
            "right": _distribution(spread[~wrong]),
            "called_at": card.operating_point().name,
        },
        "labels": list(card.labels),
        "confusion_matrix": confusion_matrix(targets, predicted, len(card.labels)).tolist(),
        "ece": expected_calibration_error(labels, scores),
        "cam_localisation": (sum(hits) / len(hits)) if hits else None,
        "cam_images": len(hits),
        "cam_by_type": localisation,
        "bootstrap": {"resamples": resamples, "seed": seed, "resampled": "patients"},
        "_arrays": {
            "labels": labels,
            "scores": scores,
            "breast": (breast_labels, breast_values),
            "study": (study_labels, study_values),
            "spread": spread,
        },
    }


def evaluate_model(
    model_dir: Path,
    samples: Sequence[Sample],
    *,
    data: str,
    plots: Path | None = None,
    out: Path | None = None,
    record: bool = False,
    resamples: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model_dir`` on ``samples``; with ``out`` write ``report.json``,
    ``summary.txt`` and the plots there (``plots``: the plots only); ``record``
    writes the headline figures into the card. Returns the report."""
    report = evaluate_samples(
        model_dir, samples, data=data, resamples=resamples, seed=seed, progress=progress
    )
    arrays = report.pop("_arrays")
    folder = out if out is not None else plots
    if folder is not None:
        from training.plots import disagreement_plot, write_plots

        card = read_card(Path(model_dir))
        written = write_plots(
            folder,
            Path(model_dir),
            levels={
                "image": (arrays["labels"], arrays["scores"]),
                "breast": arrays["breast"],
                "study": arrays["study"],
            },
            confusion=np.array(report["confusion_matrix"]),
            class_names=card.labels,
        )
        written.append(
            disagreement_plot(folder / "disagreement.png", arrays["spread"], arrays["labels"])
        )
        report["plots"] = [str(p) for p in written]
    if out is not None:
        write_report(out, report)
    if record:
        record_metrics(Path(model_dir), report)
    return report


def write_report(folder: Path, report: dict[str, Any]) -> None:
    """``report.json`` and ``summary.txt`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (folder / "summary.txt").write_text(summary(report) + "\n", encoding="utf-8")


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
    for name, member in report["members"].items():
        values[f"auc_image_member_{name}"] = member["auc"]
    for group in ("cancer", "other", "wrong", "right"):
        spread = report["disagreement"][group]
        if spread.get("n"):
            values[f"disagreement_{group}_median"] = spread["p50"]
            values[f"disagreement_{group}_p90"] = spread["p90"]
    if report["cam_localisation"] is not None:
        values["cam_localisation"] = report["cam_localisation"]
    for kind, cam in report["cam_by_type"].items():
        values[f"cam_{kind}"] = cam["fraction"]
        values[f"cam_{kind}_ci95_low"], values[f"cam_{kind}_ci95_high"] = cam["ci95"]
    return {k: round(float(v), 4) for k, v in values.items() if not math.isnan(float(v))}


def record_metrics(model_dir: Path, report: dict[str, Any]) -> ModelCard:
    """Write the report's headline numbers into the card's ``metrics`` (weights untouched)."""
    path = model_dir / CARD_FILE
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    study = report["study"]
    data["metrics"] = {
        "evaluated_on": (
            f"{report['data']}: {report['image']['n']} images, {study['n']} studies "
            f"({study['positives']} with cancer); AUC CI: {report['bootstrap']['resamples']} "
            "patient bootstrap resamples; sensitivity/specificity CI: Wilson"
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
    """Readable lines of the report."""
    lines = [f"model {report['model']} {report['version']} on {report['data']}"]
    for level in ("image", "breast", "study"):
        data = report[level]
        ops = "; ".join(
            f"{name}: sens {s['sensitivity']:.3f} {_interval(s['sensitivity_ci95'])} "
            f"spec {s['specificity']:.3f} {_interval(s['specificity_ci95'])}"
            for name, s in data["operating_points"].items()
        )
        lines.append(
            f"{level:>6}: n={data['n']} (+{data['positives']}) AUC {data['auc']:.4f} "
            f"{_interval(data['auc_ci95'])}, pF1 {data['pf1']:.3f}; {ops}"
        )
    for name, member in report["members"].items():
        lines.append(
            f"member {name} (w={member['weight']:.3f}): image AUC {member['auc']:.4f} "
            f"{_interval(member['auc_ci95'])}"
        )
    spread = report["disagreement"]
    for group, what in (
        ("cancer", "cancer images"),
        ("other", "other images"),
        ("wrong", f"images the default operating point ({spread['called_at']}) gets wrong"),
        ("right", "images it gets right"),
    ):
        d = spread[group]
        if d.get("n"):
            lines.append(
                f"disagreement on {what} (n={d['n']}): mean {d['mean']:.4f}, median "
                f"{d['p50']:.4f}, p10-p90 {d['p10']:.4f}-{d['p90']:.4f}, max {d['max']:.4f}"
            )
    lines.append(f"ECE (image) {report['ece']:.4f}")
    for kind, cam in report["cam_by_type"].items():
        lines.append(
            f"Grad-CAM {kind}: {cam['hits']}/{cam['images']} = {cam['fraction']:.3f} "
            f"{_interval(cam['ci95'])} ({cam['criterion']})"
        )
    lines.append(f"confusion matrix (rows true {report['labels']}): {report['confusion_matrix']}")
    return "\n".join(lines)
