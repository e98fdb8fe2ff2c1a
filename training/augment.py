"""Augmentations on preprocessed ``(C, H, W)`` tensors in ``[0, 1]``.

They run after the node's preprocessing (crop, canonical flip, resize), so a
model trains on exactly the kind of input it will be served. Each transform is
a pure function of the tensor and a ``torch.Generator``; :class:`Augmenter`
applies them with the probabilities of an :class:`~training.config.AugmentConfig`.

Mammography: flips, small affine moves, elastic deformation, brightness,
contrast and gamma, CLAHE. Ultrasound adds multiplicative speckle noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812

from node.imaging.transforms import clahe as clahe_array
from training.config import AugmentConfig

__all__ = [
    "Augmenter",
    "affine",
    "brightness_contrast",
    "clahe",
    "elastic",
    "speckle",
]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def affine(
    image: torch.Tensor, degrees: float, scale: float, translate: tuple[float, float]
) -> torch.Tensor:
    """Rotate (degrees), zoom (``scale > 1`` enlarges) and shift (fractions of width, height)."""
    angle = math.radians(degrees)
    _, h, w = image.shape
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    # affine_grid works in [-1, 1] on both axes; correct for the aspect ratio
    theta = torch.tensor(
        [
            [cos, -sin * h / w, -2.0 * translate[0]],
            [sin * w / h, cos, -2.0 * translate[1]],
        ],
        dtype=image.dtype,
    )[None]
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    return F.grid_sample(image[None], grid, padding_mode="zeros", align_corners=False)[0]


def elastic(
    image: torch.Tensor, alpha: float, grid: int, generator: torch.Generator
) -> torch.Tensor:
    """Smooth random deformation: a ``grid x grid`` displacement field, bicubically upsampled.

    ``alpha`` is the displacement's standard deviation as a fraction of the image size.
    """
    _, h, w = image.shape
    coarse = torch.randn((1, 2, grid, grid), generator=generator) * (2.0 * alpha)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
    sampling = base + field.permute(0, 2, 3, 1)
    return F.grid_sample(
        image[None], sampling.to(image.dtype), padding_mode="zeros", align_corners=False
    )[0]


def brightness_contrast(
    image: torch.Tensor, brightness: float, contrast: float, gamma: float
) -> torch.Tensor:
    """``clip((x ** gamma - 0.5) * contrast + 0.5 + brightness)`` on non-background pixels.

    Zero (padding, background) stays zero so the breast outline is unchanged.
    """
    inside = image > 0
    out = image.clamp(0, 1) ** gamma
    out = ((out - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)
    return torch.where(inside, out, image)


def clahe(image: torch.Tensor, clip_limit: float = 2.0) -> torch.Tensor:
    """The node's CLAHE (:func:`node.imaging.transforms.clahe`) on every channel."""
    channels = [
        torch.from_numpy(clahe_array(c.numpy().astype("float32"), clip_limit)) for c in image
    ]
    return torch.stack(channels).to(image.dtype)


def speckle(image: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Multiplicative speckle ``x * (1 + sigma * n)``, ``n`` standard normal."""
    noise = torch.randn(image.shape, generator=generator, dtype=image.dtype)
    return (image * (1.0 + sigma * noise)).clamp(0, 1)


class Augmenter:
    """Applies the configured augmentations, each with its probability."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self.config

        def chance(p: float) -> bool:
            return p > 0 and float(torch.rand((), generator=generator)) < p

        if chance(c.hflip):
            image = image.flip(-1)
        if chance(c.vflip):
            image = image.flip(-2)
        if chance(c.affine):
            image = affine(
                image,
                _uniform(generator, -c.degrees, c.degrees),
                _uniform(generator, *c.scale),
                (
                    _uniform(generator, -c.translate, c.translate),
                    _uniform(generator, -c.translate, c.translate),
                ),
            )
        if chance(c.elastic):
            image = elastic(image, c.elastic_alpha, c.elastic_grid, generator)
        if chance(c.clahe):
            image = clahe(image)
        if chance(c.brightness_contrast):
            image = brightness_contrast(
                image,
                _uniform(generator, -c.brightness, c.brightness),
                _uniform(generator, 1 - c.contrast, 1 + c.contrast),
                math.exp(_uniform(generator, -c.gamma, c.gamma)),
            )
        if chance(c.speckle):
            image = speckle(image, c.speckle_sigma, generator)
        return image.contiguous()
