"""Which model infers which image, from the model cards alone.

A node serves several model folders (``models`` in the settings). An image goes to the
model its eligibility rule names (``eligibility.rules[].model``), else to the first
model whose card lists the image's modality (``modalities`` in ``card.yaml``)::

    routes = Routes([mammography_card, ultrasound_card])
    routes.card_for("US").name        # the ultrasound model
    routes.card_for("CT")             # None: no model accepts CT

:class:`~node.inference.modelset.ModelSet` routes loaded models with it, and
``breast-node check-config`` the cards of the configured folders.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.config import EligibilityRule
from node.errors import ModelError
from node.models.card import ModelCard

__all__ = ["Routes"]


class Routes:
    """The cards in the order the settings list their folders, and the rules' choices.

    Raises :class:`ModelError` when two cards share a name (a result names its model,
    and its object UIDs are derived from that name) or a rule names a model that is not
    among them.
    """

    def __init__(self, cards: Sequence[ModelCard], rules: Sequence[EligibilityRule] = ()) -> None:
        self.cards: tuple[ModelCard, ...] = tuple(cards)
        names = [card.name for card in self.cards]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ModelError(
                f"two model folders hold a model named {twice[0]!r}; each model in "
                "models must have its own name (results and their UIDs are named after it)"
            )
        self._by_name = {card.name: card for card in self.cards}
        self._rule_model: dict[str, str] = {}
        for rule in rules:
            if rule.model is None:
                continue
            if rule.model not in self._by_name:
                raise ModelError(
                    f"eligibility rule {rule.name!r} names model {rule.model!r}, which is not "
                    f"loaded (loaded: {', '.join(names) or 'none'})"
                )
            self._rule_model[rule.name] = rule.model

    def card_for(self, modality: str | None, rule: str | None = None) -> ModelCard | None:
        """The card of the model that infers an image of ``modality`` matched by
        eligibility rule ``rule``: the rule's model if it names one (and that model
        accepts the modality), else the first model whose card lists the modality;
        ``None`` when none does."""
        wanted = (modality or "").strip().upper()
        named = self._rule_model.get(rule or "")
        if named is not None:
            card = self._by_name[named]
            return card if wanted in card.modalities else None
        return next((card for card in self.cards if wanted in card.modalities), None)

    def no_model_reason(self, modality: str | None, rule: str | None = None) -> str:
        """Why :meth:`card_for` found no model: the modality and what the models take."""
        shown = (modality or "").strip().upper() or "(none)"
        named = self._rule_model.get(rule or "")
        if named is not None:
            accepts = ", ".join(self._by_name[named].modalities)
            return (
                f"modality {shown} is not one that model {named} (named by eligibility rule "
                f"{rule!r}) accepts ({accepts})"
            )
        return f"no model accepts modality {shown} ({self.accepted()})"

    def accepted(self) -> str:
        """``demo: MG; demo-us: US``: what each model accepts."""
        if not self.cards:
            return "no model loaded"
        return "; ".join(f"{card.name}: {', '.join(card.modalities)}" for card in self.cards)
