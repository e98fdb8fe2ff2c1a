"""Folder-per-class datasets: the Roboflow export and generic ``class_name/`` folders.

Roboflow's "Breast cancer detection" export: ``{train,valid,test}/{0,1}/
<a>_<b>_png.rf.<hash>.jpg`` (0 normal, 1 tumour). The official split is the
top folder. Roboflow writes augmented copies of one source image with different
``.rf.<hash>`` suffixes: the part before ``.rf.`` is the grouping key, so the
copies never straddle a split.

Generic layout: ``<class>/<image>`` directly under the root (or under split
folders), where the class folder is one of ``normal``, ``benign``,
``malignant``, ``cancer``, ``tumor``/``tumour``, ``negative``/``positive``, ``0``/``1``.
Without patient ids each source image is its own group.
"""

from __future__ import annotations

from pathlib import Path

from training.datasets.sample import Label, Sample

__all__ = ["CLASS_FOLDERS", "read_folder"]

CLASS_FOLDERS: dict[str, Label] = {
    "0": "normal",
    "normal": "normal",
    "negative": "normal",
    "benign": "benign",
    "1": "malignant",
    "malignant": "malignant",
    "cancer": "malignant",
    "tumor": "malignant",
    "tumour": "malignant",
    "positive": "malignant",
}
_SPLITS = ("train", "valid", "test", "val")
_IMAGES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")


def _source_name(path: Path) -> str:
    name = path.name
    return name.split(".rf.")[0] if ".rf." in name else path.stem


def _class_folders(folder: Path, split: str | None) -> list[Sample]:
    samples = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = CLASS_FOLDERS.get(class_dir.name.lower())
        if label is None:
            known = ", ".join(CLASS_FOLDERS)
            raise ValueError(f"{class_dir}: unknown class folder (known: {known})")
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() not in _IMAGES or "_mask" in path.stem:
                continue
            source = _source_name(path)
            samples.append(
                Sample(
                    path=path,
                    patient_id=source,
                    study_id=source,
                    image_id=f"{split or ''}/{class_dir.name}/{path.name}",
                    laterality="U",
                    view="",
                    label=label,
                    split=split,
                    label_source=f"class folder {class_dir.name!r}",
                )
            )
    return samples


def read_folder(root: Path) -> list[Sample]:
    """Samples of a folder-per-class dataset, with split folders when present."""
    splits = [root / s for s in _SPLITS if (root / s).is_dir()]
    if splits:
        return [s for folder in splits for s in _class_folders(folder, folder.name)]
    return _class_folders(root, None)
