"""Models: the architecture registry, model cards and model folders.

A model folder ``models/<name>/`` holds ``card.yaml`` (validated by
:class:`~node.models.card.ModelCard`) and one ``*.safetensors`` file per ensemble
member; see ``docs/model-cards.md``.
"""
