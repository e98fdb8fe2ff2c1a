"""Model cards: the validated description of a model folder (``card.yaml``).

A card states what the model is (name, version, members and their
architectures), its data contract (input size, channels, normalisation,
labels), how its outputs become decisions (per-member calibration temperature,
ensemble weights, operating thresholds, assessment-category bands), and what it
is for and was measured on. Every field is checked when the node starts; an
error names the file and the field. The layout is documented in
``docs/model-cards.md``.
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from node.errors import ModelError
from node.imaging.preprocess import PreprocessOptions
from node.models.registry import GLOBAL_POOLS, OUTPUT_STRIDES, check_architecture

__all__ = [
    "CARD_FILE",
    "CARD_FORMAT",
    "AssessmentBands",
    "EnsembleSpec",
    "InputSpec",
    "MemberSpec",
    "ModelCard",
    "OperatingPoint",
    "TrainingData",
    "card_from_data",
    "read_card",
]

CARD_FILE = "card.yaml"
"""File name of the card inside a model folder."""

CARD_FORMAT = 1
"""Version of the card layout this node reads (``ModelCard.format``)."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_WEIGHTS_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.safetensors$")
Identifier = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Frozen):
    """The model input contract (what :mod:`node.imaging.preprocess` must produce)."""

    height: int = Field(default=1024, ge=8, le=8192)
    width: int = Field(default=512, ge=8, le=8192)
    channels: Literal[1, 3] = 1
    """The grey image is repeated over this many channels."""
    mean: tuple[float, ...] = (0.5,)
    """Per-channel mean subtracted from the ``[0, 1]`` image."""
    std: tuple[float, ...] = (0.5,)
    """Per-channel standard deviation the image is divided by (each > 0)."""
    crop: bool = True
    canonical_flip: bool = True
    ultrasound_clahe: bool = True

    @model_validator(mode="after")
    def _per_channel(self) -> InputSpec:
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) != self.channels:
                raise ValueError(f"{key} has {len(values)} values but channels is {self.channels}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be greater than 0")
        return self

    def preprocess_options(self) -> PreprocessOptions:
        """The preprocessing options this contract implies."""
        return PreprocessOptions(
            height=self.height,
            width=self.width,
            crop=self.crop,
            canonical_flip=self.canonical_flip,
            ultrasound_clahe=self.ultrasound_clahe,
        )


class MemberSpec(_Frozen):
    """One ensemble member: an architecture and its weights file in the folder."""

    name: Identifier
    architecture: str
    """A timm model name (``node.models.registry.ARCHITECTURES`` are the tested ones)."""
    global_pool: str | None = None
    """Global pooling the member was trained with (``avg``, ``max``, ``avgmax``,
    ``catavgmax``); unset: the architecture's default (average)."""
    output_stride: int | None = None
    """Stride of the last feature map (8, 16 or 32; unset: the architecture's, 32).
    A finer map gives Grad-CAM a finer grid; must match training."""
    weights: str
    """File name of the member's safetensors file, inside the model folder."""
    sha256: str
    """Lower-case hex SHA-256 of the weights file; checked when the node loads it."""
    weight: float = Field(default=1.0, gt=0)
    """Relative weight in the ensemble mean (normalised over members)."""
    temperature: float = Field(default=1.0, gt=0, le=100)
    """Calibration temperature: softmax(logits / temperature)."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """This member's validation metrics (informative)."""

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        try:
            return check_architecture(value)
        except ModelError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("output_stride")
    @classmethod
    def _known_stride(cls, value: int | None) -> int | None:
        if value is not None and value not in OUTPUT_STRIDES:
            raise ValueError(f"must be one of {', '.join(map(str, OUTPUT_STRIDES))}")
        return value

    @field_validator("global_pool")
    @classmethod
    def _known_pool(cls, value: str | None) -> str | None:
        if value is not None and value not in GLOBAL_POOLS:
            raise ValueError(f"unknown global_pool {value!r}; known: {', '.join(GLOBAL_POOLS)}")
        return value

    @field_validator("weights")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if not _WEIGHTS_FILE.match(value):
            raise ValueError(
                f"{value!r} must be a plain file name in the model folder ending in .safetensors"
            )
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("must be 64 lower-case hexadecimal characters")
        return value


class OperatingPoint(_Frozen):
    """A decision threshold on the study's malignancy probability."""

    name: Identifier
    threshold: Probability
    sensitivity: Probability | None = None
    """Sensitivity measured at this threshold (informative)."""
    specificity: Probability | None = None
    """Specificity measured at this threshold (informative)."""


