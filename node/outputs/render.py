"""Heat-map rendering for the Grad-CAM secondary captures: pure numpy and Pillow.

Inputs are a greyscale display image in ``[0, 1]`` (already windowed, bright =
dense), a heat map in ``[0, 1]`` on the same pixel grid, and region outlines as
``(N, 2)`` arrays of ``(x, y)`` = (column, row) in that grid (the DICOM SCOORD
convention). The output is an 8-bit RGB array.

Colour maps are piecewise-linear between a few anchor colours, close enough to
the well-known maps for a heat overlay and free of a plotting dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from node.errors import OutputError

__all__ = [
    "COLORMAPS",
    "Outline",
    "apply_colormap",
    "blend",
    "draw_legend",
    "draw_outlines",
    "render_overlay",
    "resize_for_output",
]


RGB = npt.NDArray[np.uint8]
Float = npt.NDArray[np.float32]

#: Each colour map that :data:`node.config.Colormap` names: anchor colours (0-255) spaced
#: evenly over [0, 1].
COLORMAPS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "jet": (
        (0, 0, 128),
        (0, 0, 255),
        (0, 128, 255),
        (0, 255, 255),
        (128, 255, 128),
        (255, 255, 0),
        (255, 128, 0),
        (255, 0, 0),
        (128, 0, 0),
    ),
    "hot": ((10, 0, 0), (180, 0, 0), (255, 90, 0), (255, 210, 0), (255, 255, 150), (255, 255, 255)),
    "inferno": (
        (0, 0, 4),
        (40, 11, 84),
        (101, 21, 110),
        (159, 42, 99),
        (212, 72, 66),
        (245, 125, 21),
        (250, 193, 39),
        (252, 255, 164),
    ),
    "turbo": (
        (48, 18, 59),
        (70, 107, 227),
        (40, 187, 236),
        (49, 242, 153),
        (162, 252, 60),
        (237, 208, 58),
        (251, 128, 34),
        (210, 49, 5),
        (122, 4, 3),
    ),
}

_OUTLINE_COLOUR = (255, 255, 255)
_OUTLINE_SHADOW = (0, 0, 0)
_LEGEND_BACKGROUND = (24, 24, 24)
_LEGEND_TEXT = (255, 255, 255)
_WARNING_TEXT = (255, 200, 0)


@dataclass(frozen=True)
class Outline:
    """A closed region outline to draw, ``points`` as ``(N, 2)`` ``(x, y)``, with a label."""

    points: npt.NDArray[np.float64]
    label: str = ""


def apply_colormap(values: npt.ArrayLike, name: str) -> RGB:
    """Map ``values`` in ``[0, 1]`` (clipped) to RGB with the named colour map."""
    try:
        anchors = np.asarray(COLORMAPS[name], dtype=np.float64)
    except KeyError:
        raise OutputError(f"colormap: unknown colour map {name!r}") from None
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    positions = np.linspace(0.0, 1.0, len(anchors))
    channels = [np.interp(v, positions, anchors[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def blend(gray: Float, heat: Float, colormap: str, opacity: float) -> RGB:
    """Blend a colour-mapped ``heat`` over ``gray``.

    The weight of the colour at each pixel is ``opacity * heat``, so cold areas
    keep the plain image and the hottest ones show the colour at ``opacity``.
    """
    if gray.shape != heat.shape:
        raise OutputError(f"heatmap: shape {heat.shape} differs from the image's {gray.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise OutputError(f"opacity: must be in [0, 1], not {opacity}")
    base = np.repeat(np.clip(gray, 0.0, 1.0)[..., None] * 255.0, 3, axis=-1)
    h = np.clip(heat, 0.0, 1.0)
    colour = apply_colormap(h, colormap).astype(np.float64)
    alpha = (opacity * h)[..., None]
    mixed: npt.NDArray[np.float64] = base * (1.0 - alpha) + colour * alpha
    return np.rint(mixed).astype(np.uint8)


def resize_for_output(
    gray: Float, heat: Float, outlines: Sequence[Outline], longest_side: int
) -> tuple[Float, Float, list[Outline]]:
    """Scale image, heat map and outlines so the longest side is ``longest_side``.

    ``longest_side == 0`` keeps the original size.
    """
    if longest_side < 0:
        raise OutputError(f"sc_size: must be >= 0, not {longest_side}")
    rows, cols = gray.shape
    if longest_side == 0 or max(rows, cols) == longest_side:
        return gray, heat, list(outlines)
    scale = longest_side / max(rows, cols)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))  # Pillow: (width, height)

    def _resize(arr: Float) -> Float:
        image = Image.fromarray(np.asarray(arr, dtype=np.float32))
        return np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)

    sx, sy = size[0] / cols, size[1] / rows
    scaled = [Outline(o.points * np.array([sx, sy]), o.label) for o in outlines]
    return _resize(gray), _resize(heat), scaled


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def draw_outlines(rgb: RGB, outlines: Sequence[Outline]) -> RGB:
    """Draw each outline (closed) with a dark shadow so it shows on any background."""
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(rgb.shape[:2]) / 400))
    font = _font(max(10, round(max(rgb.shape[:2]) / 50)))
    for outline in outlines:
        points = [(float(x), float(y)) for x, y in outline.points]
        if len(points) < 2:
            continue
        if points[0] != points[-1]:
            points.append(points[0])
        shadow = [(x + width, y + width) for x, y in points]
        draw.line(shadow, fill=_OUTLINE_SHADOW, width=width + 1, joint="curve")
        draw.line(points, fill=_OUTLINE_COLOUR, width=width, joint="curve")
        if outline.label:
            x = min(p[0] for p in points)
            y = min(p[1] for p in points)
            text_height = draw.textbbox((0, 0), outline.label, font=font)[3]
            draw.text(
                (x, max(0.0, y - text_height - 2 * width)),
                outline.label,
                fill=_OUTLINE_COLOUR,
                font=font,
                stroke_width=1,
                stroke_fill=_OUTLINE_SHADOW,
            )
    return np.asarray(image, dtype=np.uint8)


def draw_legend(rgb: RGB, lines: Sequence[str], warning: str, colormap: str) -> RGB:
    """Append a legend band below the image: text lines, a warning line, a colour bar.

    The band is added under the image rather than drawn over it, so no tissue is
    hidden.
    """
    rows, cols = rgb.shape[:2]
    size = max(10, round(max(rows, cols) / 55))
    font = _font(size)
    line_height = round(size * 1.35)
    bar_height = max(6, size // 2)
    pad = max(4, size // 2)
    band_height = pad * 3 + line_height * (len(lines) + 1) + bar_height
    band = Image.new("RGB", (cols, band_height), _LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(band)
    y = pad
    for text in lines:
        draw.text((pad, y), text, fill=_LEGEND_TEXT, font=font)
        y += line_height
    draw.text((pad, y), warning, fill=_WARNING_TEXT, font=font)
    y += line_height + pad
    bar_width = max(1, cols - 2 * pad)
    ramp = np.linspace(0.0, 1.0, bar_width)[None, :].repeat(bar_height, axis=0)
    band.paste(Image.fromarray(apply_colormap(ramp, colormap)), (pad, y))
    return np.concatenate([rgb, np.asarray(band, dtype=np.uint8)], axis=0)


def render_overlay(
    gray: Float,
    heat: Float,
    outlines: Sequence[Outline],
    *,
    colormap: str,
    opacity: float,
    longest_side: int,
    legend: Sequence[str],
    warning: str,
) -> RGB:
    """The whole secondary capture picture: resize, blend, outline, legend."""
    gray, heat, scaled = resize_for_output(gray, heat, outlines, longest_side)
    rgb = blend(gray, heat, colormap, opacity)
    rgb = draw_outlines(rgb, scaled)
    return draw_legend(rgb, legend, warning, colormap)
