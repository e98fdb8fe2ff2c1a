"""Region, image, breast and study scores on one calibrated probability scale.

The shipped demo ensemble (global max pooling, three members with their own
temperatures and weights) runs on synthetic studies, some called positive at the
card's operating point and some not: every region scores at most its image's
probability, the top region of an image carries the image's probability, an
image's probability is the maximum over its regions, a breast's score the maximum
over its images and the study's the maximum over its breasts. A region becomes a
mark only at or above the operating point, so a negative study has none, however
salient its Grad-CAM regions are (before, every image's top region scored about
1.0 whatever the image's probability).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from node.config import InferenceSettings
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from node.results import StudyResult
from training.synthetic import SynthOptions, write_studies

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


def _infer(tmp: Path, mode: str) -> list[StudyResult]:
    images = write_studies(tmp, studies=6, seed=12, options=SynthOptions(size="small"))
    grouped: dict[str, list[ImageInput]] = defaultdict(list)
    for image in images:
        grouped[image.study_uid].append(ImageInput(tmp / image.path, image.sop_instance_uid))
    engine = InferenceEngine.load(
        DEMO,
        InferenceSettings(device="cpu", breast_aggregation=mode),  # type: ignore[arg-type]
    )
    return engine.infer_studies([StudyInput(uid, tuple(i)) for uid, i in grouped.items()])


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[StudyResult]:
    return _infer(tmp_path_factory.mktemp("studies"), "max")


def test_the_studies_include_positive_and_negative_ones(results: list[StudyResult]) -> None:
    assert {r.positive for r in results} == {True, False}
    assert all(image.regions for r in results for image in r.images)


def test_regions_never_score_above_their_image(results: list[StudyResult]) -> None:
    for result in results:
        for image in result.images:
            for region in image.regions:
                assert 0.0 <= region.score <= image.probability
                assert region.score == pytest.approx(image.probability * region.peak)
                assert 0.0 < region.peak <= 1.0


def test_image_is_the_maximum_over_its_regions(results: list[StudyResult]) -> None:
    for result in results:
        for image in result.images:
            top = image.regions[0]
            assert top.score == max(r.score for r in image.regions)
            assert top.score == pytest.approx(image.probability, rel=1e-12)
            assert top.peak == 1.0


def test_breast_and_study_are_maxima(results: list[StudyResult]) -> None:
    for result in results:
        for breast in result.breasts:
            members = [i for i in result.images if i.laterality == breast.laterality]
            assert breast.score == max(i.probability for i in members)
            assert breast.score == max(r.score for i in members for r in i.regions)
        assert result.score == max(b.score for b in result.breasts)


def test_marks_only_at_or_above_the_operating_point(results: list[StudyResult]) -> None:
    for result in results:
        assert result.has_marks is result.positive
        for image in result.images:
            marks = result.marks(image)
            assert all(r.score >= result.threshold for r in marks)
            assert all(r.score < result.threshold for r in result.unmarked(image))
            # the top region of a positive image is a mark with the image's probability
            if image.probability >= result.threshold:
                assert marks[0] is image.regions[0]
            else:
                assert marks == ()
    negative = next(r for r in results if not r.positive)
    peaks = [region.peak for image in negative.images for region in image.regions]
    assert max(peaks) == 1.0  # as salient as Grad-CAM gets, and still no mark
    assert max(r.score for i in negative.images for r in i.regions) < negative.threshold


def test_mean_aggregation_marks_only_positive_breasts(tmp_path: Path) -> None:
    results = _infer(tmp_path, "mean")
    for result in results:
        for breast in result.breasts:
            members = [i for i in result.images if i.laterality == breast.laterality]
            assert breast.score == pytest.approx(sum(i.probability for i in members) / len(members))
            for image in members:
                if not breast.positive:
                    assert result.marks(image) == ()
        assert result.score == max(b.score for b in result.breasts)
