"""Where the breast is in a mammogram, and the image area of an ultrasound frame.

Both run on a reduced copy of the image (at most 512 pixels on its long side): the
breast is the largest component brighter than the background (:func:`breast_box`), the
side it leans on decides the canonical flip (:func:`chest_wall_side`), and an
ultrasound frame's image area is its largest non-black component (:func:`ultrasound_box`).

The background level is the lower of two three-class Otsu thresholds (background,
tissue, the brightest structures), not the two-class one: on an MLO whose pectoral
muscle is much brighter than the breast tissue, two classes put the tissue with the
background and the crop kept the muscle alone.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from node.imaging.geometry import Box, FloatImage

__all__ = [
    "box_from_mask",
    "breast_box",
    "breast_mask",
    "chest_wall_side",
    "image_area_box",
    "mask_stride",
    "otsu_mask",
    "otsu_threshold",
    "otsu_thresholds",
    "side_from_mask",
    "ultrasound_box",
]

# A side is "decisive" when one half of the image holds this much more of the
# breast mask than the other; below that the tags decide the flip.
_SIDE_MARGIN = 0.1
# Components smaller than this fraction of the image are not a breast.
_MIN_BREAST_FRACTION = 0.01
# Breast finding runs on a copy at most this many pixels on its long side.
_MASK_LONG_SIDE = 512
# Ultrasound pixels at or below this (of full scale) count as black background.
_US_BLACK = 0.02


def _histogram(
    values: npt.ArrayLike, bins: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | float:
    """Counts and bin centres of ``values`` over their range; the value itself when they
    are all equal (any threshold is then that value)."""
    data = np.asarray(values, dtype=np.float64).ravel()
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return low
    hist, edges = np.histogram(data, bins=bins, range=(low, high))
    return hist, (edges[:-1] + edges[1:]) / 2


def otsu_threshold(values: npt.ArrayLike, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (the level that best separates two classes)."""
    histogram = _histogram(values, bins)
    if isinstance(histogram, float):
        return histogram
    hist, centres = histogram
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(hist * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def otsu_thresholds(values: npt.ArrayLike, bins: int = 256) -> tuple[float, float]:
    """The two thresholds that best split ``values`` into three classes (Otsu's
    criterion, the between-class variance, over every pair of histogram bins)."""
    histogram = _histogram(values, bins)
    if isinstance(histogram, float):
        return histogram, histogram
    hist, centres = histogram
    # classes [0, i], (i, j], (j, bins): weights and first moments from cumulative sums
    weight = np.cumsum(hist).astype(np.float64)
    moment = np.cumsum(hist * centres)
    w0, m0 = weight[:, None], moment[:, None]
    w1, m1 = weight[None, :] - w0, moment[None, :] - m0
    w2, m2 = weight[-1] - weight[None, :], moment[-1] - moment[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = m0**2 / w0 + m1**2 / w1 + m2**2 / w2
    i, j = np.indices(score.shape)
    valid = (i < j) & (w0 > 0) & (w1 > 0) & (w2 > 0)
    if not valid.any():  # fewer than three occupied levels: two classes
        single = otsu_threshold(values, bins)
        return single, single
    best = np.unravel_index(int(np.argmax(np.where(valid, score, -np.inf))), score.shape)
    return float(centres[best[0]]), float(centres[best[1]])


def _largest_component_box(
    mask: npt.NDArray[np.bool_], stride: int, shape: tuple[int, int]
) -> Box | None:
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    if sizes[best - 1] < _MIN_BREAST_FRACTION * mask.size:
        return None
    rows, cols = np.nonzero(labels == best)
    top, left = int(rows.min()) * stride, int(cols.min()) * stride
    bottom = min(shape[0], (int(rows.max()) + 1) * stride)
    right = min(shape[1], (int(cols.max()) + 1) * stride)
    return top, left, bottom, right


def mask_stride(shape: tuple[int, ...]) -> int:
    """Step of the reduced copy that breast and image-area finding run on."""
    return max(1, math.ceil(max(shape) / _MASK_LONG_SIDE))


def _small(image: FloatImage) -> tuple[FloatImage, int]:
    stride = mask_stride(image.shape)
    return image[::stride, ::stride], stride


def otsu_mask(small: FloatImage) -> npt.NDArray[np.bool_]:
    """Everything brighter than the background: above the lower three-class threshold."""
    smooth = ndimage.uniform_filter(small, size=5)
    background, _ = otsu_thresholds(smooth)
    return np.asarray(smooth > background)


def breast_mask(image: FloatImage) -> tuple[npt.NDArray[np.bool_], int]:
    """Otsu foreground of a reduced copy of ``image`` and the reduction stride."""
    small, stride = _small(image)
    return otsu_mask(small), stride


def breast_box(image: FloatImage) -> Box:
    """Bounding box of the breast: the largest component above the background level
    (:func:`otsu_mask`); the whole image if there is none."""
    mask, stride = breast_mask(image)
    return box_from_mask(mask, stride, (int(image.shape[0]), int(image.shape[1])))


def box_from_mask(mask: npt.NDArray[np.bool_], stride: int, shape: tuple[int, int]) -> Box:
    box = _largest_component_box(mask, stride, shape) if mask.any() and not mask.all() else None
    return box if box is not None else (0, 0, shape[0], shape[1])


def chest_wall_side(image: FloatImage) -> Literal["left", "right"] | None:
    """Which image edge the breast leans on, or ``None`` when the image is not decisive."""
    mask, _ = breast_mask(image)
    return side_from_mask(mask)


def side_from_mask(mask: npt.NDArray[np.bool_]) -> Literal["left", "right"] | None:
    half = mask.shape[1] // 2
    left, right = float(mask[:, :half].sum()), float(mask[:, mask.shape[1] - half :].sum())
    total = left + right
    if total == 0 or abs(left - right) / total < _SIDE_MARGIN:
        return None
    return "left" if left > right else "right"


def ultrasound_box(image: FloatImage) -> Box:
    """Bounding box of the non-black image area; the whole image if there is none."""
    small, stride = _small(image)
    return image_area_box(small, stride, (int(image.shape[0]), int(image.shape[1])))


def image_area_box(small: FloatImage, stride: int, shape: tuple[int, int]) -> Box:
    # opening removes isolated noise pixels without moving the area's edges
    mask = ndimage.binary_opening(small > _US_BLACK, structure=np.ones((3, 3), dtype=bool))
    box = _largest_component_box(mask, stride, shape) if mask.any() else None
    return box if box is not None else (0, 0, shape[0], shape[1])
