"""What the generator is asked for (:class:`SynthOptions`) and what it reports back
(:class:`SynthImage`, one row of ``labels.csv``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "LABELS",
    "MG_VIEWS",
    "Label",
    "Modality",
    "Photometric",
    "Size",
    "SynthImage",
    "SynthOptions",
    "TransferSyntaxName",
    "VoiName",
]

Size = Literal["small", "full"]
Modality = Literal["mg", "us"]
Photometric = Literal["monochrome1", "monochrome2"]
TransferSyntaxName = Literal["explicit", "j2k", "jpegls", "jpeg-lossless", "rle"]
Label = Literal["normal", "benign", "malignant"]
VoiName = Literal["window", "sigmoid", "lut"]

#: Class names in the order of :attr:`SynthOptions.mix`.
LABELS: tuple[Label, Label, Label] = ("malignant", "benign", "normal")

#: The four standard screening views as ``(laterality, view)``, in acquisition order.
MG_VIEWS: tuple[tuple[str, str], ...] = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


@dataclass(frozen=True)
class SynthOptions:
    """How to generate synthetic studies.

    ``size``: ``small`` (512 x 416 pixels, 0.55 mm, for fast tests) or ``full``
    (3328 x 2560 pixels, 0.085 mm: a detector-size mammogram). ``mix``: the
    probabilities of a malignant, a benign and a normal study. ``difficulty``:
    1.0 is the default task; larger values give smaller, fainter lesions, smaller
    values bigger and brighter ones. ``for_processing``, ``tomo``: also write a For
    Processing image and a multi-frame tomosynthesis-like object per study (never
    listed in ``labels.csv``). ``split_series``: one series per view instead of one
    per study. ``drop_view``: leave one view out of every study (``"L-CC"``,
    ``"R-MLO"``, ...). ``voi``: the VOI of For Presentation mammograms: two linear
    windows (``window``; no VOI LUT Function, which then means LINEAR), the same
    windows with VOILUTFunction ``SIGMOID`` (``sigmoid``), or a VOI LUT Sequence
    (``lut``).
    """

    size: Size = "small"
    modality: Modality = "mg"
    photometric: Photometric = "monochrome2"
    transfer_syntax: TransferSyntaxName = "explicit"
    mix: tuple[float, float, float] = (0.35, 0.3, 0.35)
    difficulty: float = 1.0
    for_processing: bool = False
    tomo: bool = False
    split_series: bool = False
    drop_view: str | None = None
    voi: VoiName = "window"

    def __post_init__(self) -> None:
        if self.size not in ("small", "full"):
            raise ValueError(f"size must be 'small' or 'full', not {self.size!r}")
        if self.modality not in ("mg", "us"):
            raise ValueError(f"modality must be 'mg' or 'us', not {self.modality!r}")
        if self.photometric not in ("monochrome1", "monochrome2"):
            raise ValueError(
                f"photometric must be monochrome1 or monochrome2, not {self.photometric!r}"
            )
        if self.transfer_syntax not in ("explicit", "j2k", "jpegls", "jpeg-lossless", "rle"):
            raise ValueError(f"unknown transfer_syntax {self.transfer_syntax!r}")
        if len(self.mix) != 3 or any(p < 0 for p in self.mix) or sum(self.mix) <= 0:
            raise ValueError(f"mix must be three non-negative weights, not {self.mix!r}")
        if not 0.1 <= self.difficulty <= 5.0:
            raise ValueError(f"difficulty must be between 0.1 and 5, not {self.difficulty!r}")
        if self.voi not in ("window", "sigmoid", "lut"):
            raise ValueError(f"voi must be window, sigmoid or lut, not {self.voi!r}")
        if self.drop_view is not None:
            views = {f"{lat}-{view}" for lat, view in MG_VIEWS}
            if self.drop_view.upper() not in views:
                raise ValueError(
                    f"drop_view must be one of {sorted(views)}, not {self.drop_view!r}"
                )

    @property
    def dropped(self) -> tuple[str, str] | None:
        """``(laterality, view)`` of the view to leave out, or None."""
        if self.drop_view is None:
            return None
        lat, view = self.drop_view.upper().split("-")
        return lat, view


@dataclass(frozen=True)
class SynthImage:
    """One generated For Presentation image: a row of ``labels.csv``.

    ``path`` and ``mask_path`` are relative to the output folder (POSIX
    separators). ``bbox`` is ``(x0, y0, x1, y1)`` in pixels: column and row of the
    lesion's first pixel and one past its last (half-open), or None for an image
    without a lesion. ``view`` is ``CC``/``MLO`` for mammograms and ``TRANS``/``SAG``
    (transverse, sagittal probe orientation) for ultrasound. ``density`` is the
    ACR breast density category (``A``-``D``) of the study.
    """

    study_uid: str
    sop_instance_uid: str
    path: str
    laterality: str
    view: str
    label: Label
    lesion_type: str
    bbox: tuple[int, int, int, int] | None
    mask_path: str | None
    density: str = ""
    modality: str = "MG"
