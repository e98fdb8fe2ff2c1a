"""CBIS-DDSM (TCIA), in its DICOM layout or the Kaggle JPEG re-encoding.

Case descriptions: ``{mass,calc}_case_description_{train,test}_set.csv``, one row
per abnormality, in the root (TCIA) or in ``csv/`` (Kaggle). The mass files say
``breast_density``, the calc files ``breast density``; both have ``patient_id``,
``left or right breast``, ``image view``, ``pathology`` and the three paths
``image file path``, ``cropped image file path``, ``ROI mask file path``.

* TCIA layout: ``<case folder>/<StudyUID>/<SeriesUID>/000000.dcm`` as the CSV
  says; if the file is not there (NBIA downloads rename the inner folders),
  the first ``.dcm`` under the case folder is used.
* Kaggle layout: ``csv/dicom_info.csv`` maps each series to
  ``CBIS-DDSM/jpeg/<SeriesInstanceUID>/1-N.jpg`` with its ``SeriesDescription``;
  a CSV path's third component is that series UID.

The cropped-image and ROI-mask paths are swapped in some rows: the mask is
whichever of the two is as large as the full mammogram (the cropped image is
a small patch), or in the Kaggle layout the one described as ``ROI mask
images``. Missing masks are left out. An image's label is the worst of its
abnormality rows (MALIGNANT > BENIGN, BENIGN_WITHOUT_CALLBACK); CBIS has no
normal images. The official split is the file's ``train``/``test``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from training.datasets._util import read_csv, require_columns
from training.datasets.sample import Label, Sample

__all__ = ["CASE_FILES", "read_cbis_ddsm"]

CASE_FILES = tuple(
    f"{kind}_case_description_{split}_set.csv"
    for kind in ("mass", "calc")
    for split in ("train", "test")
)
_COLUMNS = (
    "patient_id",
    "left or right breast",
    "image view",
    "pathology",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)


@dataclass
class _Image:
    path: Path
    patient_id: str
    laterality: str
    view: str
    split: str
    label: Label = "benign"
    masks: list[Path] = field(default_factory=list)
    types: list[str] = field(default_factory=list)


def _clean(path_text: str) -> str:
    return path_text.strip().strip('"').replace("\\", "/")


class _TciaFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def image(self, text: str) -> Path | None:
        relative = _clean(text)
        for base in (self.root, self.root / "CBIS-DDSM"):
            if (base / relative).is_file():
                return base / relative
        case = relative.split("/")[0]
        for base in (self.root, self.root / "CBIS-DDSM"):
            if (base / case).is_dir():
                found = sorted((base / case).rglob("*.dcm"))
                if found:
                    return found[0]
        return None

    def mask(self, texts: list[str], full: Path) -> Path | None:
        import pydicom

        def size(path: Path) -> tuple[int, int]:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)

        target = size(full)
        candidates: list[Path] = []
        for text in texts:
            relative = _clean(text)
            for base in (self.root, self.root / "CBIS-DDSM"):
                if (base / relative).is_file():
                    candidates.append(base / relative)
            # a lesion folder holds both the crop and the mask: look at all of its files
            case = relative.split("/")[0]
            if (self.root / case).is_dir():
                candidates.extend(sorted((self.root / case).rglob("*.dcm")))
        for path in dict.fromkeys(candidates):
            if size(path) == target:
                return path
        return None


class _KaggleFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        info_path = root / "csv" / "dicom_info.csv"
        rows = read_csv(info_path)
        require_columns(info_path, rows, ("image_path", "SeriesDescription"))
        self.series: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            parts = _clean(row["image_path"]).split("/")
            if len(parts) >= 3:
                self.series.setdefault(parts[2], []).append(row)

    def _local(self, image_path: str) -> Path:
        parts = _clean(image_path).split("/")
        # "CBIS-DDSM/jpeg/<uid>/1-1.jpg" -> "<root>/jpeg/<uid>/1-1.jpg"
        relative = "/".join(parts[1:]) if parts[0] == "CBIS-DDSM" else "/".join(parts)
        return self.root / relative

    def _find(self, texts: list[str], description: str) -> Path | None:
        for text in texts:
            parts = _clean(text).split("/")
            if len(parts) < 3:
                continue
            for row in self.series.get(parts[2], []):
                if row["SeriesDescription"].strip().lower() == description:
                    path = self._local(row["image_path"])
                    if path.is_file():
                        return path
        return None

    def image(self, text: str) -> Path | None:
        return self._find([text], "full mammogram images")

    def mask(self, texts: list[str], full: Path) -> Path | None:
        return self._find(texts, "roi mask images")


def _case_rows(root: Path) -> list[tuple[str, dict[str, str]]]:
    rows: list[tuple[str, dict[str, str]]] = []
    for name in CASE_FILES:
        for folder in (root, root / "csv"):
            path = folder / name
            if path.exists():
                found = read_csv(path)
                require_columns(path, found, _COLUMNS)
                split = "train" if "_train_" in name else "test"
                rows.extend((split, row) for row in found)
                break
    if not rows:
        raise ValueError(f"{root}: no CBIS-DDSM case description CSV ({', '.join(CASE_FILES)})")
    return rows


def read_cbis_ddsm(root: Path) -> list[Sample]:
    """One sample per mammogram, label the worst pathology of its abnormalities."""
    files: _TciaFiles | _KaggleFiles = (
        _KaggleFiles(root) if (root / "csv" / "dicom_info.csv").exists() else _TciaFiles(root)
    )
    images: dict[str, _Image] = {}
    for split, row in _case_rows(root):
        key = _clean(row["image file path"]).split("/")[0]
        image = images.get(key)
        if image is None:
            path = files.image(row["image file path"])
            if path is None:
                continue
            side = row["left or right breast"].upper()
            image = images[key] = _Image(
                path=path,
                patient_id=row["patient_id"],
                laterality="L" if side.startswith("L") else "R",
                view=row["image view"].upper(),
                split=split,
            )
        if row["pathology"].upper() == "MALIGNANT":
            image.label = "malignant"
        kind = "calcification" if "calc" in row.get("abnormality type", "").lower() else "mass"
        if kind not in image.types:
            image.types.append(kind)
        mask = files.mask([row["ROI mask file path"], row["cropped image file path"]], image.path)
        if mask is not None and mask not in image.masks:
            image.masks.append(mask)
    return [
        Sample(
            path=image.path,
            patient_id=image.patient_id,
            study_id=image.patient_id,
            image_id=key,
            laterality=image.laterality,
            view=image.view,
            label=image.label,
            split=image.split,
            mask_paths=tuple(image.masks),
            lesion_type="+".join(sorted(image.types)),
        )
        for key, image in images.items()
    ]
