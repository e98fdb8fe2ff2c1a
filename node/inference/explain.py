"""Grad-CAM for the malignant class and the regions it marks.

Grad-CAM (Selvaraju et al., 2017) on the last feature map ``A`` (``forward_features``)
with the malignant logit ``y`` (``forward_head``): channel weights
``alpha_k = mean_ij dy/dA_kij``, map ``relu(sum_k alpha_k A_k)``. Only the head
is differentiated, so the map comes from the same forward pass as the
prediction. Members' maps are each scaled to a maximum of 1, brought to the
model input's resolution and averaged with the ensemble weights.

Regions are the connected parts of the map at or above a fraction of its
maximum, each outlined by a closed polygon along pixel edges (so it contains
exactly the part's pixels) and mapped to original image coordinates with the
preprocessing :class:`~node.imaging.geometry.Geometry`.

A region's score puts it on the image's probability scale: ``score = p x s``, with
``p`` the image's calibrated malignancy probability and ``s`` the region's relative
saliency (its peak of the map over the map's maximum, in ``(0, 1]``). The top
region therefore carries exactly ``p``, every other one less, so the image's
probability is the maximum over its regions (``docs/outputs.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import ndimage

from node.imaging.geometry import Geometry
from node.results import Region

__all__ = ["combine_cams", "extract_regions", "grad_cam", "outline"]

# values within this fraction of the map's maximum of a region's peak count as the peak
_PLATEAU = 0.01


def grad_cam(features: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps ``(N, h, w)`` (float32, ``>= 0``) of ``score`` (``(N,)``) over ``features``.

    ``features`` (``(N, K, h, w)``) must require grad and ``score`` depend on it
    through the head only; images are independent (eval mode), so one backward
    pass serves the batch.
    """
    (grads,) = torch.autograd.grad(score.sum(), features)
    alpha = grads.float().mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * features.detach().float()).sum(dim=1))


def combine_cams(
    cams: Sequence[torch.Tensor],
    weights: Sequence[float],
    size: tuple[int, int],
    valid: Sequence[tuple[int, int, int, int]] | None = None,
) -> npt.NDArray[np.float32]:
    """Weighted mean of members' maps at ``size`` (``(H, W)``), each scaled to max 1 first.

    Args:
        cams: per member ``(N, h_m, w_m)``.
        weights: per member, positive.
        size: output ``(H, W)`` (the model input).
        valid: per image ``(top, left, bottom, right)`` of the image content in
            the model input; the map is zeroed outside it (padding).

    Returns ``float32`` ``(N, H, W)`` in ``[0, 1]``.
    """
    total = float(sum(weights))
    out: torch.Tensor | None = None
    for cam, weight in zip(cams, weights, strict=True):
        up = F.interpolate(cam[:, None].float(), size=size, mode="bilinear", align_corners=False)[
            :, 0
        ]
        if valid is not None:
            up = up * _valid_mask(valid, size, up.device)
        peak = up.amax(dim=(1, 2), keepdim=True)
        scaled = torch.where(peak > 0, up / peak.clamp_min(1e-12), torch.zeros_like(up))
        term = scaled * (weight / total)
        out = term if out is None else out + term
    if out is None:
        raise ValueError("no maps to combine")
    return out.clamp(0.0, 1.0).cpu().numpy().astype(np.float32)


def _valid_mask(
    boxes: Sequence[tuple[int, int, int, int]], size: tuple[int, int], device: torch.device
) -> torch.Tensor:
    mask = torch.zeros((len(boxes), *size), device=device)
    for i, (top, left, bottom, right) in enumerate(boxes):
        mask[i, top:bottom, left:right] = 1.0
    return mask


