"""Model folders: read one into ready-to-run members, or write one (export).

Layout (``docs/model-cards.md``)::

    models/<name>/
      card.yaml                  the model card (node.models.card.ModelCard)
      <member>.safetensors       one weights file per ensemble member

Loading checks everything a study would otherwise trip over: the card, each
weights file's presence and SHA-256, the architecture, and that the weights fit
the architecture key by key and shape by shape. Any mismatch raises
:class:`~node.errors.ModelError` naming the folder, the member and the problem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from node.errors import ModelError
from node.models.card import CARD_FILE, MemberSpec, ModelCard, card_from_data, read_card
from node.models.registry import create_model

__all__ = ["LoadedMember", "LoadedModel", "load_model_folder", "sha256_file", "write_model_folder"]

log = structlog.get_logger(__name__)

_SHOWN_KEYS = 5


@dataclass(frozen=True)
class LoadedMember:
    """A member's card entry and its model (CPU, eval mode, weights loaded)."""

    spec: MemberSpec
    model: nn.Module


@dataclass(frozen=True)
class LoadedModel:
    """A validated model folder."""

    folder: Path
    card: ModelCard
    members: tuple[LoadedMember, ...]


def sha256_file(path: Path) -> str:
    """Lower-case hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model_folder(folder: Path) -> LoadedModel:
    """Validate and load every member of ``folder``; :class:`ModelError` on any mismatch."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: model folder does not exist")
    card = read_card(folder)
    members = tuple(
        LoadedMember(spec=spec, model=_load_member(folder, card, spec))
        for spec in card.ensemble.members
    )
    log.info(
        "model.loaded",
        model=card.name,
        version=card.version,
        members=[m.spec.name for m in members],
    )
    return LoadedModel(folder=folder, card=card, members=members)


def _load_member(folder: Path, card: ModelCard, spec: MemberSpec) -> nn.Module:
    where = f"{folder / CARD_FILE}: member {spec.name!r}"
    path = folder / spec.weights
    if not path.is_file():
        raise ModelError(f"{where}: weights file {spec.weights} is missing")
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise ModelError(
            f"{where}: weights file {spec.weights} has SHA-256 {actual}, "
            f"the card says {spec.sha256}"
        )
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(
            f"{where}: {spec.weights} is not a readable safetensors file: {exc}"
        ) from exc
    try:
        model = create_model(
            spec.architecture,
            num_classes=len(card.labels),
            in_chans=card.input.channels,
            global_pool=spec.global_pool,
            output_stride=spec.output_stride,
        )
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from exc
    expected = model.state_dict()
    problems = _state_problems(expected, state)
    if problems:
        raise ModelError(
            f"{where}: {spec.weights} does not fit {spec.architecture} with "
            f"{len(card.labels)} labels and {card.input.channels} channel(s): {problems}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def _state_problems(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{key} {tuple(found[key].shape)} != {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(found))
        if found[key].shape != expected[key].shape
    ]
    parts = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatch", mismatched),
    ):
        if items:
            shown = ", ".join(items[:_SHOWN_KEYS])
            more = f" and {len(items) - _SHOWN_KEYS} more" if len(items) > _SHOWN_KEYS else ""
            parts.append(f"{label}: {shown}{more}")
    return "; ".join(parts)


def write_model_folder(
    folder: Path,
    card_data: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, torch.Tensor]],
) -> ModelCard:
    """Write a model folder: one safetensors file per member and the card.

    Args:
        folder: created if needed; existing files of the same names are replaced.
        card_data: the card as plain data. Members' ``sha256`` may be left out:
            it is computed from the written files. A member's ``weights`` file
            name defaults to ``<member name>.safetensors``.
        weights: member name -> state dict (``model.state_dict()``).

    Returns the validated card, which :func:`load_model_folder` will accept.
    Raises :class:`ModelError` if the card is invalid or a member has no weights.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = _plain(dict(card_data))
    members = data.get("ensemble", {}).get("members", [])
    for member in members:
        name = member.get("name")
        if name not in weights:
            raise ModelError(f"{folder}: no weights given for member {name!r}")
        member.setdefault("weights", f"{name}.safetensors")
        path = folder / member["weights"]
        tensors = {
            key: value.detach().cpu().contiguous().clone() for key, value in weights[name].items()
        }
        save_file(tensors, path, metadata={"architecture": str(member.get("architecture", ""))})
        member["sha256"] = sha256_file(path)
    card = card_from_data(data, folder / CARD_FILE)
    text = yaml.safe_dump(card.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    (folder / CARD_FILE).write_text(text, encoding="utf-8")
    return card


def _plain(value: Any) -> Any:
    """A deep copy of nested mappings/sequences as dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
