"""Dataset adapters: each public dataset read as its users have it on disk.

``load_dataset(kind, root)`` returns a list of :class:`Sample` records; ``kind`` is
one of :data:`DATASETS` (see ``docs/training.md`` for the layouts and label rules).
``detect_kind(root)`` guesses the kind from the files in ``root``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from training.datasets.sample import LABELS, Label, Sample, Shape, lesion_mask

__all__ = [
    "DATASETS",
    "LABELS",
    "Label",
    "Sample",
    "Shape",
    "detect_kind",
    "lesion_mask",
    "load_dataset",
]

DATASETS: dict[str, str] = {
    "synthetic": "training.datasets.synthetic:read_synthetic",
    "cbis-ddsm": "training.datasets.cbis_ddsm:read_cbis_ddsm",
    "cdd-cesm": "training.datasets.cdd_cesm:read_cdd_cesm",
    "vindr-mammo": "training.datasets.vindr:read_vindr",
    "rsna-2023": "training.datasets.rsna:read_rsna",
    "busi": "training.datasets.busi:read_busi",
    "folder": "training.datasets.folder:read_folder",
}
"""Dataset kind -> ``module:function`` of its adapter (imported when used)."""


def _adapter(kind: str) -> Callable[[Path], list[Sample]]:
    try:
        target = DATASETS[kind]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(DATASETS)}") from None
    module, name = target.split(":")
    function: Callable[[Path], list[Sample]] = getattr(import_module(module), name)
    return function


def load_dataset(kind: str, root: Path) -> list[Sample]:
    """Read the dataset ``kind`` at ``root``; :class:`ValueError` if it is not that layout."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: dataset folder does not exist")
    samples = _adapter(kind)(root)
    if not samples:
        raise ValueError(f"{root}: no images found for dataset kind {kind!r}")
    return samples


def detect_kind(root: Path) -> str:
    """The dataset kind whose marker files are in ``root`` (``folder`` when none is)."""
    root = Path(root)
    markers = (
        ("synthetic", "labels.csv"),
        ("cbis-ddsm", "mass_case_description_train_set.csv"),
        ("cbis-ddsm", "calc_case_description_train_set.csv"),
        ("cbis-ddsm", "csv/dicom_info.csv"),
        ("vindr-mammo", "breast-level_annotations.csv"),
        ("rsna-2023", "train.csv"),
        ("busi", "Dataset_BUSI_with_GT"),
        ("cdd-cesm", "Low energy images of CDD-CESM"),
    )
    for kind, marker in markers:
        if (root / marker).exists():
            return kind
    if any(root.glob("*/* (*)_mask.png")):
        return "busi"
    return "folder"
