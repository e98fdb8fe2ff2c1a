"""Deterministic UIDs for result objects.

A result that is rebuilt (after a crash, or because a send failed) must carry the
same Series and SOP Instance UIDs as the first time, so that the archive replaces
rather than duplicates it. Every UID the node writes is therefore derived, never
drawn at random: :func:`derive_uid` hashes the facts that identify an object
(study, result revision, object kind, source image, model name and version) below
:data:`UID_PREFIX`. The model's name keeps apart the objects of a study whose parts
two models inferred (a mammography and an ultrasound model, both at version 1.0.0).

:data:`UID_PREFIX` is the project's UID root: the integer form of a name-based
UUID (ISO/IEC 9834-8, version 5, name ``breast-ai-node/dicom-uid-root`` in the
URL namespace) under the ``2.25`` arc, which needs no registration (PS3.5 B.2).
pydicom's :func:`~pydicom.uid.generate_uid` appends the first digits of the
SHA-512 of the entropy sources, filling the UID to its 64-character limit.
"""

from __future__ import annotations

from pydicom.uid import UID, generate_uid

from node.errors import OutputError

__all__ = ["UID_PREFIX", "child_uid", "derive_uid", "device_uid"]

#: The project's UID root (``2.25.`` + UUID 5 of the project name), with the trailing dot.
UID_PREFIX = "2.25.295933115973813657051112673716132427324."


def derive_uid(
    study_uid: str,
    revision: int,
    kind: str,
    model_version: str,
    source_uid: str = "",
    *,
    model_name: str = "",
) -> UID:
    """The UID of one result object (or series), the same on every rebuild.

    ``kind`` names the object (``sr``, ``mgcad``, ``sc``, ``sc-series``, ...);
    ``source_uid`` is the SOP Instance UID of the image it was made from, empty for
    study-level objects. ``revision`` counts the results made for the study (a new
    revision, e.g. after late instances, gives new UIDs). ``model_name`` and
    ``model_version``: the model that made the object.
    """
    if not study_uid:
        raise OutputError("derive_uid: study_uid is empty")
    if not kind:
        raise OutputError("derive_uid: kind is empty")
    if revision < 0:
        raise OutputError(f"derive_uid: revision must be >= 0, not {revision}")
    # A separator that cannot occur in UIDs or kinds keeps ("1.2", "3") != ("1", ".23").
    sources = [study_uid, str(revision), kind, source_uid, model_version, model_name]
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["\x1f".join(sources)])


def child_uid(parent_uid: str, *parts: str) -> UID:
    """A UID derived from another object's UID (tracking identifiers inside an SR)."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["\x1f".join((parent_uid, *parts))])


def device_uid(model_name: str, model_version: str) -> UID:
    """The Device Observer UID of a model (TID 1004): one per model name and version."""
    return generate_uid(
        prefix=UID_PREFIX, entropy_srcs=["\x1f".join(("device", model_name, model_version))]
    )
