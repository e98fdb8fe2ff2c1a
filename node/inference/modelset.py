"""Several models in one node, one per modality: which model infers which image.

The settings name model folders (``models``); each becomes an
:class:`~node.inference.engine.InferenceEngine`. An image goes to the first model whose
card lists its modality (``modalities`` in ``card.yaml``), or to the model its
eligibility rule names (``eligibility.rules[].model``), so a study with mammograms
and ultrasound images is inferred part by part, each part by its own model::

    models = ModelSet.load([Path("models/demo"), Path("models/demo-us")], settings, rules)
    engine = models.engine_for("US")          # the demo-us engine
    models.engine_for("CT")                   # None: no model accepts CT

Loading checks every folder (:class:`~node.errors.ModelError` before any study) and
that two folders do not hold models of the same name: a result names its model, and
its object UIDs are derived from that name. Each model has its own decoding
processes (``inference.decode_processes`` per model), since each preprocesses to its
own input contract.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from node.config import EligibilityRule, InferenceSettings
from node.errors import ModelError
from node.inference.decoders import DecoderState
from node.inference.engine import InferenceEngine
from node.models.routes import Routes

__all__ = ["ModelSet"]


class ModelSet:
    """Loaded models in the order the settings list them, and the route of each image
    (:class:`~node.models.routes.Routes`). ``rules``: the eligibility rules; a rule's
    ``model`` (a card name) sends the images it matches to that model. Raises
    :class:`ModelError` when two models share a name or a rule names a model that is not
    loaded.
    """

    def __init__(
        self, engines: Sequence[InferenceEngine], rules: Sequence[EligibilityRule] = ()
    ) -> None:
        self.engines: tuple[InferenceEngine, ...] = tuple(engines)
        self.routes = Routes([engine.card for engine in self.engines], rules)
        self._by_name = {engine.card.name: engine for engine in self.engines}

    @classmethod
    def load(
        cls,
        folders: Sequence[Path],
        settings: InferenceSettings,
        rules: Sequence[EligibilityRule] = (),
        *,
        display_size: int | None = None,
    ) -> ModelSet:
        """Load every folder (:meth:`InferenceEngine.load`); :class:`ModelError` for any
        problem, before any study. A model loaded before the problem is closed again."""
        engines: list[InferenceEngine] = []
        try:
            for folder in folders:
                engines.append(InferenceEngine.load(folder, settings, display_size=display_size))
            return cls(engines, rules)
        except BaseException:
            for engine in engines:
                engine.close()
            raise

    def __iter__(self) -> Iterator[InferenceEngine]:
        return iter(self.engines)

    def __len__(self) -> int:
        return len(self.engines)

    def named(self, name: str) -> InferenceEngine:
        """The model whose card is called ``name``; :class:`ModelError` if none is."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ModelError(f"no loaded model is called {name!r}") from None

    def engine_for(self, modality: str | None, rule: str | None = None) -> InferenceEngine | None:
        """The model that infers an image of ``modality`` matched by eligibility rule
        ``rule`` (:meth:`Routes.card_for`); ``None`` when none does."""
        card = self.routes.card_for(modality, rule)
        return None if card is None else self._by_name[card.name]

    def no_model_reason(self, modality: str | None, rule: str | None = None) -> str:
        """Why :meth:`engine_for` found no model: the modality and what each model takes."""
        return self.routes.no_model_reason(modality, rule)

    def describe(self) -> str:
        """``demo 1.0.0, demo-us 1.0.0``: the loaded models and their versions."""
        return ", ".join(f"{e.card.name} {e.card.version}" for e in self.engines)

    def decoder_state(self) -> DecoderState | None:
        """The decoding processes of every model; ``None`` when images are decoded in the
        worker itself."""
        states = [(e.card.name, s) for e in self.engines if (s := e.decoder_state()) is not None]
        if not states:
            return None
        if len(states) == 1:
            return states[0][1]
        return DecoderState(
            all(s.ok for _, s in states), "; ".join(f"{name}: {s.detail}" for name, s in states)
        )

    def close(self) -> None:
        """Stop every model's decoding processes."""
        for engine in self.engines:
            engine.close()