def outline(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Outer boundary of a 4-connected pixel set as closed polygon corners ``(x, y)``.

    Vertices lie on pixel corners and the polygon runs along pixel edges
    (clockwise on screen), so it contains exactly the set's pixels (holes are
    not traced). Collinear vertices are dropped; the first vertex is repeated
    at the end.
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("empty mask")
    padded = np.pad(mask, 1)
    r, c = rows + 1, cols + 1
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp]) -> None:
        for (x0, y0), (x1, y1) in zip(starts.tolist(), ends.tolist(), strict=True):
            edges.setdefault((x0, y0), []).append((x1, y1))

    x, y = cols, rows
    top = ~padded[r - 1, c]
    right = ~padded[r, c + 1]
    bottom = ~padded[r + 1, c]
    left = ~padded[r, c - 1]
    add(np.stack([x[top], y[top]], 1), np.stack([x[top] + 1, y[top]], 1))
    add(np.stack([x[right] + 1, y[right]], 1), np.stack([x[right] + 1, y[right] + 1], 1))
    add(np.stack([x[bottom] + 1, y[bottom] + 1], 1), np.stack([x[bottom], y[bottom] + 1], 1))
    add(np.stack([x[left], y[left] + 1], 1), np.stack([x[left], y[left]], 1))

    # the top edge of the top-most, left-most pixel is on the outer boundary
    start_index = int(np.lexsort((cols, rows))[0])
    start = (int(cols[start_index]), int(rows[start_index]))
    path = [start]
    previous = start
    current = (start[0] + 1, start[1])
    while current != start:
        path.append(current)
        heading = (current[0] - previous[0], current[1] - previous[1])
        options = edges[current]
        if len(options) == 1:
            nxt = options[0]
        else:
            # pinch point: turn away from the interior to stay on the outer boundary
            left_turn = (current[0] + heading[1], current[1] - heading[0])
            nxt = left_turn if left_turn in options else options[0]
        previous, current = current, nxt
    corners = [
        p
        for i, p in enumerate(path)
        if (p[0] - path[i - 1][0], p[1] - path[i - 1][1])
        != (path[(i + 1) % len(path)][0] - p[0], path[(i + 1) % len(path)][1] - p[1])
    ]
    return [*corners, corners[0]]


def _polygon_area(points: npt.NDArray[np.float64]) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 2)


def extract_regions(
    heatmap: npt.NDArray[np.float32],
    geometry: Geometry,
    threshold: float = 0.5,
    *,
    cell: int = 4,
    max_regions: int = 5,
    probability: float = 1.0,
) -> tuple[Region, ...]:
    """Regions of a model-input map, in original image coordinates, highest peak first.

    Args:
        heatmap: ``(H, W)`` map over the model input, values in ``[0, 1]``.
        geometry: how the model input was made from the original image.
        threshold: a cell belongs to a region when its value is at least this
            fraction of the map's maximum (``0 < threshold <= 1``).
        cell: regions are traced on ``cell x cell`` blocks (block maximum) to keep
            polygons short; 1 traces single pixels.
        max_regions: at most this many regions are returned.
        probability: the image's malignancy probability; each region's
            :attr:`~node.results.Region.score` is this times its relative peak.
    """
    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    if not 0.0 <= probability <= 1.0:
        raise ValueError("probability must be in [0, 1]")
    hm = np.asarray(heatmap, dtype=np.float32)
    top_value = float(hm.max()) if hm.size else 0.0
    if top_value <= 0:
        return ()
    height, width = hm.shape
    ch, cw = math.ceil(height / cell), math.ceil(width / cell)
    padded = np.zeros((ch * cell, cw * cell), dtype=np.float32)
    padded[:height, :width] = hm
    blocks = padded.reshape(ch, cell, cw, cell).max(axis=(1, 3))
    labels, count = ndimage.label(blocks >= threshold * top_value)
    regions: list[Region] = []
    for index in range(1, count + 1):
        component = labels == index
        corners = np.asarray(outline(component), dtype=np.float64) * cell
        corners[:, 0] = np.clip(corners[:, 0], 0, width)
        corners[:, 1] = np.clip(corners[:, 1], 0, height)
        pixel_mask = np.kron(component, np.ones((cell, cell), dtype=bool))[:height, :width]
        peak = float(hm[pixel_mask].max())
        # up-sampled maps have flat tops: report the centre of the top plateau
        py, px = np.nonzero(pixel_mask & (hm >= peak - _PLATEAU * top_value))
        polygon = geometry.to_original(corners)
        peak_point = geometry.to_original([[px.mean() + 0.5, py.mean() + 0.5]])[0]
        # the region holding the map's maximum gets exactly 1, so exactly ``probability``
        saliency = 1.0 if peak >= top_value else peak / top_value
        regions.append(
            Region(
                polygon=tuple((float(a), float(b)) for a, b in polygon),
                peak=saliency,
                peak_point=(float(peak_point[0]), float(peak_point[1])),
                area=_polygon_area(polygon),
                score=probability * saliency,
            )
        )
    regions.sort(key=lambda region: region.peak, reverse=True)
    return tuple(regions[:max_regions])
