"""The runtime choices a GPU uses (bf16 autocast, channels-last, torch.compile), exercised
on the CPU: they must give the fp32 result up to rounding, Grad-CAM included."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from node.config import InferenceSettings
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from tests.helpers.models import write_random_model_folder
from training.synthetic import SynthOptions, write_studies


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> list[StudyInput]:
    out = tmp_path_factory.mktemp("synth")
    images = write_studies(out, studies=1, seed=11, options=SynthOptions(size="small"))
    grouped: dict[str, list[ImageInput]] = defaultdict(list)
    for image in images:
        grouped[image.study_uid].append(ImageInput(out / image.path, image.sop_instance_uid))
    return [StudyInput(uid, tuple(items)) for uid, items in grouped.items()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_model_folder(
        tmp_path_factory.mktemp("model") / "m",
        ("breast_cnn_small", "breast_cnn_small"),
        weights=(2.0, 1.0),
        seed=3,
    )


def _results(folder: Path, study: list[StudyInput], **settings: object) -> list[object]:
    options: dict[str, object] = {"device": "cpu", "tta": "flip", "batch_size": 4, **settings}
    engine = InferenceEngine.load(folder, InferenceSettings.model_validate(options))
    return list(engine.infer_studies(study)[0].images)


@pytest.mark.parametrize(
    "variant",
    [
        {"precision": "bf16"},
        {"channels_last": False},
        {"precision": "bf16", "channels_last": False},
    ],
    ids=["bf16", "contiguous", "bf16-contiguous"],
)
def test_runtime_variants_give_the_fp32_result(
    folder: Path, study: list[StudyInput], variant: dict[str, object]
) -> None:
    reference = _results(folder, study, precision="fp32", channels_last=True)
    other = _results(folder, study, **variant)
    tolerance = 0.03 if variant.get("precision") == "bf16" else 1e-5
    for a, b in zip(reference, other, strict=True):
        assert abs(a.probability - b.probability) <= tolerance  # type: ignore[attr-defined]
        ha, hb = a.heatmap, b.heatmap  # type: ignore[attr-defined]
        assert ha is not None and hb is not None and ha.shape == hb.shape
        if ha.std() > 0 and hb.std() > 0:
            assert float(np.corrcoef(ha.ravel(), hb.ravel())[0, 1]) > 0.95


@pytest.mark.slow
def test_compiled_members_give_the_eager_result(folder: Path, study: list[StudyInput]) -> None:
    start = time.perf_counter()
    # one view: compiling is minutes of CPU per graph, and TTA adds none that matter here
    compiled = _results(folder, study, precision="fp32", compile=True, tta="none")
    eager = _results(folder, study, precision="fp32", tta="none")
    for a, b in zip(eager, compiled, strict=True):
        assert abs(a.probability - b.probability) <= 1e-4  # type: ignore[attr-defined]
    assert time.perf_counter() - start < 300
