"""``breast-train cv``: k patient-grouped folds, one member each, calibrated out of fold.

For every architecture (the config's, or several) and every fold ``k`` of
``data.folds``: train on the other folds, validate on fold ``k`` (run folder
``<output>/<architecture>-fold<k>``; finished folds are kept, so an interrupted
``cv`` continues with ``--resume``; ``--fold K`` trains one fold only, so that
folds can run side by side). Fold ``k`` trains with seed ``seed + k`` (its own
initialisation, augmentation and patches, for members that differ) on the one
split of ``data.split_seed`` (default: ``seed``). The dataset's official test
images (or ``data.test_fraction`` of the patients) are kept out of every fold.

Then every member predicts its own validation fold: these out-of-fold (OOF)
predictions cover each training patient exactly once per architecture and were
made by a model that never saw that patient. On them:

* each member's temperature (on its own fold);
* the weights of the architectures (members of one architecture share theirs
  equally; with one architecture all weigh the same);
* the operating thresholds, on the OOF study scores.

The k-member (or k x architectures) ensemble is written as a model folder, and
the cv folder gets ``oof.csv`` (one row per image: fold, label, each
architecture's OOF probability and the ensemble's), ``cv.json`` (per-fold and
OOF AUCs with bootstrap intervals) and ``oof-roc.png``. The thresholds come from
single members' OOF scores; the deployed mean of k members is usually a little
better calibrated, so check them on the test part (``breast-train evaluate
--run <output>/<architecture>-fold0 --split test``).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from node.models.card import ModelCard
from training.config import TrainConfig
from training.datasets import Sample
from training.export import ExportOptions, MemberFit, export_fitted, fit_member, load_run
from training.metrics import bootstrap_auc, roc_auc
from training.selection import make_parts
from training.train import train

__all__ = ["CvResult", "run_cv", "train_folds"]


@dataclass(frozen=True)
class CvResult:
    """The outcome of :func:`run_cv`."""

    folder: Path
    card: ModelCard
    oof_auc: float
    fold_aucs: dict[str, float]


def _fold_config(config: TrainConfig, architecture: str, fold: int) -> TrainConfig:
    data = config.model_dump(mode="json")
    split_seed = config.data.split_seed if config.data.split_seed is not None else config.seed
    data["data"] = {**data["data"], "split": "kfold", "fold": fold, "split_seed": split_seed}
    data["seed"] = config.seed + fold
    data["model"] = {**data["model"], "architecture": architecture}
    data["output"] = str(config.output / f"{architecture}-fold{fold}")
    from training.config import config_from_data

    return config_from_data(data)


def _key(sample: Sample) -> str:
    return f"{sample.image_id}|{sample.path}"


def _finished(fold_config: TrainConfig) -> bool:
    """Whether the fold's run is finished with this very config (else it is an error)."""
    path = fold_config.output / "run.json"
    if not path.exists():
        return False
    recorded = json.loads(path.read_text(encoding="utf-8"))["config"]
    if recorded != fold_config.model_dump(mode="json"):
        raise ValueError(
            f"{fold_config.output}: finished with another config than this cv asks for; "
            "remove it or run cv without --resume in a new output folder"
        )
    return True


