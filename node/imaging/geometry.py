"""Where a model input came from: the exact, invertible map between an original image
and the model input made from it.

Coordinates follow the DICOM SCOORD convention: ``(x, y) = (column, row)`` as floats,
``(0, 0)`` the top-left corner of the top-left pixel, so pixel ``(row r, column c)``
covers ``[c, c + 1) x [r, r + 1)`` and its centre is ``(c + 0.5, r + 0.5)``. In that
convention every preprocessing step is an exact affine map, so anything computed on the
model input (a heat map, a polygon) maps back to original image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Box", "FloatImage", "Geometry"]

FloatImage = npt.NDArray[np.float32]

Box = tuple[int, int, int, int]
"""``(top, left, bottom, right)`` in pixels, half-open: rows ``top:bottom``."""


@dataclass(frozen=True)
class Geometry:
    """How an original image became a model input; exact and invertible.

    Attributes:
        original_shape: ``(rows, columns)`` of the original image.
        crop: ``(top, left, bottom, right)`` of the kept region in original
            pixels, half-open.
        flipped: the cropped region was mirrored left-right.
        resized_shape: ``(rows, columns)`` of the crop after resizing.
        pad: ``(top, left)`` offset of the resized crop inside the model input.
        input_shape: ``(rows, columns)`` of the model input.
    """

    original_shape: tuple[int, int]
    crop: Box
    flipped: bool
    resized_shape: tuple[int, int]
    pad: tuple[int, int]
    input_shape: tuple[int, int]

    def __post_init__(self) -> None:
        top, left, bottom, right = self.crop
        rows, cols = self.original_shape
        if not (0 <= top < bottom <= rows and 0 <= left < right <= cols):
            raise ValueError(
                f"crop {self.crop} is not inside an image of shape {self.original_shape}"
            )
        if min(self.resized_shape) < 1:
            raise ValueError(f"resized shape {self.resized_shape} is empty")
        if (
            self.pad[0] < 0
            or self.pad[1] < 0
            or self.pad[0] + self.resized_shape[0] > self.input_shape[0]
            or self.pad[1] + self.resized_shape[1] > self.input_shape[1]
        ):
            raise ValueError(f"resized crop with pad {self.pad} does not fit {self.input_shape}")

    @property
    def crop_shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the cropped region."""
        top, left, bottom, right = self.crop
        return bottom - top, right - left

    @property
    def scale(self) -> tuple[float, float]:
        """``(sy, sx)``: model pixels per original pixel along rows and columns."""
        ch, cw = self.crop_shape
        return self.resized_shape[0] / ch, self.resized_shape[1] / cw

    def to_model(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map ``(N, 2)`` original ``(x, y)`` coordinates to model-input coordinates."""
        pts = _points(points)
        top, left, _, _ = self.crop
        sy, sx = self.scale
        x = pts[:, 0] - left
        if self.flipped:
            x = self.crop_shape[1] - x
        out = np.empty_like(pts)
        out[:, 0] = x * sx + self.pad[1]
        out[:, 1] = (pts[:, 1] - top) * sy + self.pad[0]
        return out

    def to_original(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map ``(N, 2)`` model-input ``(x, y)`` coordinates to original ``(x, y)``.

        The exact inverse of :meth:`to_model`. Points in the padding map outside
        the crop; callers clip if they need to.
        """
        pts = _points(points)
        top, left, _, _ = self.crop
        sy, sx = self.scale
        x = (pts[:, 0] - self.pad[1]) / sx
        if self.flipped:
            x = self.crop_shape[1] - x
        out = np.empty_like(pts)
        out[:, 0] = x + left
        out[:, 1] = (pts[:, 1] - self.pad[0]) / sy + top
        return out

    def map_to_original(self, heatmap: npt.ArrayLike) -> FloatImage:
        """Resample a map over the model input onto the original pixel grid.

        Args:
            heatmap: ``(h, w)`` array covering the whole model input (any
                resolution: a feature map or the input itself); cell ``(i, j)``
                covers an ``H/h x W/w`` block of model pixels.

        Returns:
            ``float32`` array of shape :attr:`original_shape`; bilinear inside the
            crop, 0 outside it.
        """
        return self.map_to_grid(heatmap, self.original_shape)

    def map_to_grid(self, heatmap: npt.ArrayLike, shape: tuple[int, int]) -> FloatImage:
        """:meth:`map_to_original` onto a scaled copy of the original: a ``shape`` grid
        covering the whole original image (e.g. a reduced picture of it)."""
        hm = np.asarray(heatmap, dtype=np.float32)
        if hm.ndim != 2 or min(hm.shape) < 1:
            raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {hm.shape}")
        rows, cols = int(shape[0]), int(shape[1])
        # the grid cells' centres in original pixel coordinates
        ys = (np.arange(rows, dtype=np.float64) + 0.5) * (self.original_shape[0] / rows)
        xs = (np.arange(cols, dtype=np.float64) + 0.5) * (self.original_shape[1] / cols)
        top, left, bottom, right = self.crop
        inside_rows = np.flatnonzero((ys >= top) & (ys < bottom))
        inside_cols = np.flatnonzero((xs >= left) & (xs < right))
        out = np.zeros((rows, cols), dtype=np.float32)
        if inside_rows.size == 0 or inside_cols.size == 0:
            return out
        ys, xs = ys[inside_rows], xs[inside_cols]
        model_y = self.to_model(np.stack([np.zeros_like(ys), ys], axis=1))[:, 1]
        model_x = self.to_model(np.stack([xs, np.zeros_like(xs)], axis=1))[:, 0]
        h, w = hm.shape
        ys_index = model_y * (h / self.input_shape[0]) - 0.5
        xs_index = model_x * (w / self.input_shape[1]) - 0.5
        cropped = _interp_axis(_interp_axis(hm, ys_index, axis=0), xs_index, axis=1)
        out[inside_rows[0] : inside_rows[-1] + 1, inside_cols[0] : inside_cols[-1] + 1] = cropped
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "original_shape": list(self.original_shape),
            "crop": list(self.crop),
            "flipped": self.flipped,
            "resized_shape": list(self.resized_shape),
            "pad": list(self.pad),
            "input_shape": list(self.input_shape),
        }


def _points(points: npt.ArrayLike) -> npt.NDArray[np.float64]:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1 and pts.shape[0] == 2:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    return pts


def _interp_axis(
    values: npt.NDArray[np.float32], coords: npt.NDArray[np.float64], axis: int
) -> npt.NDArray[np.float32]:
    """Linear interpolation of ``values`` at fractional indices along one axis (edges clamped)."""
    n = values.shape[axis]
    c = np.clip(coords, 0.0, n - 1)
    i0 = np.floor(c).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    frac = (c - i0).astype(np.float32)
    shape = [1, 1]
    shape[axis] = -1
    frac = frac.reshape(shape)
    result = np.take(values, i0, axis=axis) * (1 - frac) + np.take(values, i1, axis=axis) * frac
    return np.asarray(result, dtype=np.float32)
