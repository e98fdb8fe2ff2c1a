"""Presentation contexts: what our SCP accepts and how our SCU proposes."""

from __future__ import annotations

import copy
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

__all__ = ["STORAGE_SOP_CLASSES", "SupportedContexts", "add_scp_contexts", "add_scu_contexts"]

#: Every standard storage SOP class (MG For Presentation/Processing, breast tomosynthesis
#: and projection, US, Secondary Capture, SR, ...).
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    str(cx.abstract_syntax) for cx in AllStoragePresentationContexts
)

_UNCOMPRESSED = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))


def add_scp_contexts(ae: AE) -> None:
    """Accept Verification and every storage SOP class in every transfer syntax.

    Compressed data (JPEG 2000, JPEG-LS, JPEG lossless, RLE, deflate, ...) is accepted and
    stored as sent: the node never transcodes what it receives.
    """
    ae.add_supported_context(Verification, _UNCOMPRESSED)
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)


class SupportedContexts(list[PresentationContext]):
    """The listener's supported contexts, cheap to copy for each association.

    pynetdicom gives every incoming association a ``deepcopy`` of the server's contexts.
    Ours are every storage SOP class in every transfer syntax (about 170 contexts, 7,600
    UIDs), and a deep copy re-creates each UID: some 45 ms of interpreter time per
    association, paid at once when several senders associate together. UIDs are
    immutable strings, so a copy of each context with its own transfer syntax list is
    as safe as the deep copy.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context in self:
            twin = copy.copy(context)
            # the list is the only mutable part; its UIDs are immutable str
            twin._transfer_syntax = list(context._transfer_syntax)
            copies.append(twin)
        return copies


def add_scu_contexts(ae: AE, pairs: set[tuple[str, str]]) -> None:
    """Propose one context per (SOP class, transfer syntax) that will be sent.

    Each context offers the file's own transfer syntax first, then explicit and implicit
    VR little endian for uncompressed files, so the file goes out as it is on disk.
    At most 128 contexts fit in one association (PS3.8 9.3.2.2).
    """
    for sop_class, syntax in sorted(pairs):
        offered = [syntax]
        if syntax in _UNCOMPRESSED:
            offered += [s for s in _UNCOMPRESSED if s != syntax]
        ae.add_requested_context(sop_class, offered)
