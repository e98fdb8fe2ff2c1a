"""Receiving without a network: a file written to the spool and recorded as the listener
records it, for tests that drive the pipeline's stages one step at a time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom

from node.db import RecordOutcome, SessionFactory, record_instance
from node.dicom.scp import read_facts
from node.spool import Spool

__all__ = ["receive"]


def receive(spool: Spool, db: SessionFactory, path: Path) -> RecordOutcome:
    """Store the DICOM file at ``path`` in ``spool`` and record the instance in ``db``
    (calling AE ``TEST``), as a C-STORE of it would; what recording it did."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    relative = spool.relative_path(ds.StudyInstanceUID, ds.SOPInstanceUID)
    size = spool.write(relative, [path.read_bytes()])
    facts = read_facts(
        spool.path(relative),
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        calling_ae="TEST",
    )
    return record_instance(db, dataclasses.replace(facts, path=relative, size_bytes=size))
