"""Eligibility rules: pure decisions over header facts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from node.config import EligibilityRule, EligibilitySettings
from node.pipeline.eligibility import decide, matches

MG = "1.2.840.10008.5.1.4.1.1.1.2"
MG_PROC = "1.2.840.10008.5.1.4.1.1.1.2.1"
TOMO = "1.2.840.10008.5.1.4.1.1.13.1.3"
US = "1.2.840.10008.5.1.4.1.1.6.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
DEFAULT = EligibilitySettings().rules


@dataclass(frozen=True)
class Image:
    sop_class_uid: str = MG
    modality: str | None = "MG"
    calling_ae: str = "PACS"
    body_part: str | None = "BREAST"
    view: str | None = "CC"
    number_of_frames: int = 1
    presentation_intent: str | None = "FOR PRESENTATION"


def test_mg_for_presentation_is_eligible() -> None:
    decision = decide([Image(view="CC"), Image(view="MLO")], DEFAULT)
    assert decision.eligible and decision.rule == "mammography"


def test_breast_ultrasound_is_eligible_other_ultrasound_is_not() -> None:
    assert decide([Image(sop_class_uid=US, modality="US")], DEFAULT).rule == "breast-ultrasound"
    decision = decide([Image(sop_class_uid=US, modality="US", body_part="ABDOMEN")], DEFAULT)
    assert not decision.eligible and decision.reason == "no eligibility rule matched"


@pytest.mark.parametrize(
    ("images", "reason"),
    [
        (
            [Image(sop_class_uid=MG_PROC, presentation_intent="FOR PROCESSING")],
            "only For Processing images",
        ),
        ([Image(sop_class_uid=TOMO, number_of_frames=60)], "tomosynthesis not supported"),
        (
            [Image(sop_class_uid=TOMO, number_of_frames=60), Image(sop_class_uid=MG_PROC)],
            "tomosynthesis not supported",
        ),
        ([Image(sop_class_uid=CT, modality="CT", body_part="CHEST")], "no breast images"),
        ([Image(number_of_frames=2)], "tomosynthesis not supported"),
        ([Image(sop_class_uid=US, modality="US", number_of_frames=40)], "only multi-frame images"),
        ([], "no images"),
    ],
)
def test_skip_reasons(images: list[Image], reason: str) -> None:
    decision = decide(images, DEFAULT)
    assert not decision.eligible
    assert decision.reason == reason


def test_mixed_study_with_one_presentation_image_is_eligible() -> None:
    images = [Image(sop_class_uid=MG_PROC), Image(sop_class_uid=TOMO, number_of_frames=50), Image()]
    assert decide(images, DEFAULT).eligible


def test_required_views_and_calling_ae() -> None:
    rule = EligibilityRule(
        name="screening",
        calling_ae_titles=("MAMMO1",),
        modalities=("MG",),
        required_views=("CC", "MLO"),
    )
    both = [Image(calling_ae="MAMMO1", view="CC"), Image(calling_ae="MAMMO1", view="MLO")]
    assert decide(both, [rule]).eligible
    only_cc = decide([Image(calling_ae="MAMMO1", view="CC")], [rule])
    assert only_cc.reason == "screening: missing views MLO"
    assert not matches(rule, Image(calling_ae="OTHER"))
    assert not decide([Image(calling_ae="OTHER", view=v) for v in ("CC", "MLO")], [rule]).eligible


def test_no_rules_skips_everything() -> None:
    assert not decide([Image()], ()).eligible
