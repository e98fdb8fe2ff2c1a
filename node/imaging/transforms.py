"""Pixel transforms on ``[0, 1]`` images: contrast-limited histogram equalisation,
aspect-preserving resize into the model input, and scaling for display.

Resizing uses torch's antialiased bilinear interpolation, which is what every model was
trained with.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from node.imaging.geometry import FloatImage

__all__ = ["clahe", "fit_longest_side", "resize_and_pad"]


def clahe(
    image: FloatImage, clip_limit: float = 2.0, tiles: tuple[int, int] = (8, 8)
) -> FloatImage:
    """Contrast-limited adaptive histogram equalisation of a ``[0, 1]`` image.

    Each tile's histogram (256 bins) is clipped at ``clip_limit`` times the mean
    bin count, the excess spread evenly, and the tiles' equalisation curves
    blended bilinearly between tile centres. Returns ``float32`` in ``[0, 1]``.
    """
    bins = 256
    rows, cols = image.shape
    ty, tx = min(tiles[0], rows), min(tiles[1], cols)
    th, tw = math.ceil(rows / ty), math.ceil(cols / tx)
    levels = np.clip(np.rint(image * (bins - 1)), 0, bins - 1).astype(np.intp)
    padded = np.pad(levels, ((0, ty * th - rows), (0, tx * tw - cols)), mode="reflect")
    blocks = padded.reshape(ty, th, tx, tw).transpose(0, 2, 1, 3).reshape(ty * tx, th * tw)
    offsets = (np.arange(ty * tx) * bins)[:, None]
    hist = np.bincount((blocks + offsets).ravel(), minlength=ty * tx * bins).reshape(ty * tx, bins)
    limit = max(1.0, clip_limit * th * tw / bins)
    clipped = np.minimum(hist, limit)
    clipped += (hist.sum(axis=1, keepdims=True) - clipped.sum(axis=1, keepdims=True)) / bins
    cdf = np.cumsum(clipped, axis=1)
    curves = (cdf / cdf[:, -1:]).reshape(ty, tx, bins)

    def grid(
        n: int, size: int, count: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        pos = np.clip((np.arange(n) + 0.5) / size - 0.5, 0, count - 1)
        lo = np.floor(pos).astype(np.intp)
        return lo, np.minimum(lo + 1, count - 1), pos - lo

    y0, y1, wy = grid(rows, th, ty)
    x0, x1, wx = grid(cols, tw, tx)
    wy2, wx2 = wy[:, None], wx[None, :]
    top = (
        curves[y0[:, None], x0[None, :], levels] * (1 - wx2)
        + curves[y0[:, None], x1[None, :], levels] * wx2
    )
    bottom = (
        curves[y1[:, None], x0[None, :], levels] * (1 - wx2)
        + curves[y1[:, None], x1[None, :], levels] * wx2
    )
    return np.asarray(np.clip(top * (1 - wy2) + bottom * wy2, 0.0, 1.0), dtype=np.float32)


# --------------------------------------------------------------------------- #
# Resize
# --------------------------------------------------------------------------- #
def resize_and_pad(
    image: FloatImage, height: int, width: int
) -> tuple[FloatImage, tuple[int, int], tuple[int, int]]:
    """Resize keeping the aspect ratio to fit ``height x width``, pad with zeros.

    The image sits at the top-left corner. Returns ``(output, resized_shape, pad)``
    where ``pad = (top, left)`` is always ``(0, 0)`` here but is recorded so that
    :class:`Geometry` does not depend on that choice. Antialiased bilinear.
    """
    rows, cols = image.shape
    scale = min(height / rows, width / cols)
    new_rows = min(height, max(1, round(rows * scale)))
    new_cols = min(width, max(1, round(cols * scale)))
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if (new_rows, new_cols) != (rows, cols):
        tensor = F.interpolate(
            tensor, size=(new_rows, new_cols), mode="bilinear", align_corners=False, antialias=True
        )
    out = np.zeros((height, width), dtype=np.float32)
    out[:new_rows, :new_cols] = tensor[0, 0].numpy()
    return out, (new_rows, new_cols), (0, 0)


def fit_longest_side(image: FloatImage, longest_side: int) -> FloatImage:
    """``image`` scaled (antialiased bilinear) so its longest side is ``longest_side``.

    ``0``, or a size at least the image's, returns it unchanged.
    """
    rows, cols = image.shape
    if longest_side <= 0 or max(rows, cols) <= longest_side:
        return image
    scale = longest_side / max(rows, cols)
    size = (max(1, round(rows * scale)), max(1, round(cols * scale)))
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)
    return np.asarray(resized[0, 0].numpy(), dtype=np.float32)
