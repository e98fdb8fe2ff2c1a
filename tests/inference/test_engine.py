"""The inference engine end to end on small DICOM studies with tiny models."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from node.config import InferenceSettings
from node.errors import InferenceError, ModelError
from node.inference.engine import ImageInput, InferenceEngine, StudyInferenceError, StudyInput
from node.results import ImageResult
from tests.helpers.images import breast_phantom, mg_dataset, write_dataset
from tests.helpers.models import symmetric_state, write_random_model_folder
from training.synthetic import SynthOptions, write_studies

FAST = InferenceSettings(tta="none", cam=False)


def first_image(folder: Path, settings: InferenceSettings, study: list[StudyInput]) -> ImageResult:
    """The first image's result of the first study, from a freshly loaded engine."""
    return InferenceEngine.load(folder, settings).infer_studies(study)[0].images[0]


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[StudyInput]:
    """Two synthetic four-view studies, MONOCHROME1 in JPEG 2000."""
    out = tmp_path_factory.mktemp("synth")
    images = write_studies(
        out,
        studies=2,
        seed=1,
        options=SynthOptions(size="small", photometric="monochrome1", transfer_syntax="j2k"),
    )
    grouped: dict[str, list[ImageInput]] = defaultdict(list)
    for image in images:
        grouped[image.study_uid].append(ImageInput(out / image.path, image.sop_instance_uid))
    return [StudyInput(uid, tuple(items)) for uid, items in grouped.items()]


@pytest.fixture(scope="module")
def two_member_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_model_folder(
        tmp_path_factory.mktemp("model") / "m",
        ("breast_cnn_small", "breast_cnn_small"),
        weights=(3.0, 1.0),
        temperatures=(1.5, 0.8),
    )


def test_studies_give_complete_consistent_results(
    two_member_folder: Path, studies: list[StudyInput]
) -> None:
    engine = InferenceEngine.load(two_member_folder, InferenceSettings(tta="flip", batch_size=3))
    results = engine.infer_studies(studies)
    assert [r.study_uid for r in results] == [s.study_uid for s in studies]
    for study, result in zip(studies, results, strict=True):
        assert [i.sop_instance_uid for i in result.images] == [
            i.sop_instance_uid for i in study.images
        ]
        assert {b.laterality for b in result.breasts} == {"L", "R"}
        for breast in result.breasts:
            own = [i.probability for i in result.images if i.laterality == breast.laterality]
            assert breast.score == max(own) and breast.positive == (
                breast.score >= result.threshold
            )
        assert result.score == max(b.score for b in result.breasts)
        assert result.positive == (result.score >= 0.3) and result.operating_point == "sens90"
        expected_category = "12345"[
            int(np.searchsorted([0.02, 0.1, 0.3, 0.7], result.score, side="right"))
        ]
        assert result.assessment_category == expected_category
        assert (result.model_name, result.model_version) == ("tiny-test", "0.0.1")
        for image in result.images:
            assert sum(image.class_probabilities.values()) == pytest.approx(1.0)
            assert image.probability == image.class_probabilities["malignant"]
            members = image.member_probabilities
            assert image.probability == pytest.approx(0.75 * members["m0"] + 0.25 * members["m1"])
            spread = np.sqrt(
                0.75 * (members["m0"] - image.probability) ** 2
                + 0.25 * (members["m1"] - image.probability) ** 2
            )
            assert image.uncertainty == pytest.approx(spread)
            assert image.laterality_source == "ImageLaterality"
            assert image.geometry.flipped is (image.laterality == "R")
            heat = image.heatmap_original()
            assert heat is not None and heat.shape == image.geometry.original_shape
            assert heat.min() >= 0 and heat.max() <= 1
            assert 1 <= len(image.regions) <= 5
        encoded = json.loads(json.dumps(result.to_dict()))
        assert encoded["images"][0]["heatmap_shape"] == [128, 64]
        assert encoded["timings"]["inference_s"] > 0


