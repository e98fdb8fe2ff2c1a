"""write_studies: determinism, labels, masks, headers and the command line."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from training.cli import main
from training.synthetic import LABELS_FILE, SynthOptions, read_labels, write_studies
from training.synthetic.anatomy import Grid, draw_breast_shape
from training.synthetic.lesions import BENIGN_TYPES, MALIGNANT_TYPES, draw_lesion
from training.synthetic.mammogram import bounding_box, render_view
from training.synthetic.ultrasound import US_DESCRIPTOR_RATES, draw_us_mass

ABNORMAL = SynthOptions(mix=(0.5, 0.5, 0.0))


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    options = SynthOptions(for_processing=True, tomo=True)
    write_studies(tmp_path / "a", 2, 7, options)
    write_studies(tmp_path / "b", 2, 7, options)
    write_studies(tmp_path / "c", 2, 8, options)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert len(a) >= 2 * (4 + 4 + 1) + 1
    assert a == b
    common = set(a) & set(c)
    assert all(a[name] != c[name] for name in common if name.endswith(".dcm"))
    assert a[LABELS_FILE] != c[LABELS_FILE]


def test_labels_csv_lists_four_views_per_study(tmp_path: Path) -> None:
    images = write_studies(tmp_path, 3, 11, SynthOptions(for_processing=True))
    assert read_labels(tmp_path / LABELS_FILE) == images
    assert len(images) == 12, "For Processing images are not listed"
    by_study: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for img in images:
        by_study[img.study_uid].add((img.laterality, img.view))
        ds = pydicom.dcmread(tmp_path / img.path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"
        assert ds.SOPInstanceUID == img.sop_instance_uid
        assert ds.StudyInstanceUID == img.study_uid
        assert ds.ImageLaterality == img.laterality
        assert ds.ViewPosition == img.view
        code = {"CC": "399162004", "MLO": "399368009"}[img.view]
        assert ds.ViewCodeSequence[0].CodeValue == code
        assert ds.ViewCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert ds.PresentationIntentType == "FOR PRESENTATION"
        assert ds.BitsStored == 12 and ds.Rows == 512 and ds.Columns == 416
        assert ds.PatientName.family_name == "SYNTH"
        assert ds.AccessionNumber and ds.StudyID and ds.StudyDate and ds.Manufacturer
        # rows run towards the nipple: anterior for left, posterior for right breasts
        assert ds.PatientOrientation[0] == ("A" if img.laterality == "L" else "P")
        # the breast lies against the chest wall on the side PatientOrientation says
        pixels = ds.pixel_array.astype(float)
        half = pixels.shape[1] // 2
        left, right = pixels[:, :half].mean(), pixels[:, half:].mean()
        assert (left > right) == (img.laterality == "L")
    for fp in tmp_path.rglob("*-for-processing.dcm"):
        ds = pydicom.dcmread(fp)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2.1"
        assert ds.PresentationIntentType == "FOR PROCESSING"
        assert ds.BitsStored == 14
    assert all(
        views == {("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")}
        for views in by_study.values()
    )


def test_masks_match_boxes_and_both_views_agree(tmp_path: Path) -> None:
    images = write_studies(tmp_path, 4, 3, ABNORMAL)
    breasts: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for img in images:
        breasts[(img.study_uid, img.laterality)].append((img.label, img.lesion_type))
        if img.label == "normal":
            assert img.bbox is None and img.mask_path is None and img.lesion_type == "none"
            continue
        assert img.bbox is not None and img.mask_path is not None
        mask = np.asarray(Image.open(tmp_path / img.mask_path)) > 0
        assert mask.any()
        assert bounding_box(mask) == img.bbox
        x0, y0, x1, y1 = img.bbox
        assert 0 <= x0 < x1 <= 416 and 0 <= y0 < y1 <= 512
    for labels in breasts.values():
        assert len(set(labels)) == 1, "both views of a breast carry the same class and type"
    per_study: dict[str, set[str]] = defaultdict(set)
    for (study, _), labels in breasts.items():
        per_study[study].add(labels[0][0])
    assert all(
        labels == {"normal", labels.difference({"normal"}).pop()} for labels in per_study.values()
    )


@pytest.mark.parametrize("kind", sorted(BENIGN_TYPES | MALIGNANT_TYPES))
def test_lesion_changes_pixels_only_where_it_is(kind: str) -> None:
    grid = Grid(512, 416, 0.55)
    rng = np.random.default_rng(5)
    shape = draw_breast_shape(rng, "B", grid)
    label = "malignant" if kind in MALIGNANT_TYPES else "benign"
    lesion = None
    while lesion is None or lesion.kind != kind:
        lesion = draw_lesion(rng, label, "R", 1.0)
    for view in ("CC", "MLO"):
        with_lesion = render_view(shape, "R", view, grid, lesion, np.random.default_rng(9))
        without = render_view(shape, "R", view, grid, None, np.random.default_rng(9))
        assert with_lesion.mask is not None and with_lesion.bbox is not None
        diff = np.abs(with_lesion.pixels.astype(float) - without.pixels.astype(float))
        assert diff[with_lesion.mask].mean() > 40, "lesion pixels differ from the background"
        x0, y0, x1, y1 = with_lesion.bbox
        far = np.ones_like(with_lesion.mask)
        pad = max(x1 - x0, y1 - y0)
        far[max(y0 - pad, 0) : y1 + pad, max(x0 - pad, 0) : x1 + pad] = False
        assert diff[far].max() == 0, "nothing changes far from the lesion"


def test_split_series_and_drop_view(tmp_path: Path) -> None:
    images = write_studies(tmp_path, 2, 4, SynthOptions(split_series=True, drop_view="l-mlo"))
    assert len(images) == 6
    assert not any((img.laterality, img.view) == ("L", "MLO") for img in images)
    series = {pydicom.dcmread(tmp_path / img.path).SeriesInstanceUID for img in images}
    assert len(series) == 6
    with pytest.raises(ValueError, match="drop_view"):
        SynthOptions(drop_view="L-XCCL")


def test_mix_controls_classes(tmp_path: Path) -> None:
    images = write_studies(tmp_path, 6, 1, SynthOptions(mix=(0.0, 0.0, 1.0)))
    assert {img.label for img in images} == {"normal"}


def test_monochrome1_inverts_stored_values(tmp_path: Path) -> None:
    write_studies(tmp_path / "m2", 1, 2)
    write_studies(tmp_path / "m1", 1, 2, SynthOptions(photometric="monochrome1"))
    for path in (tmp_path / "m2").rglob("*.dcm"):
        m2 = pydicom.dcmread(path)
        m1 = pydicom.dcmread(tmp_path / "m1" / path.relative_to(tmp_path / "m2"))
        assert m1.PhotometricInterpretation == "MONOCHROME1"
        assert m1.PresentationLUTShape == "INVERSE"
        assert np.array_equal(m1.pixel_array, 4095 - m2.pixel_array)


@pytest.mark.parametrize("voi", ["sigmoid", "lut"])
def test_voi_sigmoid_and_lut_go_through_the_node_preprocessing(voi: str, tmp_path: Path) -> None:
    from node.imaging.dataset import read_dataset
    from node.imaging.preprocess import PreprocessOptions, preprocess_dataset

    write_studies(tmp_path / "window", 1, 3, SynthOptions())
    write_studies(tmp_path / voi, 1, 3, SynthOptions(voi=voi))  # type: ignore[arg-type]
    path = Path("study-0001/L-CC.dcm")
    ds = pydicom.dcmread(tmp_path / voi / path)
    if voi == "sigmoid":
        assert ds.VOILUTFunction == "SIGMOID"
        assert len(ds.WindowCenter) == 2
    else:
        assert "WindowCenter" not in ds
        (item,) = ds.VOILUTSequence
        assert list(item.LUTDescriptor) == [4096, 0, 12]
    plain = pydicom.dcmread(tmp_path / "window" / path)
    # linear windows: no VOI LUT Function (LINEAR is its default meaning; viewers on
    # cornerstone3D 5.x read any value of it as invalid and show the image black)
    assert len(plain.WindowCenter) == 2 and "VOILUTFunction" not in plain
    assert np.array_equal(ds.pixel_array, plain.pixel_array)
    options = PreprocessOptions(height=256, width=128)
    got = preprocess_dataset(read_dataset(tmp_path / voi / path), options).image
    ref = preprocess_dataset(read_dataset(tmp_path / "window" / path), options).image
    assert got.min() >= 0.0 and got.max() <= 1.0 and got.std() > 0.1
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.95


def test_ultrasound_studies(tmp_path: Path) -> None:
    images = write_studies(tmp_path, 4, 2, SynthOptions(modality="us", mix=(0.4, 0.4, 0.2)))
    assert len(images) == 8
    for img in images:
        ds = pydicom.dcmread(tmp_path / img.path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1"
        assert ds.Modality == "US" and ds.Laterality == img.laterality
        assert img.view in ("TRANS", "SAG") and img.modality == "US"
        if img.label != "normal":
            assert img.mask_path is not None and img.bbox is not None
            mask = np.asarray(Image.open(tmp_path / img.mask_path)) > 0
            assert bounding_box(mask) == img.bbox
            pixels = ds.pixel_array.astype(float)
            # solid masses are hypoechoic: darker than the tissue around them (the
            # subtle, nearly isoechoic ones by little)
            x0, y0, x1, y1 = img.bbox
            ring = np.zeros_like(mask)
            ring[max(y0 - 10, 0) : y1 + 10, max(x0 - 10, 0) : x1 + 10] = True
            ring &= ~mask
            assert pixels[mask].mean() < pixels[ring].mean()


def test_ultrasound_descriptors_overlap_and_difficulty_moves_them() -> None:
    """Each BI-RADS descriptor is seen in both classes at about its stated rates, and
    ``difficulty`` brings the classes' rates together (harder) or apart (easier)."""

    def rates(label: str, difficulty: float) -> dict[str, float]:
        masses = [draw_us_mass(label, seed, difficulty) for seed in range(1500)]
        return {
            "not_parallel": np.mean([m.aspect < 1.0 for m in masses]),
            "angular_margin": np.mean([m.angular > 0 for m in masses]),
            "echogenic_halo": np.mean([m.halo > 0 for m in masses]),
            "shadowing": np.mean([m.posterior < 1.0 for m in masses]),
            "size_mm": np.mean([m.size_mm for m in masses]),
        }

    malignant, benign = rates("malignant", 1.0), rates("benign", 1.0)
    for name in ("not_parallel", "angular_margin", "echogenic_halo", "shadowing"):
        expected = US_DESCRIPTOR_RATES[name]
        assert malignant[name] == pytest.approx(expected[0], abs=0.04), name
        assert benign[name] == pytest.approx(expected[1], abs=0.04), name
        assert 0 < benign[name] < malignant[name]
    harder_m, harder_b = rates("malignant", 2.0), rates("benign", 2.0)
    for name in ("not_parallel", "angular_margin", "echogenic_halo"):
        assert harder_m[name] - harder_b[name] < malignant[name] - benign[name], name
    assert harder_m["size_mm"] < malignant["size_mm"]


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path), "--studies", "1", "--seed", "3"]) == 0
    assert "wrote 1 MG studies, 4 images" in capsys.readouterr().out
    assert (tmp_path / LABELS_FILE).is_file()
    assert main(["synth", "--out", str(tmp_path), "--studies", "1", "--drop-view", "X"]) == 1
    assert "drop_view" in capsys.readouterr().err
