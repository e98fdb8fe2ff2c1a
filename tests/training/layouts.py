"""Tiny copies of the public datasets' on-disk layouts, written by the tests themselves.

Column names, file names and folder structure follow ``docs/training.md`` and
the datasets' own documentation; the pixel content is a small phantom.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers.images import breast_phantom, mg_dataset, write_dataset

__all__ = [
    "write_busi",
    "write_cbis_kaggle",
    "write_cbis_tcia",
    "write_cdd_cesm",
    "write_roboflow",
    "write_rsna",
    "write_vindr",
]

MASS_HEADER = [
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
CALC_HEADER = [
    "patient_id",
    "breast density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "calc type",
    "calc distribution",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def _phantom_u8(seed: int, rows: int = 64, cols: int = 48) -> np.ndarray:
    image = breast_phantom(rows, cols, spot=(rows // 2, cols // 4), spot_radius=3)
    noise = np.random.default_rng(seed).uniform(0, 0.05, image.shape)
    return np.clip((image + noise) * 255, 0, 255)


def _dicom(path: Path, rows: int = 64, cols: int = 48, **tags: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_dataset(mg_dataset(breast_phantom(rows, cols), **tags), path)


def _mask_dicom(path: Path, rows: int, cols: int, box: tuple[int, int, int, int]) -> Path:
    mask = np.zeros((rows, cols), dtype=np.float32)
    top, left, bottom, right = box
    mask[top:bottom, left:right] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_dataset(mg_dataset(mask, bits=8), path)


# ---------------------------------------------------------------- CBIS-DDSM
def _cbis_rows(shared_patient: bool = False) -> list[dict[str, str]]:
    """Patient 1: mass (malignant) + calc (benign) on LEFT CC; patient 2: benign RIGHT MLO
    with swapped crop/ROI paths; patient 3 (test set): mask missing. ``shared_patient``:
    patient 1 also has a calcification in the test set (as some CBIS-DDSM patients do), and
    patient 4 a benign mass in the training set."""
    extra = [
        {
            "file": "mass_case_description_train_set.csv",
            "kind": "Mass",
            "split": "Training",
            "patient": "P_00004",
            "side": "LEFT",
            "view": "MLO",
            "n": "1",
            "pathology": "BENIGN",
            "swap": "",
            "mask": "yes",
        },
        {
            "file": "calc_case_description_test_set.csv",
            "kind": "Calc",
            "split": "Test",
            "patient": "P_00001",
            "side": "RIGHT",
            "view": "MLO",
            "n": "1",
            "pathology": "MALIGNANT",
            "swap": "",
            "mask": "yes",
        },
    ]
    return [
        {
            "file": "mass_case_description_train_set.csv",
            "kind": "Mass",
            "split": "Training",
            "patient": "P_00001",
            "side": "LEFT",
            "view": "CC",
            "n": "1",
            "pathology": "MALIGNANT",
            "swap": "",
            "mask": "yes",
        },
        {
            "file": "calc_case_description_train_set.csv",
            "kind": "Calc",
            "split": "Training",
            "patient": "P_00001",
            "side": "LEFT",
            "view": "CC",
            "n": "1",
            "pathology": "BENIGN_WITHOUT_CALLBACK",
            "swap": "",
            "mask": "yes",
        },
        {
            "file": "mass_case_description_train_set.csv",
            "kind": "Mass",
            "split": "Training",
            "patient": "P_00002",
            "side": "RIGHT",
            "view": "MLO",
            "n": "1",
            "pathology": "BENIGN",
            "swap": "yes",
            "mask": "yes",
        },
        {
            "file": "mass_case_description_test_set.csv",
            "kind": "Mass",
            "split": "Test",
            "patient": "P_00003",
            "side": "LEFT",
            "view": "MLO",
            "n": "1",
            "pathology": "MALIGNANT",
            "swap": "",
            "mask": "",
        },
    ] + (extra if shared_patient else [])


def _cbis_case_row(r: dict[str, str], full: str, crop: str, roi: str) -> list[str]:
    if r["swap"]:
        crop, roi = roi, crop
    middle = ["OVAL", "CIRCUMSCRIBED"] if r["kind"] == "Mass" else ["PUNCTATE", "CLUSTERED"]
    return [
        r["patient"],
        "2",
        r["side"],
        r["view"],
        r["n"],
        r["kind"].lower(),
        *middle,
        "4",
        r["pathology"],
        "3",
        full,
        crop,
        roi,
    ]


def write_cbis_tcia(root: Path, *, shared_patient: bool = False) -> Path:
    """CSV paths ``<case>/<StudyUID>/<SeriesUID>/000000.dcm`` (and ``000001.dcm``)."""
    per_file: dict[str, list[list[str]]] = {}
    for i, r in enumerate(_cbis_rows(shared_patient)):
        case = f"{r['kind']}-{r['split']}_{r['patient']}_{r['side']}_{r['view']}"
        lesion = f"{case}_{r['n']}"
        full = f"{case}/1.3.6.1.4.1.9590.100.1.2.{i}1/1.3.6.1.4.1.9590.100.1.2.{i}2/000000.dcm"
        crop = f"{lesion}/1.3.6.1.4.1.9590.100.1.2.{i}3/1.3.6.1.4.1.9590.100.1.2.{i}4/000000.dcm"
        roi = f"{lesion}/1.3.6.1.4.1.9590.100.1.2.{i}3/1.3.6.1.4.1.9590.100.1.2.{i}4/000001.dcm"
        _dicom(root / full, ImageLaterality=r["side"][0])
        _dicom(root / crop, rows=16, cols=12)
        if r["mask"]:
            _mask_dicom(root / roi, 64, 48, (20, 10, 30, 20))
        header = MASS_HEADER if r["kind"] == "Mass" else CALC_HEADER
        per_file.setdefault(r["file"], [header]).append(_cbis_case_row(r, full, crop, roi))
    for name, rows in per_file.items():
        _csv(root / name, rows[0], rows[1:])
    return root


def write_cbis_kaggle(root: Path) -> Path:
    """``csv/dicom_info.csv`` + ``jpeg/<SeriesInstanceUID>/1-N.jpg``, case CSVs in ``csv/``."""
    info = []
    per_file: dict[str, list[list[str]]] = {}
    for i, r in enumerate(_cbis_rows()):
        case = f"{r['kind']}-{r['split']}_{r['patient']}_{r['side']}_{r['view']}"
        lesion = f"{case}_{r['n']}"
        full_uid, lesion_uid = f"1.3.6.1.4.1.9590.100.1.2.{i}2", f"1.3.6.1.4.1.9590.100.1.2.{i}4"
        full = f"{case}/1.3.6.1.4.1.9590.100.1.2.{i}1/{full_uid}/000000.dcm"
        crop = f"{lesion}/1.3.6.1.4.1.9590.100.1.2.{i}3/{lesion_uid}/000000.dcm"
        roi = f"{lesion}/1.3.6.1.4.1.9590.100.1.2.{i}3/{lesion_uid}/000001.dcm"
        Image.fromarray(_phantom_u8(i).astype(np.uint8)).save(_mk(root, full_uid, "1-1.jpg"))
        info.append(
            [
                f"CBIS-DDSM/jpeg/{full_uid}/1-1.jpg",
                case,
                r["side"],
                "full mammogram images",
                full_uid,
                "64",
                "48",
            ]
        )
        Image.fromarray(np.full((16, 12), 128, np.uint8)).save(_mk(root, lesion_uid, "1-1.jpg"))
        info.append(
            [
                f"CBIS-DDSM/jpeg/{lesion_uid}/1-1.jpg",
                lesion,
                r["side"],
                "cropped images",
                lesion_uid,
                "16",
                "12",
            ]
        )
        if r["mask"]:
            mask = np.zeros((64, 48), np.uint8)
            mask[20:30, 10:20] = 255
            Image.fromarray(mask).save(_mk(root, lesion_uid, "1-2.jpg"))
            info.append(
                [
                    f"CBIS-DDSM/jpeg/{lesion_uid}/1-2.jpg",
                    lesion,
                    r["side"],
                    "ROI mask images",
                    lesion_uid,
                    "64",
                    "48",
                ]
            )
        header = MASS_HEADER if r["kind"] == "Mass" else CALC_HEADER
        per_file.setdefault(r["file"], [header]).append(_cbis_case_row(r, full, crop, roi))
    _csv(
        root / "csv" / "dicom_info.csv",
        [
            "image_path",
            "PatientID",
            "Laterality",
            "SeriesDescription",
            "SeriesInstanceUID",
            "Rows",
            "Columns",
        ],
        info,
    )
    for name, rows in per_file.items():
        _csv(root / "csv" / name, rows[0], rows[1:])
    return root


def _mk(root: Path, uid: str, name: str) -> Path:
    folder = root / "jpeg" / uid
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


# ---------------------------------------------------------------- CDD-CESM
def write_cdd_cesm(root: Path, *, newer_name: bool = False) -> Path:
    """Two patients, low-energy and subtracted JPEGs, the workbook and the VIA CSV."""
    from openpyxl import Workbook

    header = [
        "Image_name",
        "Patient_ID",
        "Side",
        "Type",
        "Age",
        "Breast density (ACR)",
        "BIRADS",
        "Findings",
        "View",
        "Tags",
        "Machine",
        "Pathology Classification/ Follow up",
    ]
    rows = []
    for patient, side, label in ((1, "L", "Malignant"), (2, "R", "Normal")):
        for kind, folder, code in (
            ("DM", "Low energy images of CDD-CESM", "DM"),
            ("CESM", "Subtracted images of CDD-CESM", "CM"),
        ):
            for view in ("CC", "MLO"):
                name = f"P{patient}_{side}_{code}_{view}"
                _png(root / folder / f"{name}.jpg", _phantom_u8(patient))
                # trailing spaces in Image_name, as in the published workbook
                rows.append(
                    [name + "  ", patient, side, kind, 50, "B", 4, "mass", view, "", "GE", label]
                )
    book = Workbook()
    book.active.title = "ReadMe"
    sheet = book.create_sheet("all")
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    name = (
        "Radiology-manual-annotations.xlsx" if newer_name else "Radiology manual annotations.xlsx"
    )
    book.save(root / name)
    regions = [
        (
            "P1_L_CM_CC.jpg",
            {"name": "polygon", "all_points_x": [10, 20, 20, 10], "all_points_y": [10, 10, 20, 20]},
        ),
        ("P1_L_DM_MLO.jpg", {"name": "circle", "cx": 24, "cy": 30, "r": 5}),
        (
            "P1_L_CM_MLO.jpg",
            {"name": "ellipse", "cx": 24, "cy": 30, "rx": 6, "ry": 3, "theta": 0.5},
        ),
    ]
    _csv(
        root / "Radiology_hand_drawn_segmentations_v2.csv",
        [
            "#filename",
            "file_size",
            "file_attributes",
            "region_count",
            "region_id",
            "region_shape_attributes",
            "region_attributes",
        ],
        [[f, 1000, "{}", 1, 0, json.dumps(a), '{"label":"mass"}'] for f, a in regions],
    )
    return root


# ---------------------------------------------------------------- VinDr-Mammo
def write_vindr(root: Path, *, more_training: int = 0) -> Path:
    """Two studies (one training, one test), BI-RADS 1, 2, 4 and 5, one finding box;
    ``more_training`` further training studies (BI-RADS 1 and 4) to split validation from."""
    breast = []
    findings = []
    plan = [
        ("s1", "training", {"L": "BI-RADS 1", "R": "BI-RADS 4"}),
        ("s2", "test", {"L": "BI-RADS 2", "R": "BI-RADS 5"}),
        *(
            (f"t{k}", "training", {"L": "BI-RADS 1", "R": "BI-RADS 4"})
            for k in range(more_training)
        ),
    ]
    for study, split, birads in plan:
        for side in ("L", "R"):
            for view in ("CC", "MLO"):
                image = f"{study}-{side}-{view}"
                _dicom(root / "images" / study / f"{image}.dicom", ImageLaterality=side)
                common = [study, "ser", image, side, view, 64, 48, birads[side], "DENSITY B"]
                breast.append([*common, split])
                if birads[side] in ("BI-RADS 4", "BI-RADS 5"):
                    box: list[object] = ["['Mass']", birads[side], 5.0, 6.0, 15.0, 16.0]
                else:
                    box = ["['No Finding']", "", "", "", "", ""]
                findings.append([*common, *box, split])
    columns = [
        "study_id",
        "series_id",
        "image_id",
        "laterality",
        "view_position",
        "height",
        "width",
        "breast_birads",
        "breast_density",
    ]
    _csv(root / "breast-level_annotations.csv", [*columns, "split"], breast)
    _csv(
        root / "finding_annotations.csv",
        [
            *columns,
            "finding_categories",
            "finding_birads",
            "xmin",
            "ymin",
            "xmax",
            "ymax",
            "split",
        ],
        findings,
    )
    return root


# ---------------------------------------------------------------- RSNA 2023
def write_rsna(root: Path) -> Path:
    """Two patients; patient 10's right breast has cancer; one image stored as JPEG 2000."""
    rows = []
    image_id = 100
    for patient, cancer_side in ((10, "R"), (11, None)):
        for side in ("L", "R"):
            for view in ("CC", "MLO"):
                image_id += 1
                path = root / "train_images" / str(patient) / f"{image_id}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds = mg_dataset(breast_phantom(64, 48), laterality=side)
                write_dataset(ds, path, "j2k" if image_id == 101 else None)
                cancer = int(side == cancer_side)
                rows.append(
                    [
                        2,
                        patient,
                        image_id,
                        side,
                        view,
                        60,
                        cancer,
                        cancer,
                        cancer,
                        "",
                        0,
                        "B",
                        29,
                        "False",
                    ]
                )
    _csv(
        root / "train.csv",
        [
            "site_id",
            "patient_id",
            "image_id",
            "laterality",
            "view",
            "age",
            "cancer",
            "biopsy",
            "invasive",
            "BIRADS",
            "implant",
            "density",
            "machine_id",
            "difficult_negative_case",
        ],
        rows,
    )
    return root


