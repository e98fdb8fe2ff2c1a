"""Each adapter on a tiny copy of its dataset's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training import layouts
from training.datasets import DATASETS, detect_kind, lesion_mask, load_dataset
from training.datasets.vindr import BIRADS_LABELS


def _by_id(samples):  # type: ignore[no-untyped-def]
    return {s.image_id: s for s in samples}


def _mask(sample):  # type: ignore[no-untyped-def]
    from PIL import Image

    if sample.is_dicom:
        import pydicom

        ds = pydicom.dcmread(sample.path, stop_before_pixels=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
    else:
        with Image.open(sample.path) as img:
            cols, rows = img.size
    return lesion_mask(sample, rows, cols)


@pytest.mark.parametrize("layout", ["tcia", "kaggle"])
def test_cbis_ddsm(tmp_path: Path, layout: str) -> None:
    root = (layouts.write_cbis_tcia if layout == "tcia" else layouts.write_cbis_kaggle)(tmp_path)
    assert detect_kind(root) == "cbis-ddsm"
    samples = _by_id(load_dataset("cbis-ddsm", root))
    # the mass and the calc file each list their own copy of patient 1's LEFT CC image
    assert set(samples) == {
        "Mass-Training_P_00001_LEFT_CC",
        "Calc-Training_P_00001_LEFT_CC",
        "Mass-Training_P_00002_RIGHT_MLO",
        "Mass-Test_P_00003_LEFT_MLO",
    }
    mass = samples["Mass-Training_P_00001_LEFT_CC"]
    assert (mass.label, mass.laterality, mass.view, mass.split) == ("malignant", "L", "CC", "train")
    assert samples["Calc-Training_P_00001_LEFT_CC"].label == "benign"
    assert samples["Calc-Training_P_00001_LEFT_CC"].patient_id == "P_00001"
    # swapped crop/ROI columns: the full-size mask is still found, not the small crop
    swapped = samples["Mass-Training_P_00002_RIGHT_MLO"]
    assert len(swapped.mask_paths) == 1
    mask = _mask(swapped)
    assert mask is not None and mask.shape == (64, 48)
    assert mask[25, 15] and not mask[5, 5] and mask.sum() == 100
    missing = samples["Mass-Test_P_00003_LEFT_MLO"]
    assert missing.mask_paths == () and missing.split == "test"


@pytest.mark.parametrize("newer_name", [False, True])
def test_cdd_cesm(tmp_path: Path, newer_name: bool) -> None:
    root = layouts.write_cdd_cesm(tmp_path, newer_name=newer_name)
    assert detect_kind(root) == "cdd-cesm"
    samples = _by_id(load_dataset("cdd-cesm", root))
    assert len(samples) == 8  # 2 patients x (low energy, subtracted) x (CC, MLO)
    low = samples["P1_L_DM_CC"]  # trailing spaces stripped from Image_name
    assert low.path.parent.name == "Low energy images of CDD-CESM"
    assert samples["P1_L_CM_CC"].path.parent.name == "Subtracted images of CDD-CESM"
    assert (low.label, low.patient_id, low.laterality, low.view) == ("malignant", "1", "L", "CC")
    assert samples["P2_R_DM_MLO"].label == "normal"
    # the polygon drawn on the subtracted CC applies to the co-registered low-energy CC
    kinds = {s.kind for s in low.shapes}
    assert kinds == {"polygon"}
    mask = _mask(low)
    assert mask is not None and mask[15, 15] and not mask[40, 40]
    mlo = samples["P1_L_CM_MLO"]
    assert {s.kind for s in mlo.shapes} == {"circle", "ellipse"}
    assert _mask(mlo)[30, 24]  # type: ignore[index]
    assert samples["P2_R_DM_CC"].shapes == ()


def test_vindr_birads_labels_and_split(tmp_path: Path) -> None:
    root = layouts.write_vindr(tmp_path)
    assert detect_kind(root) == "vindr-mammo"
    samples = _by_id(load_dataset("vindr-mammo", root))
    assert len(samples) == 8
    assert samples["s1-L-CC"].label == "normal"
    assert samples["s1-R-MLO"].label == "malignant"
    assert samples["s2-L-CC"].label == "benign"
    assert samples["s1-L-CC"].split == "train" and samples["s2-R-CC"].split == "test"
    assert samples["s1-R-CC"].boxes == ((5.0, 6.0, 15.0, 16.0),)
    assert samples["s1-L-CC"].boxes == ()
    assert samples["s1-L-CC"].label_source == "birads"
    assert BIRADS_LABELS["3"] == "benign" and BIRADS_LABELS["4"] == "malignant"


def test_rsna_reads_labels_and_decodes_jpeg2000(tmp_path: Path) -> None:
    from node.imaging.preprocess import PreprocessOptions
    from training.data import preprocess_sample

    root = layouts.write_rsna(tmp_path)
    assert detect_kind(root) == "rsna-2023"
    samples = _by_id(load_dataset("rsna-2023", root))
    assert len(samples) == 8
    cancer = [s for s in samples.values() if s.label == "malignant"]
    assert {(s.patient_id, s.laterality) for s in cancer} == {("10", "R")}
    assert all(s.label == "normal" for s in samples.values() if s.patient_id == "11")
    j2k = preprocess_sample(samples["101"], PreprocessOptions(height=64, width=32))
    assert j2k.image.shape == (64, 32) and j2k.image.max() > 0.3


def test_busi_merges_masks_and_drops_duplicates(tmp_path: Path) -> None:
    root = layouts.write_busi(tmp_path)
    assert detect_kind(root) == "busi"
    samples = _by_id(load_dataset("busi", root))
    assert set(samples) == {"benign/benign (1)", "malignant/malignant (1)", "normal/normal (1)"}
    benign = samples["benign/benign (1)"]
    assert benign.modality == "US" and len(benign.mask_paths) == 2
    mask = _mask(benign)
    assert mask is not None and mask[15, 15] and mask[45, 35] and mask.sum() == 200
    assert _mask(samples["normal/normal (1)"]).sum() == 0  # type: ignore[union-attr]


def test_busi_drops_copies_filed_under_two_classes(tmp_path: Path) -> None:
    import shutil

    root = layouts.write_busi(tmp_path)
    base = root / "Dataset_BUSI_with_GT"
    shutil.copy(base / "normal" / "normal (1).png", base / "malignant" / "malignant (2).png")
    ids = {s.image_id for s in load_dataset("busi", root)}
    assert "normal/normal (1)" not in ids and "malignant/malignant (2)" not in ids


def test_roboflow_folders(tmp_path: Path) -> None:
    root = layouts.write_roboflow(tmp_path)
    assert detect_kind(root) == "folder"
    samples = load_dataset("folder", root)
    assert len(samples) == 7
    assert {s.split for s in samples} == {"train", "valid", "test"}
    assert sum(s.label == "malignant" for s in samples) == 3
    copies = [s for s in samples if s.path.name.startswith("12_345")]
    assert len({s.patient_id for s in copies}) == 1  # augmented copies share a group


def test_generic_class_folders(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("benign", "malignant", "normal"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name / "a.png")
    samples = load_dataset("folder", tmp_path)
    assert sorted(s.label for s in samples) == ["benign", "malignant", "normal"]
    assert all(s.split is None for s in samples)
    (tmp_path / "weird").mkdir()
    with pytest.raises(ValueError, match="unknown class folder"):
        load_dataset("folder", tmp_path)


def test_synthetic(synthetic) -> None:  # type: ignore[no-untyped-def]
    root = synthetic(studies=2, seed=5)
    assert detect_kind(root) == "synthetic"
    samples = load_dataset("synthetic", root)
    assert len(samples) == 8
    assert {s.view for s in samples} == {"CC", "MLO"}
    assert len({s.patient_id for s in samples}) == 2
    lesions = [s for s in samples if s.label != "normal"]
    for sample in lesions:
        mask = _mask(sample)
        assert mask is not None and mask.any()
        x0, y0, x1, y1 = (int(v) for v in sample.boxes[0])
        assert mask[y0:y1, x0:x1].sum() == mask.sum()  # the mask lies inside its box


def test_unknown_kind_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset kind"):
        load_dataset("nope", tmp_path)
    assert "synthetic" in DATASETS
    with pytest.raises(ValueError, match="no images"):
        load_dataset("folder", tmp_path)
