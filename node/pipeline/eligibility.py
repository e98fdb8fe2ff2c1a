"""Which complete studies are inferred: a small, pure rule engine.

A study is eligible when, for at least one rule, the images matching that rule are not
empty and cover the rule's required views. Otherwise the decision carries a reason an
admin can read ("only For Processing images", "tomosynthesis not supported", ...).

:func:`rule_of` says which rule an image answers to (the first that matches it), and
:func:`unserved_rules` which rules could match images that no loaded model accepts (the
node's start-up check, ``eligibility.without_model``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from pydicom.uid import (
    BreastProjectionXRayImageStorageForPresentation,
    BreastProjectionXRayImageStorageForProcessing,
    BreastTomosynthesisImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from node.config import EligibilityRule, Settings
from node.errors import ModelError
from node.models.routes import Routes

__all__ = [
    "INFERRED_MODALITIES",
    "Decision",
    "ImageFacts",
    "check_models",
    "decide",
    "matches",
    "rule_modalities",
    "rule_of",
    "unserved_rules",
]

log = structlog.get_logger(__name__)

#: The modalities the node's preprocessing takes (:mod:`node.imaging.preprocess`).
INFERRED_MODALITIES: tuple[str, ...] = ("MG", "US")

#: The modality of the images of a SOP class a rule may name.
_SOP_CLASS_MODALITY = {
    str(DigitalMammographyXRayImageStorageForPresentation): "MG",
    str(DigitalMammographyXRayImageStorageForProcessing): "MG",
    str(UltrasoundImageStorage): "US",
    str(UltrasoundMultiFrameImageStorage): "US",
}

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


def rule_of(image: ImageFacts, rules: Sequence[EligibilityRule]) -> EligibilityRule | None:
    """The first rule that matches ``image`` (the one that decides its model), or ``None``."""
    return next((rule for rule in rules if matches(rule, image)), None)


def rule_modalities(rule: EligibilityRule) -> tuple[str, ...]:
    """The modalities of the images ``rule`` can match: those it names, else those of
    the SOP classes it names (when each is a known MG or US class), else every modality
    the node infers (:data:`INFERRED_MODALITIES`)."""
    if rule.modalities:
        return rule.modalities
    implied = [_SOP_CLASS_MODALITY.get(uid) for uid in rule.sop_classes]
    if implied and None not in implied:
        return tuple(sorted({m for m in implied if m is not None}))
    return INFERRED_MODALITIES


def unserved_rules(
    rules: Sequence[EligibilityRule], serves: Callable[[str, str], bool]
) -> list[tuple[EligibilityRule, str]]:
    """Each ``(rule, modality)`` where ``rule`` can match images of ``modality`` (see
    :func:`rule_modalities`) but ``serves(modality, rule name)`` says no model would
    infer them."""
    return [
        (rule, modality)
        for rule in rules
        for modality in rule_modalities(rule)
        if not serves(modality, rule.name)
    ]


def check_models(settings: Settings, routes: Routes) -> list[str]:
    """The node's start-up check: each eligibility rule that can match images of a
    modality no model accepts, as a sentence naming the rule. With
    ``eligibility.without_model: refuse`` the first raises :class:`ModelError`; with
    ``skip`` each is logged (such images are then left out of their study)."""
    problems = [
        f"eligibility rule {rule.name!r} can match {modality} images, but "
        f"{routes.no_model_reason(modality, rule.name)}"
        for rule, modality in unserved_rules(
            settings.eligibility.rules,
            lambda modality, rule: routes.card_for(modality, rule) is not None,
        )
    ]
    missing = [str(folder) for folder in settings.models if not folder.is_dir()]
    if problems and settings.eligibility.without_model == "refuse":
        hint = f" (model folders not found: {', '.join(missing)})" if missing else ""
        raise ModelError(
            f"{problems[0]}{hint}. Add a model folder for it to models, remove or narrow the "
            "rule, or set eligibility.without_model: skip to infer the other images only"
        )
    for problem in problems:
        log.warning("eligibility.unserved", problem=problem, consequence="such images are skipped")
    return problems


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
