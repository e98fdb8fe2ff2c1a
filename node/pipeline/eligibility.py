"""Which complete studies are inferred: a small, pure rule engine.

A study is eligible when, for at least one rule, the images matching that rule are not
empty and cover the rule's required views. Otherwise the decision carries a reason an
admin can read ("only For Processing images", "tomosynthesis not supported", ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pydicom.uid import (
    BreastProjectionXRayImageStorageForPresentation,
    BreastProjectionXRayImageStorageForProcessing,
    BreastTomosynthesisImageStorage,
    DigitalMammographyXRayImageStorageForProcessing,
)

from node.config import EligibilityRule

__all__ = ["Decision", "ImageFacts", "decide", "matches"]

MG_FOR_PROCESSING = str(DigitalMammographyXRayImageStorageForProcessing)
_TOMOSYNTHESIS = frozenset(
    str(uid)
    for uid in (
        BreastTomosynthesisImageStorage,
        BreastProjectionXRayImageStorageForPresentation,
        BreastProjectionXRayImageStorageForProcessing,
    )
)
_BREAST_MODALITIES = frozenset({"MG", "US"})


class ImageFacts(Protocol):
    """The header facts a rule looks at (``node.db.InstanceFacts`` provides them)."""

    @property
    def sop_class_uid(self) -> str: ...
    @property
    def modality(self) -> str | None: ...
    @property
    def calling_ae(self) -> str: ...
    @property
    def body_part(self) -> str | None: ...
    @property
    def view(self) -> str | None: ...
    @property
    def number_of_frames(self) -> int: ...
    @property
    def presentation_intent(self) -> str | None: ...


@dataclass(frozen=True)
class Decision:
    """The outcome for one study: eligible (with the rule) or not (with the reason)."""

    eligible: bool
    rule: str | None = None
    reason: str | None = None


def _norm(value: str | None) -> str:
    return (value or "").strip().upper()


def matches(rule: EligibilityRule, image: ImageFacts) -> bool:
    """True when every criterion ``rule`` names holds for ``image``."""
    if rule.calling_ae_titles and image.calling_ae.strip() not in rule.calling_ae_titles:
        return False
    if rule.modalities and _norm(image.modality) not in rule.modalities:
        return False
    if rule.sop_classes and image.sop_class_uid not in rule.sop_classes:
        return False
    if rule.body_parts and _norm(image.body_part) not in rule.body_parts:
        return False
    if not rule.allow_multiframe and image.number_of_frames > 1:
        return False
    return _norm(image.presentation_intent) != "FOR PROCESSING"


def decide(images: Sequence[ImageFacts], rules: Sequence[EligibilityRule]) -> Decision:
    """Decide whether a complete study with ``images`` is inferred."""
    if not images:
        return Decision(False, reason="no images")
    missing_views: list[str] = []
    for rule in rules:
        matched = [image for image in images if matches(rule, image)]
        if not matched:
            continue
        views = {_norm(image.view) for image in matched}
        missing = [view for view in rule.required_views if view not in views]
        if not missing:
            return Decision(True, rule=rule.name)
        missing_views.append(f"{rule.name}: missing views {', '.join(missing)}")
    if missing_views:
        return Decision(False, reason="; ".join(missing_views))
    return Decision(False, reason=_why_not(images))


def _is_tomosynthesis(image: ImageFacts) -> bool:
    # multi-frame MG: tomosynthesis slices sent in an older or generic IOD
    return image.sop_class_uid in _TOMOSYNTHESIS or (
        _norm(image.modality) == "MG" and image.number_of_frames > 1
    )


def _why_not(images: Sequence[ImageFacts]) -> str:
    """A readable reason for a study no rule matched, from what the study contains."""
    breast = [
        image
        for image in images
        if _norm(image.modality) in _BREAST_MODALITIES
        or image.sop_class_uid in _TOMOSYNTHESIS
        or image.sop_class_uid == MG_FOR_PROCESSING
    ]
    if not breast:
        return "no breast images"
    if all(
        image.sop_class_uid == MG_FOR_PROCESSING
        or _norm(image.presentation_intent) == "FOR PROCESSING"
        for image in breast
    ):
        return "only For Processing images"
    if any(_is_tomosynthesis(image) for image in breast):
        return "tomosynthesis not supported"
    if all(image.number_of_frames > 1 for image in breast):
        return "only multi-frame images"
    return "no eligibility rule matched"
