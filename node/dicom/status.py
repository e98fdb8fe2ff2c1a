"""DIMSE status codes the node returns or interprets, by name (PS3.4 B.2.3, PS3.7 C).

Handlers return these constants, never raw numbers.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CANNOT_UNDERSTAND",
    "DATASET_DOES_NOT_MATCH_SOP_CLASS",
    "DUPLICATE_SOP_INSTANCE",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "SUCCESS",
    "describe",
    "is_success",
]

SUCCESS: Final = 0x0000
"""The instance is stored durably and recorded."""

OUT_OF_RESOURCES: Final = 0xA700
"""Refused: Out of Resources (C-STORE). The spool is over its disk watermark."""

DATASET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
"""Error: Data Set Does Not Match SOP Class. Required UIDs missing or different from the
command set."""

CANNOT_UNDERSTAND: Final = 0xC000
"""Error: Cannot Understand. The data set could not be parsed."""

PROCESSING_FAILURE: Final = 0x0110
"""Failure: Processing Failure. The spool or the database could not take the instance."""

DUPLICATE_SOP_INSTANCE: Final = 0x0111
"""Failure: Duplicate SOP Instance (PS3.7 C.4.2). The SOP Instance UID is already recorded
under another Study Instance UID; the instance is not stored."""

_NAMES: Final = {
    SUCCESS: "Success",
    OUT_OF_RESOURCES: "Out of Resources",
    DATASET_DOES_NOT_MATCH_SOP_CLASS: "Data Set Does Not Match SOP Class",
    CANNOT_UNDERSTAND: "Cannot Understand",
    PROCESSING_FAILURE: "Processing Failure",
    DUPLICATE_SOP_INSTANCE: "Duplicate SOP Instance",
}


def is_success(status: int) -> bool:
    """True for Success (0x0000) and the Warning range (0x0001, 0xB000-0xBFFF)."""
    return status == SUCCESS or status == 0x0001 or 0xB000 <= status <= 0xBFFF


def describe(status: int) -> str:
    """A readable name for ``status``, e.g. ``"0xA700 Out of Resources"``."""
    name = _NAMES.get(status)
    if name is None and 0xC000 <= status <= 0xCFFF:
        name = "Cannot Understand"
    if name is None and 0xA700 <= status <= 0xA7FF:
        name = "Out of Resources"
    return f"0x{status:04X} {name or 'Unknown'}"
