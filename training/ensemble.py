"""``breast-train ensemble``: train several architectures from one recipe, then calibrate
and export them as one model folder.

A recipe (``training/configs/busi-ensemble.yaml`` documents one) has three sections:

``train``
    A training config (:class:`~training.config.TrainConfig`; ``training/configs/demo.yaml``
    documents every key) shared by the members. Each member trains into
    ``<train.output>/<member name>``.
``members``
    One entry per member: ``architecture`` and optionally ``name`` (default: the
    architecture) and ``set``, overrides of the shared config for this member
    (``{optim.lr: 0.0002}``).
``export``
    Where and how the folder is written (:class:`~training.export.ExportOptions`): ``out``,
    ``name``, ``version``, ``tta`` (``multi``: the five test-time views), ``weights``
    (``nll``: fitted on validation), ``half`` and ``card`` (card fields, as a mapping).

The members train one after the other on the shared split (``train.data``: a separate
``val_root``, or the seeded ``split`` of ``root``); their temperatures, the ensemble
weights and the operating thresholds are then fitted on the validation images of that
same split (never on training images), and the folder is written with
:func:`~training.export.export_model`, ready for the node. ``--set`` overrides keys of
the recipe (``train.optim.epochs=1``, ``export.out=models/x``).
"""

from __future__ import annotations

import copy
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from node.models.card import ModelCard
from training.config import ConfigError, TrainConfig, read_sections
from training.export import ExportOptions, export_model
from training.train import train

__all__ = ["EnsembleRecipe", "MemberRecipe", "RecipeExport", "load_recipe", "run_recipe"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberRecipe(_Section):
    """One member: an architecture and the keys it sets differently from the shared config."""

    architecture: str
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    set: dict[str, Any] = Field(default_factory=dict)
    """Dotted keys of the shared training config, e.g. ``optim.lr``."""

    @property
    def run_name(self) -> str:
        return self.name or self.architecture


class RecipeExport(_Section):
    """The model folder to write (``breast-train export``'s options)."""

    out: Path
    name: str
    version: str = "1.0.0"
    tta: Literal["none", "flip", "multi"] = "multi"
    weights: Literal["nll", "auc", "equal"] = "nll"
    half: bool = False
    card: dict[str, Any] = Field(default_factory=dict)
    """Card fields (description, intended_use, training_data, ...)."""


class EnsembleRecipe(_Section):
    """A whole recipe: the shared training config, the members, the export."""

    train: dict[str, Any]
    members: tuple[MemberRecipe, ...] = Field(min_length=1)
    export: RecipeExport

    def member_config(self, member: MemberRecipe) -> TrainConfig:
        """The training config of one member; :class:`ConfigError` naming it if invalid."""
        data = copy.deepcopy(self.train)
        data.setdefault("model", {})["architecture"] = member.architecture
        for dotted, value in member.set.items():
            section = data
            *parents, key = dotted.split(".")
            for part in parents:
                section = section.setdefault(part, {})
            section[key] = copy.deepcopy(value)
        data["output"] = str(Path(data.get("output", "var/train/ensemble")) / member.run_name)
        data.setdefault("name", member.run_name)
        try:
            return TrainConfig.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"member {member.run_name}: train.{key}: {first['msg']}") from None


def load_recipe(path: Path, overrides: Sequence[str] = ()) -> EnsembleRecipe:
    """Read and validate a recipe; ``overrides`` are ``dotted.key=value`` (YAML values)."""
    data = read_sections(path, "recipe", overrides)
    try:
        recipe = EnsembleRecipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(recipe)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{path}: {key}: {message}") from None
    names = [m.run_name for m in recipe.members]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: members: two members are called the same: {names}")
    for member in recipe.members:
        recipe.member_config(member)  # every member's config is valid before anything runs
    return recipe


@dataclass(frozen=True)
class RecipeResult:
    """The trained runs and the card of the folder written."""

    runs: tuple[Path, ...]
    card: ModelCard


def run_recipe(recipe: EnsembleRecipe, *, progress: bool = True) -> RecipeResult:
    """Train every member, then calibrate and export the ensemble on the validation split."""
    configs = [recipe.member_config(member) for member in recipe.members]
    runs = []
    for member, config in zip(recipe.members, configs, strict=True):
        if progress:
            print(f"training member {member.run_name} ({member.architecture})", file=sys.stderr)
        runs.append(train(config, progress=progress).output)
    export = recipe.export
    with tempfile.TemporaryDirectory(prefix="ensemble-card-") as tmp:
        card_fields = Path(tmp) / "card.yaml"
        card_fields.write_text(yaml.safe_dump(export.card), encoding="utf-8")
        card = export_model(
            ExportOptions(
                runs=tuple(runs),
                val_data=configs[0].data.val_root,  # None: the runs' own validation part
                dataset=configs[0].data.kind,
                out=export.out,
                name=export.name,
                version=export.version,
                card_fields=card_fields,
                tta=export.tta,
                weights=export.weights,
                half=export.half,
                progress=progress,
            ),
        )
    return RecipeResult(tuple(runs), card)