# ---------------------------------------------------------------- BUSI
def write_busi(root: Path, extra: int = 0) -> Path:
    """benign (1) with two masks, benign (2) a copy of benign (1), malignant (1), normal (1);
    and ``extra`` more distinct images of each class (numbered from 10), each with a mask."""
    base = root / "Dataset_BUSI_with_GT"
    first = _phantom_u8(1)
    _png(base / "benign" / "benign (1).png", first)
    mask = np.zeros((64, 48), np.uint8)
    mask[10:20, 10:20] = 255
    _png(base / "benign" / "benign (1)_mask.png", mask)
    second = np.zeros((64, 48), np.uint8)
    second[40:50, 30:40] = 255
    _png(base / "benign" / "benign (1)_mask_1.png", second)
    _png(base / "benign" / "benign (2).png", first)  # a duplicate
    _png(base / "benign" / "benign (2)_mask.png", mask)
    _png(base / "malignant" / "malignant (1).png", _phantom_u8(2))
    _png(base / "malignant" / "malignant (1)_mask.png", mask)
    _png(base / "normal" / "normal (1).png", _phantom_u8(3))
    _png(base / "normal" / "normal (1)_mask.png", np.zeros((64, 48), np.uint8))
    for n in range(extra):
        for c, label in enumerate(("benign", "malignant", "normal")):
            name = f"{label} ({10 + n})"
            _png(base / label / f"{name}.png", _phantom_u8(100 + 3 * n + c))
            _png(base / label / f"{name}_mask.png", mask if label != "normal" else mask * 0)
    return root


# ---------------------------------------------------------------- Roboflow
def write_roboflow(root: Path) -> Path:
    """``{train,valid,test}/{0,1}/<a>_<b>_png.rf.<hash>.jpg``; two copies of one source."""
    names = {
        ("train", "0"): ["12_345_png.rf.aaa111.jpg", "12_345_png.rf.bbb222.jpg"],
        ("train", "1"): ["20_100_png.rf.ccc333.jpg"],
        ("valid", "0"): ["30_1_png.rf.ddd444.jpg"],
        ("valid", "1"): ["31_2_png.rf.eee555.jpg"],
        ("test", "0"): ["40_1_png.rf.fff666.jpg"],
        ("test", "1"): ["41_2_png.rf.ggg777.jpg"],
    }
    for (split, label), files in names.items():
        for i, name in enumerate(files):
            _png(root / split / label / name, _phantom_u8(i))
    return root
