"""Evaluation plots as PNG: ROC curves, confusion matrix, calibration, training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.metrics import roc_auc, roc_curve
from training.metrics_log import read_metrics

__all__ = ["disagreement_plot", "roc_plot", "training_plot", "write_plots"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(
    folder: Path,
    model_dir: Path,
    *,
    levels: Mapping[str, tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]],
    confusion: npt.NDArray[np.int64],
    class_names: Sequence[str],
) -> list[Path]:
    """Write ``roc.png``, ``confusion.png``, ``calibration.png`` and, when the model folder
    holds ``*-metrics.csv`` files (copied there by export), ``training.png``."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    written.append(roc_plot(folder / "roc.png", levels))

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    for (r, c), value in np.ndenumerate(confusion):
        ax.text(c, r, str(value), ha="center", va="center")
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (images)")
    written.append(_save(fig, folder / "confusion.png"))

    labels, scores = levels["image"]
    bins = np.linspace(0, 1, 11)
    index = np.minimum(np.digitize(scores, bins) - 1, 9)
    mean_p = [scores[index == b].mean() for b in range(10) if (index == b).any()]
    observed = [labels[index == b].mean() for b in range(10) if (index == b).any()]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.plot(mean_p, observed, marker="o")
    ax.set(
        xlabel="predicted probability", ylabel="observed frequency", title="Calibration (images)"
    )
    written.append(_save(fig, folder / "calibration.png"))

    curves = sorted(model_dir.glob("*-metrics.csv"))
    if curves:
        written.append(training_plot(folder / "training.png", curves))
    return written


def roc_plot(
    path: Path, curves: Mapping[str, tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]]
) -> Path:
    """ROC curves (malignant vs not), one per ``name: (labels, scores)``, with their AUCs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, malignant vs not")
    ax.legend(loc="lower right")
    return _save(fig, path)


def training_plot(path: Path, curves: Sequence[Path]) -> Path:
    """Loss and validation AUC per epoch of every ``*metrics.csv`` in ``curves``, in one PNG
    (the curve's name: the file name without ``metrics.csv``)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for csv_path in curves:
        rows = read_metrics(csv_path)
        if not rows:
            continue
        name = csv_path.name.removesuffix("metrics.csv").rstrip("-") or "model"
        epochs = [int(r["epoch"]) for r in rows]
        left.plot(epochs, [float(r["train_loss"]) for r in rows], label=f"{name} train")
        if "val_loss" in rows[0]:
            left.plot(epochs, [float(r["val_loss"]) for r in rows], "--", label=f"{name} val")
        right.plot(epochs, [float(r["val_auc"]) for r in rows], label=name)
    left.set(xlabel="epoch", ylabel="loss", title="Loss")
    right.set(xlabel="epoch", ylabel="AUC", title="Validation AUC (images)")
    left.legend(fontsize="small")
    right.legend(fontsize="small")
    return _save(fig, path)


def disagreement_plot(
    path: Path, spread: npt.NDArray[np.float64], cancer: npt.NDArray[np.bool_]
) -> Path:
    """Histograms of the members' disagreement on cancer and on other images."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    top = max(float(spread.max()) if spread.size else 0.0, 1e-3)
    bins = np.linspace(0.0, top, 31)
    for mask, name in ((cancer, "cancer"), (~cancer, "other")):
        if mask.any():
            ax.hist(
                spread[mask], bins=bins, alpha=0.6, density=True, label=f"{name} (n={mask.sum()})"
            )
    ax.set(
        xlabel="members' weighted std of the malignancy probability",
        ylabel="density",
        title="Member disagreement (images)",
    )
    ax.legend()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path