def train_folds(
    config: TrainConfig,
    *,
    architectures: Sequence[str] = (),
    folds: Sequence[int] | None = None,
    resume: bool = False,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict[tuple[str, int], TrainConfig]:
    """Train the given folds (default: all) of every architecture; returns every fold's config.

    With ``resume`` a fold whose run finished with the same config is kept, and an
    interrupted one continues from its ``last.pt``. Folds can be trained by separate
    processes side by side (``breast-train cv --fold K``) and collected afterwards.
    """
    tell = say or (lambda text: print(text, file=sys.stderr, flush=True))
    archs = list(architectures) or [config.model.architecture]
    count = config.data.folds
    config.output.mkdir(parents=True, exist_ok=True)
    fold_configs = {(a, k): _fold_config(config, a, k) for a in archs for k in range(count)}
    wanted = set(range(count)) if folds is None else set(folds)
    for (arch, k), fold_config in fold_configs.items():
        if k not in wanted:
            continue
        if resume and _finished(fold_config):
            tell(f"{arch} fold {k}: finished earlier, kept")
            continue
        tell(f"{arch} fold {k + 1}/{count}: training")
        train(fold_config, resume=resume, progress=progress)
    return fold_configs


def run_cv(
    config: TrainConfig,
    options: ExportOptions,
    *,
    architectures: Sequence[str] = (),
    resume: bool = False,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> CvResult:
    """Train every fold of every architecture, calibrate out of fold, export the ensemble."""
    tell = say or (lambda text: print(text, file=sys.stderr, flush=True))
    archs = list(architectures) or [config.model.architecture]
    folds = config.data.folds
    folder = config.output
    fold_configs = train_folds(
        config, architectures=archs, resume=resume, progress=progress, say=tell
    )

    # the out-of-fold images: every sample outside the test part, in a fixed order
    parts = {k: make_parts(fold_configs[(archs[0], k)].data, config.seed) for k in range(folds)}
    # (each fold config carries the shared data.split_seed, so every fold sees one split)
    samples: list[Sample] = []
    fold_of: dict[str, int] = {}
    for k in range(folds):
        for sample in parts[k].val:
            fold_of[_key(sample)] = k
            samples.append(sample)
    position = {_key(s): i for i, s in enumerate(samples)}
    fits: list[MemberFit] = []
    fold_aucs: dict[str, float] = {}
    for arch in archs:
        for k in range(folds):
            run = load_run(fold_configs[(arch, k)].output, output_stride=options.output_stride)
            indices = [position[_key(s)] for s in parts[k].val]
            fit = fit_member(run, samples, indices, options.tta, progress=options.progress)
            fits.append(fit)
            fold_aucs[run.name] = fit.val_auc
            tell(f"{run.name}: out-of-fold AUC {fit.val_auc:.4f}, T {fit.temperature:.3f}")
    card = export_fitted(
        options,
        fits,
        samples,
        evaluated_on=(
            f"out-of-fold predictions of {folds} patient-grouped folds: {len(samples)} images, "
            f"{len({s.study_id for s in samples})} studies"
        ),
    )
    oof_auc = _write_outputs(folder, options, samples, fold_of, fits, archs, card, fold_aucs)
    return CvResult(folder, card, oof_auc, fold_aucs)


def _write_outputs(
    folder: Path,
    options: ExportOptions,
    samples: Sequence[Sample],
    fold_of: dict[str, int],
    fits: Sequence[MemberFit],
    archs: Sequence[str],
    card: ModelCard,
    fold_aucs: dict[str, float],
) -> float:
    malignant = card.malignant_index
    per_arch = np.zeros((len(archs), len(samples)))
    for fit in fits:
        a = archs.index(fit.run.architecture)
        per_arch[a, list(fit.indices)] = fit.probabilities[:, malignant]
    weight_of = {m.architecture: 0.0 for m in card.ensemble.members}
    total = sum(m.weight for m in card.ensemble.members)
    for member in card.ensemble.members:
        weight_of[member.architecture] += member.weight / total
    ensemble = sum(weight_of[a] * per_arch[i] for i, a in enumerate(archs))
    labels = np.array([s.malignant for s in samples])
    patients = [s.patient_id for s in samples]
    with (folder / "oof.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["image_id", "patient_id", "fold", "label", *archs, "ensemble"])
        for i, sample in enumerate(samples):
            writer.writerow(
                [
                    sample.image_id,
                    sample.patient_id,
                    fold_of[_key(sample)],
                    sample.label,
                    *(f"{per_arch[a, i]:.6f}" for a in range(len(archs))),
                    f"{ensemble[i]:.6f}",
                ]
            )
    auc = roc_auc(labels, ensemble)
    low, high = bootstrap_auc(labels, ensemble, groups=patients, seed=options.seed)
    summary: dict[str, Any] = {
        "model": str(options.out),
        "folds": len({fold_of[_key(s)] for s in samples}),
        "architectures": list(archs),
        "images": len(samples),
        "oof_auc_image": auc,
        "oof_auc_image_ci95": [low, high],
        "fold_auc_image": fold_aucs,
        "weighting": card.ensemble.weighting,
        "operating_points": [p.model_dump() for p in card.operating_points],
    }
    (folder / "cv.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    from training.plots import roc_plot

    roc_plot(folder / "oof-roc.png", {"out-of-fold ensemble": (labels, ensemble)})
    return auc