def test_batching_does_not_change_results(
    two_member_folder: Path, studies: list[StudyInput]
) -> None:
    one = InferenceEngine.load(
        two_member_folder, InferenceSettings(tta="flip", batch_size=1, cam=False)
    )
    many = InferenceEngine.load(
        two_member_folder, InferenceSettings(tta="flip", batch_size=16, cam=False)
    )
    a = [i.probability for r in one.infer_studies(studies) for i in r.images]
    b = [i.probability for r in many.infer_studies(studies) for i in r.images]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_members_and_temperatures_match_single_member_engines(
    tmp_path: Path, studies: list[StudyInput]
) -> None:
    both = write_random_model_folder(
        tmp_path / "both", ("breast_cnn_small",) * 2, weights=(3, 1), temperatures=(2.0, 0.5)
    )
    alone = [
        write_random_model_folder(
            tmp_path / f"m{i}", ("breast_cnn_small",), seed=i, temperatures=(t,)
        )
        for i, t in enumerate((2.0, 0.5))
    ]
    study = studies[:1]
    combined = InferenceEngine.load(both, FAST).infer_studies(study)[0].images[0]
    singles = [
        InferenceEngine.load(f, FAST).infer_studies(study)[0].images[0].probability for f in alone
    ]
    assert combined.member_probabilities == pytest.approx(
        {"m0": singles[0], "m1": singles[1]}, abs=1e-6
    )
    assert combined.probability == pytest.approx(0.75 * singles[0] + 0.25 * singles[1], abs=1e-6)


def test_mean_aggregation_and_operating_point_from_settings(
    two_member_folder: Path, studies: list[StudyInput]
) -> None:
    settings = InferenceSettings(
        tta="none", cam=False, breast_aggregation="mean", operating_point="sens95"
    )
    result = InferenceEngine.load(two_member_folder, settings).infer_studies(studies[:1])[0]
    for breast in result.breasts:
        own = [i.probability for i in result.images if i.laterality == breast.laterality]
        assert breast.score == pytest.approx(float(np.mean(own)))
    assert (result.operating_point, result.threshold) == ("sens95", 0.15)
    assert result.images[0].heatmap is None and result.images[0].regions == ()


def test_flip_tta_on_a_symmetric_image_equals_no_tta(tmp_path: Path) -> None:
    folder = write_random_model_folder(tmp_path / "m")
    image = np.zeros((128, 64), dtype=np.float32)
    image[20:100, 12:52] = np.linspace(0.2, 0.8, 80, dtype=np.float32)[:, None]
    path = write_dataset(mg_dataset(image, laterality="L"), tmp_path / "sym.dcm")
    study = [StudyInput("1.2", (ImageInput(path, "1.2.1"),))]
    plain = first_image(folder, FAST, study)
    flip = first_image(folder, InferenceSettings(tta="flip", cam=False), study)
    _, left, _, right = plain.geometry.crop
    assert left == 64 - right and left > 0  # cropped symmetrically
    assert flip.class_probabilities == pytest.approx(plain.class_probabilities, abs=1e-6)


def test_flip_invariant_model_gives_identical_tta_results(tmp_path: Path) -> None:
    folder = write_random_model_folder(tmp_path / "m", states={"m0": symmetric_state(seed=4)})
    image = breast_phantom(rows=200, cols=120, spot=(60, 20), spot_radius=5)
    path = write_dataset(mg_dataset(image, laterality="L"), tmp_path / "a.dcm")
    study = [StudyInput("1.2", (ImageInput(path, "1.2.1"),))]
    plain = first_image(folder, FAST, study)
    flip = first_image(folder, InferenceSettings(tta="flip", cam=False), study)
    assert flip.class_probabilities == pytest.approx(plain.class_probabilities, abs=1e-6)
    multi = first_image(folder, InferenceSettings(tta="multi", cam=False), study)
    assert multi.class_probabilities != pytest.approx(
        plain.class_probabilities, abs=1e-9
    )  # zoom/shift do change it


