"""Training, evaluation and export of the models the node serves.

Imports the node's preprocessing and model registry so that training and
serving never drift; the node never imports this package.
"""

__all__: list[str] = []
