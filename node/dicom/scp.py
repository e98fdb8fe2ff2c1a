"""Our Storage SCP: receive C-STORE, write the bytes durably, record them, answer.

The C-STORE handler never decodes pixel data. pynetdicom streams the data set, exactly as
received, into a file in the spool's ``tmp/`` (with file meta; an
:class:`~node.spool.IncomingFile`, which keeps the spool's watermark while it grows); the
handler reads a handful of header attributes from it (stopping before Pixel Data), fsyncs
it (most of it is on disk by then: the file starts its writeback while it grows), renames
it into the spool and fsyncs the folder, records the instance in the database, and only
then answers Success.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import AE, _config, evt
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.exc import SQLAlchemyError

from node.config import Settings
from node.db import InstanceFacts, RecordOutcome, SessionFactory, record_instance
from node.db.queue import unreferenced_files
from node.dicom import status
from node.dicom.contexts import SupportedContexts, add_scp_contexts
from node.dicom.pending import PendingConnections
from node.dicom.security import AssociationPolicy, server_context
from node.dicom.transport import ListenerLimits, PduLimits, RequestHandler, receive_into_spool
from node.errors import SpoolFullError, StorageError
from node.imaging.dataset import laterality_of, view_of
from node.locks import study_lock
from node.spool import IncomingFile, Spool

__all__ = ["StorageSCP", "read_facts"]

log = structlog.get_logger(__name__)

_HEADER_KEYWORDS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "AccessionNumber",
    "Modality",
    "ImageLaterality",
    "Laterality",
    "ViewPosition",
    "ViewCodeSequence",
    "BodyPartExamined",
    "PresentationIntentType",
    "NumberOfFrames",
    "SpecificCharacterSet",
]
_HEADER_TAGS = [Tag(keyword) for keyword in _HEADER_KEYWORDS]


class DataSetError(ValueError):
    """The received data set cannot be parsed (Cannot Understand)."""


class MissingUIDError(ValueError):
    """The data set lacks a required UID or contradicts the command (Does Not Match)."""


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip() or None


class _StrictReader(io.BufferedReader):
    """A file reader that raises where the parser would silently run past the end.

    pydicom is lenient: a skipped element longer than the data, or a truncated value,
    just ends the data set (with a warning). Here both mean the data set was cut short.
    """

    def __init__(self, raw: io.RawIOBase, size: int) -> None:
        super().__init__(raw)
        self._size = size

    def read(self, size: int | None = -1, /) -> bytes:
        out = super().read(size)
        if size is not None and size > 0 and 0 < len(out) < size:
            raise DataSetError(f"data set ends inside an element ({len(out)} of {size} bytes)")
        return out

    def seek(self, offset: int, whence: int = 0, /) -> int:
        position = super().seek(offset, whence)
        if position > self._size:
            raise DataSetError("an element's length runs past the end of the data set")
        return position


def read_header(path: Path) -> Dataset:
    """Parse the header attributes the node needs from a DICOM file, without pixel data.

    Raises :class:`DataSetError` when the file is not a parsable data set.
    """
    try:
        with _StrictReader(io.FileIO(path, "r"), path.stat().st_size) as fp:
            ds = dcmread(fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            for keyword in _HEADER_KEYWORDS:  # force conversion now, inside the try
                ds.get(keyword)
    except Exception as exc:
        raise DataSetError(f"cannot parse data set: {exc}") from exc
    return ds


def read_facts(
    path: Path, *, sop_class_uid: str, sop_instance_uid: str, calling_ae: str
) -> InstanceFacts:
    """The header facts of a received file; checks them against the C-STORE command.

    Raises :class:`DataSetError` (unparsable) or :class:`MissingUIDError`.
    """
    ds = read_header(path)
    for keyword in _HEADER_KEYWORDS[:4]:
        if keyword in ds and ds[keyword].VR != "UI":  # e.g. a UID that claims to be a sequence
            raise DataSetError(f"{keyword} has VR {ds[keyword].VR}, not UI")
    try:
        uids = {kw: _text(ds, kw) for kw in _HEADER_KEYWORDS[:4]}
        missing = [kw for kw, value in uids.items() if not value]
        if missing:
            raise MissingUIDError(f"data set lacks {', '.join(missing)}")
        if uids["SOPInstanceUID"] != sop_instance_uid or uids["SOPClassUID"] != sop_class_uid:
            raise MissingUIDError("data set SOP Class/Instance UID differs from the command")
        frames = ds.get("NumberOfFrames")
        return InstanceFacts(
            study_uid=str(uids["StudyInstanceUID"]),
            series_uid=str(uids["SeriesInstanceUID"]),
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=sop_class_uid,
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            calling_ae=calling_ae,
            path="",
            size_bytes=0,
            accession_number=_text(ds, "AccessionNumber"),
            modality=_text(ds, "Modality"),
            laterality=laterality_of(ds) or None,
            view=view_of(ds) or None,
            body_part=_text(ds, "BodyPartExamined"),
            presentation_intent=_text(ds, "PresentationIntentType"),
            number_of_frames=int(frames) if frames not in (None, "") else 1,
        )
    except MissingUIDError:
        raise
    except Exception as exc:  # a value that does not convert (bad IS, broken sequence...)
        raise DataSetError(f"cannot read header attributes: {exc}") from exc


class StorageSCP:
    """The node's DICOM listener: Verification and Storage SCP.

    C-STORE statuses (see :mod:`node.dicom.status`): Success when the instance is on
    disk and in the database (also for a resent instance); Out of Resources (A700) when
    the spool is over its watermark, or would be with the data set, or its file system
    is full (the data set is then read to its end and dropped, never written past the
    watermark); Data Set Does Not Match SOP Class (A900) when UIDs
    are missing or contradict the command; Cannot Understand (C000) when the data set
    cannot be parsed; Duplicate SOP Instance (0111) when the SOP Instance UID is already
    recorded under another study (nothing is stored); Processing Failure (0110) when the
    disk or database fails (a file written for an instance the database could not record
    is removed again, unless a row names it).

    Associations from addresses or calling AE titles outside the ``security`` allow-lists
    are rejected (:class:`~node.dicom.security.AssociationPolicy`); with ``security.tls``
    the listener speaks DICOM TLS only. Connections are admitted within the ``node``
    limits (request time and size, pending connections, PDU size and time; see
    :mod:`node.dicom.transport`).
    """

    def __init__(self, settings: Settings, spool: Spool, session_factory: SessionFactory):
        self.settings = settings
        self.spool = spool
        self.session_factory = session_factory
        self._server: ThreadedAssociationServer | None = None
        self._pending: PendingConnections | None = None

    @property
    def port(self) -> int:
        """The TCP port listened on (useful when configured as 0)."""
        if self._server is None:
            raise RuntimeError("the SCP is not running")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start listening on ``node.host:node.port`` in background threads."""
        node = self.settings.node
        ae = AE(ae_title=node.ae_title)
        ae.maximum_associations = node.max_associations
        ae.maximum_pdu_size = node.announced_pdu
        ae.acse_timeout = node.acse_timeout
        ae.dimse_timeout = node.dimse_timeout
        ae.network_timeout = node.network_timeout
        add_scp_contexts(ae)
        # Receive each data set straight into a file (event.dataset_path) instead of
        # memory: the write overlaps the network transfer and the handler only has to
        # fsync and rename it. The file is an IncomingFile in the spool's tmp/ folder.
        _config.STORE_RECV_CHUNKED_DATASET = True
        receive_into_spool()
        security = self.settings.security
        tls = security.tls
        pending = PendingConnections(node.max_pending_connections, node.association_request_timeout)
        limits = ListenerLimits(
            pending=pending,
            largest_request=node.largest_association_request,
            handshake_timeout=tls.handshake_timeout if tls else node.association_request_timeout,
            pdu=PduLimits(largest=node.largest_pdu, timeout=node.pdu_timeout),
            spool=self.spool,
        )
        server = ae.start_server(
            (node.host, node.port),
            block=False,
            ssl_context=server_context(tls) if tls else None,
            evt_handlers=[
                (evt.EVT_REQUESTED, AssociationPolicy(security).handle_requested),
                (evt.EVT_C_ECHO, self.handle_echo),
                (evt.EVT_C_STORE, self.handle_store),
            ],
        )
        if server is None:  # block=False always returns the running server
            raise RuntimeError("pynetdicom returned no server")
        # two costs pynetdicom pays per association and per PDU, made small: copying
        # ~170 supported contexts, and reading each PDU 4 KiB at a time
        server.contexts = SupportedContexts(server.contexts)
        server.RequestHandlerClass = RequestHandler.with_limits(limits)
        # each connection's thread lives as long as its association
        server.daemon_threads = True
        self._server = server
        self._pending = pending

    def stop(self) -> None:
        """Stop listening; connections still waiting for their association request are
        closed, associations in progress run to their end."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._pending is not None:
            self._pending.close()
            self._pending = None

    def bind(self, event: evt.NotificationEvent, handler: Callable[[evt.Event], None]) -> None:
        """Add a notification handler (e.g. the association audit) to the running server."""
        if self._server is None:
            raise RuntimeError("the SCP is not running")
        self._server.bind(event, handler)

    def handle_echo(self, event: evt.Event) -> int:
        """C-ECHO: always Success."""
        return status.SUCCESS

    def handle_store(self, event: evt.Event) -> int:
        """C-STORE: store durably, record, and answer with a named status."""
        request: Any = event.request
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        sop_instance_uid = str(request.AffectedSOPInstanceUID or "")
        bound = log.bind(calling_ae=calling_ae, sop_instance_uid=sop_instance_uid)
        incoming = getattr(request, "_dataset_file", None)
        if isinstance(incoming, IncomingFile) and incoming.refusal is not None:
            # refused while it arrived: nothing of it is on disk any more
            refusal = incoming.refusal
            answer = (
                status.OUT_OF_RESOURCES
                if isinstance(refusal, SpoolFullError)
                else status.PROCESSING_FAILURE
            )
            bound.warning(
                "store.refused",
                status=status.describe(answer),
                reason=str(refusal),
                bytes_dropped=incoming.dropped,
            )
            return answer
        try:
            self.spool.check_space()
        except SpoolFullError as exc:
            bound.warning(
                "store.refused", status=status.describe(status.OUT_OF_RESOURCES), reason=str(exc)
            )
            return status.OUT_OF_RESOURCES
        except StorageError as exc:
            bound.error("store.failed", reason=str(exc))
            return status.OUT_OF_RESOURCES
        try:
            return self._store(event, request, calling_ae, bound)
        except Exception:  # never let a bug abort the sender's association
            bound.exception("store.failed")
            return status.PROCESSING_FAILURE

    def _store(self, event: evt.Event, request: Any, calling_ae: str, bound: Any) -> int:
        # pynetdicom wrote the data set, as received, with file meta, to a temporary file
        received = event.dataset_path
        try:
            facts = read_facts(
                received,
                sop_class_uid=str(request.AffectedSOPClassUID),
                sop_instance_uid=str(request.AffectedSOPInstanceUID),
                calling_ae=calling_ae,
            )
        except MissingUIDError as exc:
            bound.warning(
                "store.rejected",
                status=status.describe(status.DATASET_DOES_NOT_MATCH_SOP_CLASS),
                reason=str(exc),
            )
            return status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        except DataSetError as exc:
            bound.warning(
                "store.rejected", status=status.describe(status.CANNOT_UNDERSTAND), reason=str(exc)
            )
            return status.CANNOT_UNDERSTAND
        bound = bound.bind(study_uid=facts.study_uid)

        relative = self.spool.relative_path(facts.study_uid, facts.sop_instance_uid)
        try:  # the fsync, the longest step, before the lock: no one else has this file
            self.spool.settle(received)
        except StorageError as exc:
            return _processing_failure(bound, str(exc))
        # the file is placed and its row committed under the study's lock, under which
        # alone a received file is ever deleted (purge, a failed or refused duplicate)
        with study_lock(self.spool.root, facts.study_uid):
            existed = self.spool.path(relative).exists()
            try:
                size = self.spool.adopt(relative, received)
            except StorageError as exc:
                return _processing_failure(bound, str(exc))
            facts = replace(facts, path=relative, size_bytes=size)
            try:
                outcome = record_instance(
                    self.session_factory, facts, late_policy=self.settings.completion.late_policy
                )
            except SQLAlchemyError as exc:
                self._discard_unrecorded(relative, bound, existed=existed)
                return _processing_failure(bound, f"database: {type(exc).__name__}")
            if outcome is RecordOutcome.CONFLICT:
                return self._refuse_conflict(relative, bound, existed=existed)
        bound.info(
            "instance.stored",
            outcome=outcome.value,
            bytes=size,
            modality=facts.modality,
            transfer_syntax=facts.transfer_syntax_uid,
        )
        return status.SUCCESS

    def _discard_unrecorded(self, relative: str, bound: Any, *, existed: bool) -> None:
        """Remove a file placed for an instance that was not recorded, unless a row names
        it. Call under the study's lock, with ``existed``: whether the file was there
        before it was placed. When it was not, no row can name it (rows of this file are
        made under the same lock) and it goes; when it was (the same instance acknowledged
        before), it goes only if the database says no row names it: an unrecorded file
        costs space, a deleted acknowledged one loses an image."""
        try:
            if not existed or unreferenced_files(self.session_factory, [relative]):
                self.spool.discard(relative)
        except (SQLAlchemyError, StorageError) as exc:
            bound.warning("store.file_kept", reason=f"{type(exc).__name__}: {exc}")

    def _refuse_conflict(self, relative: str, bound: Any, *, existed: bool) -> int:
        """Duplicate SOP Instance: the UID is recorded under another study (see
        :func:`node.db.queue.record_instance`); nothing is kept of this one."""
        self._discard_unrecorded(relative, bound, existed=existed)
        bound.warning(
            "store.refused",
            status=status.describe(status.DUPLICATE_SOP_INSTANCE),
            reason="the SOP Instance UID is recorded under another study",
        )
        return status.DUPLICATE_SOP_INSTANCE


def _processing_failure(bound: Any, reason: str) -> int:
    """Log why the spool or the database could not take the instance; Processing Failure."""
    bound.error("store.failed", status=status.describe(status.PROCESSING_FAILURE), reason=reason)
    return status.PROCESSING_FAILURE