def test_a_broken_study_fails_alone_with_its_reason(
    two_member_folder: Path, studies: list[StudyInput], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"this is not DICOM")
    bad = StudyInput("9.9.9", (studies[0].images[0], ImageInput(broken, "9.9.9.1")))
    engine = InferenceEngine.load(two_member_folder, FAST)
    outcomes = engine.infer_each([studies[0], bad, StudyInput("8.8", ())])
    assert outcomes[0].study_uid == studies[0].study_uid  # type: ignore[union-attr]
    assert isinstance(outcomes[1], StudyInferenceError) and outcomes[1].study_uid == "9.9.9"
    assert "image 9.9.9.1: cannot read DICOM file broken.dcm" in str(outcomes[1])
    assert isinstance(outcomes[2], StudyInferenceError) and "no images" in str(outcomes[2])
    with pytest.raises(InferenceError, match=r"image 9\.9\.9\.1") as info:
        engine.infer_studies([studies[0], bad])
    assert info.value.study_uid == "9.9.9"  # type: ignore[attr-defined]


@pytest.mark.parametrize("processes", [0, 1], ids=["here", "decoding-process"])
def test_a_value_nothing_checked_fails_only_its_image_study(
    two_member_folder: Path, studies: list[StudyInput], tmp_path: Path, processes: int
) -> None:
    """An unparsable Rescale Slope raised ValueError out of the per-image handling, and
    every study decoded beside it failed."""
    ds = mg_dataset(breast_phantom(), RescaleSlope="1.5", RescaleIntercept="0")
    path = write_dataset(ds, tmp_path / "slope.dcm")
    path.write_bytes(path.read_bytes().replace(b"1.5 ", b"x!x "))
    bad = StudyInput("9.9.9", (ImageInput(path, "9.9.9.1"),))
    engine = InferenceEngine.load(
        two_member_folder, InferenceSettings(tta="none", cam=False, decode_processes=processes)
    )
    try:
        outcomes = engine.infer_each([studies[0], bad, studies[1]])
    finally:
        engine.close()
    assert [getattr(o, "study_uid", None) for o in outcomes] == [
        studies[0].study_uid, "9.9.9", studies[1].study_uid
    ]  # fmt: skip
    assert not isinstance(outcomes[0], StudyInferenceError)
    assert not isinstance(outcomes[2], StudyInferenceError)
    assert isinstance(outcomes[1], StudyInferenceError)
    assert "image 9.9.9.1: invalid RescaleSlope" in str(outcomes[1])


def test_modality_the_model_does_not_accept(tmp_path: Path) -> None:
    path = write_dataset(mg_dataset(breast_phantom(), modality="US"), tmp_path / "us.dcm")
    mammography_only = write_random_model_folder(tmp_path / "m", modalities=("MG",))
    engine = InferenceEngine.load(mammography_only, FAST)
    with pytest.raises(
        StudyInferenceError, match="modality US is not one the model tiny-test accepts"
    ):
        engine.infer_studies([StudyInput("1", (ImageInput(path, "1.1"),))])


def test_ultrasound_model_with_rgb_input(tmp_path: Path) -> None:
    folder = write_random_model_folder(
        tmp_path / "m", modalities=("US",), channels=3, labels=("benign", "malignant")
    )
    ds = mg_dataset(np.zeros((4, 4)), modality="US", laterality=None)
    rgb = np.zeros((90, 120, 3), dtype=np.uint8)
    rgb[10:80, 20:110] = np.random.default_rng(0).integers(
        30, 220, size=(70, 90, 3), dtype=np.uint8
    )
    ds.Rows, ds.Columns = 90, 120
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    path = write_dataset(ds, tmp_path / "us.dcm")
    result = InferenceEngine.load(folder, InferenceSettings(tta="none")).infer_studies(
        [StudyInput("1", (ImageInput(path, "1.1"),))]
    )[0]
    image = result.images[0]
    assert image.geometry.crop == (10, 20, 80, 110) and not image.geometry.flipped
    assert [b.laterality for b in result.breasts] == ["U"]
    assert set(image.class_probabilities) == {"benign", "malignant"}


def test_load_errors_come_early(two_member_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no operating point 'sens99'"):
        InferenceEngine.load(two_member_folder, InferenceSettings(operating_point="sens99"))
    with pytest.raises(ModelError, match="model folder does not exist"):
        InferenceEngine.load(tmp_path / "absent", FAST)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            InferenceEngine.load(two_member_folder, InferenceSettings(device="cuda"))
