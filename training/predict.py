"""Member outputs on preprocessed images, the way the node computes them.

Each TTA view is applied to the ``[0, 1]`` batch before normalisation
(:func:`node.inference.ensemble.apply_view`), as in
:class:`node.inference.engine.InferenceEngine`, so temperatures and weights fitted
here are the ones the node's arithmetic expects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from node.inference.ensemble import TTAView, apply_view
from training.loop import Normaliser

__all__ = ["view_logits"]


@torch.no_grad()
def view_logits(
    model: nn.Module,
    images: torch.Tensor,
    views: Sequence[TTAView],
    normalise: Normaliser,
    batch_size: int = 32,
) -> npt.NDArray[np.float64]:
    """Logits ``(V, N, C)`` of ``model`` on ``(N, 1, H, W)`` images for every view."""
    model.eval()
    out = []
    for view in views:
        chunks = [
            model(normalise(apply_view(images[i : i + batch_size], view))).float().numpy()
            for i in range(0, images.shape[0], batch_size)
        ]
        out.append(np.concatenate(chunks))
    return np.stack(out).astype(np.float64)
