"""Reading result objects back: files by kind and the content tree of an SR."""

from __future__ import annotations

from collections.abc import Iterator

import pydicom
from pydicom.dataset import Dataset

from tests.outputs.conftest import Built

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def read(entry: Built, kind: str, failure: bool = False) -> list[Dataset]:
    objects = entry.failure if failure else entry.objects
    return [pydicom.dcmread(entry.files[o.sop_instance_uid]) for o in objects if o.kind == kind]


def walk(items: Dataset | list[Dataset]) -> Iterator[Dataset]:
    """Every content item below ``items`` (depth first)."""
    for item in items if isinstance(items, list) else [items]:
        for child in item.get("ContentSequence", []):
            yield child
            yield from walk(child)


def concept(item: Dataset) -> str:
    return (
        str(item.ConceptNameCodeSequence[0].CodeValue) if "ConceptNameCodeSequence" in item else ""
    )


def code_value(item: Dataset) -> str:
    return str(item.ConceptCodeSequence[0].CodeValue)


def items_named(tree: Dataset | list[Dataset], code: str) -> list[Dataset]:
    """Every content item below ``tree`` whose concept name has code value ``code``."""
    return [item for item in walk(tree) if concept(item) == code]


def numbers(tree: Dataset | list[Dataset], code: str) -> list[float]:
    """The values of the NUM items named ``code`` below ``tree``."""
    return [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in items_named(tree, code)
        if item.get("ValueType") == "NUM"
    ]