class AssessmentBands(_Frozen):
    """Malignancy probability -> assessment category (BI-RADS-like).

    ``p < cut_points[0]`` gives ``categories[0]``, ``cut_points[i-1] <= p <
    cut_points[i]`` gives ``categories[i]``, and ``p >= cut_points[-1]`` the last.
    """

    categories: tuple[str, ...] = ("1", "2", "3", "4", "5")
    cut_points: tuple[float, ...] = (0.02, 0.1, 0.3, 0.7)

    @model_validator(mode="after")
    def _consistent(self) -> AssessmentBands:
        if len(self.categories) < 2:
            raise ValueError("at least two categories are needed")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories must be unique")
        if len(self.cut_points) != len(self.categories) - 1:
            raise ValueError(
                f"{len(self.categories)} categories need {len(self.categories) - 1} cut points, "
                f"got {len(self.cut_points)}"
            )
        points = self.cut_points
        if any(not 0 < p < 1 for p in points) or any(a >= b for a, b in pairwise(points)):
            raise ValueError("cut points must increase strictly and lie between 0 and 1")
        return self


class EnsembleSpec(_Frozen):
    """How members are combined; ``tta`` and ``breast_aggregation`` record what the
    operating points were measured with (the node's settings choose at run time)."""

    members: tuple[MemberSpec, ...] = Field(min_length=1)
    aggregation: Literal["weighted_mean"] = "weighted_mean"
    """Members' temperature-calibrated probabilities, averaged with their weights."""
    tta: Literal["none", "flip", "multi"] = "flip"
    breast_aggregation: Literal["max", "mean"] = "max"
    assessment: AssessmentBands = Field(default_factory=AssessmentBands)
    weighting: str = ""
    """How the member weights were chosen (informative), e.g. fitted on validation or
    equal because fitted ones could not be told apart."""

    @model_validator(mode="after")
    def _unique(self) -> EnsembleSpec:
        for key in ("name", "weights"):
            values = [getattr(m, key) for m in self.members]
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                raise ValueError(f"member {key} {duplicates[0]!r} is used twice")
        return self


class TrainingData(_Frozen):
    """Where the model's training data came from (informative)."""

    description: str = ""
    datasets: tuple[str, ...] = ()
    images: int | None = Field(default=None, ge=0)


class MeasuredMetrics(_Frozen):
    """Metrics of the whole ensemble on a named evaluation set (informative)."""

    evaluated_on: str = ""
    values: dict[str, float] = Field(default_factory=dict)


class ModelCard(_Frozen):
    """The whole card. Frozen; build it with :func:`read_card` or :func:`card_from_data`."""

    format: Literal[1] = 1
    name: Identifier
    version: Annotated[str, Field(min_length=1, max_length=64)]
    description: str = ""
    intended_use: Annotated[str, Field(min_length=1)]
    modalities: tuple[Literal["MG", "US"], ...] = ("MG",)
    input: InputSpec = Field(default_factory=InputSpec)
    labels: tuple[str, ...]
    malignant_label: str = "malignant"
    operating_points: tuple[OperatingPoint, ...] = Field(min_length=1)
    default_operating_point: str | None = None
    """Name of the operating point used unless the settings pick another; the first if unset."""
    ensemble: EnsembleSpec
    training_data: TrainingData = Field(default_factory=TrainingData)
    metrics: MeasuredMetrics = Field(default_factory=MeasuredMetrics)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2:
            raise ValueError("at least two labels are needed")
        if any(not label.strip() for label in value):
            raise ValueError("labels must not be empty")
        if len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        return value

    @model_validator(mode="after")
    def _references(self) -> ModelCard:
        if self.malignant_label not in self.labels:
            raise ValueError(
                f"malignant_label {self.malignant_label!r} is not one of the labels "
                f"{list(self.labels)}"
            )
        names = [p.name for p in self.operating_points]
        if len(set(names)) != len(names):
            raise ValueError("operating point names must be unique")
        if self.default_operating_point is not None and self.default_operating_point not in names:
            raise ValueError(
                f"default_operating_point {self.default_operating_point!r} is not one of {names}"
            )
        if not self.modalities:
            raise ValueError("modalities must name at least one modality")
        return self

    @property
    def malignant_index(self) -> int:
        """Index of the malignant label in the model's outputs."""
        return self.labels.index(self.malignant_label)

    def operating_point(self, name: str | None = None) -> OperatingPoint:
        """The named operating point, or the default one; :class:`ModelError` if unknown."""
        wanted = name or self.default_operating_point
        if wanted is None:
            return self.operating_points[0]
        for point in self.operating_points:
            if point.name == wanted:
                return point
        known = ", ".join(p.name for p in self.operating_points)
        raise ModelError(f"model {self.name} has no operating point {wanted!r} (has: {known})")


def card_from_data(data: Any, source: str | Path) -> ModelCard:
    """Validate card data; :class:`ModelError` naming ``source`` and the dotted field."""
    if not isinstance(data, dict):
        raise ModelError(f"{source}: a model card must be a mapping of fields")
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        key = ".".join(str(p) for p in first["loc"]) or "(card)"
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ModelError(f"{source}: {key}: {message}{more}") from None


def read_card(folder: Path) -> ModelCard:
    """Read and validate ``folder/card.yaml``."""
    path = folder / CARD_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model card ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML") from exc
    return card_from_data(data, path)
