"""SCU helpers: C-ECHO a peer and C-STORE files to it (admin commands, tests, results)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any, Protocol

import structlog
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AddressInformation, AssociationSocket

from node.config import ClientTls
from node.dicom import status
from node.dicom.contexts import add_scu_contexts
from node.dicom.security import ClientContext, client_context
from node.errors import SendError

__all__ = [
    "EchoAnswer",
    "Peer",
    "SendReport",
    "StoreOutcome",
    "echo",
    "expand_paths",
    "probe",
    "send_files",
    "store_datasets",
]

log = structlog.get_logger(__name__)

_MAX_CONTEXTS = 128  # presentation contexts per association (PS3.8 9.3.2.2)


@dataclass(frozen=True)
class Peer:
    """A remote Application Entity and how we introduce ourselves to it.

    ``timeout`` (seconds) applies to association, DIMSE and network waits unless
    ``acse_timeout``, ``dimse_timeout`` or ``network_timeout`` set one of them.
    ``max_pdu``: largest PDU we receive, bytes (0: unlimited). ``tls``: DICOM TLS
    settings, ``None`` for plain TCP.
    """

    host: str
    port: int
    ae_title: str
    calling_ae_title: str = "BREAST_AI"
    timeout: float = 30.0
    acse_timeout: float | None = None
    dimse_timeout: float | None = None
    network_timeout: float | None = None
    max_pdu: int = 0
    tls: ClientTls | None = None

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def tls_args(self) -> tuple[SSLContext, str] | None:
        """pynetdicom's ``tls_args`` for this peer (``None``: plain TCP)."""
        if self.tls is None:
            return None
        return client_context(self.tls), self.tls.server_hostname or self.host


@dataclass(frozen=True)
class StoreOutcome:
    """The answer to one C-STORE: the DIMSE ``status``, or ``error`` when there was none."""

    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True for a Success or Warning status."""
        return self.status is not None and status.is_success(self.status)


class SendObserver(Protocol):
    """Told what :func:`send_files` does, e.g. to show progress."""

    def start(self, files: Sequence[Path]) -> None:
        """The DICOM files about to be sent (the others are skipped)."""

    def sent(self, path: Path, *, failed: bool) -> None:
        """``path`` was sent (``failed``: the peer refused it, or no answer came)."""


@dataclass
class SendReport:
    """What :func:`send_files` did: counts, each failure with its reason, non-DICOM files."""

    sent: int = 0
    bytes: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


class _RequestorAE(AE):
    """An AE that closes the socket of a connection attempt that failed.

    pynetdicom 3.0 shuts down such a socket without closing it (``shutdown`` of an
    unconnected socket raises first), which leaks one file descriptor per attempt:
    a node retrying an unreachable PACS for days would run out of them. The same holds
    for the TLS socket of a failed handshake (kept by :class:`ClientContext`).
    """

    def __init__(self, ae_title: str) -> None:
        super().__init__(ae_title=ae_title)
        self._raw_sockets: list[socket.socket] = []
        self._tls_contexts: list[ClientContext] = []

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[SSLContext, str] | None,
    ) -> AssociationSocket:
        sock = super()._create_socket(assoc, address, tls_args)
        if sock.socket is not None:
            self._raw_sockets.append(sock.socket)
        if tls_args is not None and isinstance(tls_args[0], ClientContext):
            self._tls_contexts.append(tls_args[0])
        return sock

    def associate(self, *args: Any, **kwargs: Any) -> Association:
        assoc = super().associate(*args, **kwargs)
        if not assoc.is_established:
            for raw in self._raw_sockets:
                raw.close()
            for context in self._tls_contexts:
                for wrapped in context.sockets:
                    wrapped.close()
        self._raw_sockets.clear()
        self._tls_contexts.clear()
        return assoc


def _ae(peer: Peer) -> AE:
    ae = _RequestorAE(peer.calling_ae_title)
    ae.connection_timeout = peer.acse_timeout or peer.timeout
    ae.acse_timeout = peer.acse_timeout or peer.timeout
    ae.dimse_timeout = peer.dimse_timeout or peer.timeout
    ae.network_timeout = peer.network_timeout or peer.timeout
    ae.maximum_pdu_size = peer.max_pdu
    return ae


def store_datasets(peer: Peer, datasets: Sequence[Dataset]) -> list[StoreOutcome]:
    """C-STORE ``datasets`` to ``peer`` over one association, in Explicit VR Little Endian.

    Proposes one presentation context per SOP class sent (at most 128), each with
    Explicit VR Little Endian only. Returns one outcome per dataset, in order; after an
    abort the remaining ones carry the error. Raises :class:`SendError` when the
    association is not established (unreachable, rejected, or no context accepted).
    """
    sop_classes = sorted({str(ds.SOPClassUID) for ds in datasets})
    if len(sop_classes) > _MAX_CONTEXTS:
        raise SendError(f"{len(sop_classes)} SOP classes do not fit in one association")
    ae = _ae(peer)
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        max_pdu=peer.max_pdu,
        tls_args=peer.tls_args(),
    )
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "no answer or refused"
        raise SendError(f"no association with {peer} ({why})")
    outcomes: list[StoreOutcome] = []
    try:
        for ds in datasets:
            if not assoc.is_established:
                outcomes.append(StoreOutcome(None, "association aborted"))
                continue
            try:
                result = assoc.send_c_store(ds)
            except (ValueError, AttributeError, RuntimeError) as exc:
                outcomes.append(StoreOutcome(None, f"not sent: {exc}"))
                continue
            if "Status" not in result:
                outcomes.append(
                    StoreOutcome(None, "no response (association aborted or timed out)")
                )
                continue
            code = int(result.Status)
            error = None if status.is_success(code) else f"status {status.describe(code)}"
            outcomes.append(StoreOutcome(code, error))
    finally:
        if assoc.is_established:
            assoc.release()
    return outcomes


def echo(peer: Peer) -> int:
    """C-ECHO ``peer``; returns the DIMSE status. Raises :class:`SendError` if unreachable."""
    ae = _ae(peer)
    ae.add_requested_context(Verification)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=peer.tls_args())
    if not assoc.is_established:
        raise SendError(f"no association with {peer}")
    try:
        result = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in result:
        raise SendError(f"no C-ECHO response from {peer}")
    return int(result.Status)


@dataclass(frozen=True)
class EchoAnswer:
    """How far a C-ECHO got: the association was rejected (an A-ASSOCIATE-RJ came back),
    or established and the C-ECHO answered with ``status`` (``None``: no answer)."""

    rejected: bool
    established: bool
    status: int | None = None


def probe(peer: Peer, tls_context: SSLContext | None = None) -> EchoAnswer:
    """C-ECHO ``peer`` and say how far it got; never raises for the peer's behaviour.

    ``tls_context``: speak DICOM TLS with this client context (for probing the node's own
    listener, whose certificate the caller has no reason to check); otherwise
    ``peer.tls``.
    """
    ae = _ae(peer)
    ae.add_requested_context(Verification)
    tls_args = (tls_context, peer.host) if tls_context is not None else peer.tls_args()
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        return EchoAnswer(rejected=assoc.is_rejected, established=False)
    try:
        result = assoc.send_c_echo()
    finally:
        assoc.release()
    answered = int(result.Status) if "Status" in result else None
    return EchoAnswer(rejected=False, established=True, status=answered)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named directly plus every file under named folders, sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            files.append(path)
    return files


def send_files(
    peer: Peer,
    files: Sequence[Path],
    progress: SendObserver | None = None,
) -> SendReport:
    """C-STORE ``files`` to ``peer`` as they are on disk (no transcoding).

    ``progress`` hears of the DICOM files about to be sent, then of each one sent.

    Files that are not DICOM are listed in the report's ``skipped``; instances the peer
    refuses (non-success status) in ``failed``. Raises :class:`SendError` when no association can
    be established.
    """
    report = SendReport()
    headers: list[tuple[Path, str, str]] = []
    for path in files:
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            headers.append((path, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
        except (InvalidDicomError, AttributeError, OSError):
            report.skipped.append(path)
    if progress is not None:
        progress.start([path for path, _, _ in headers])
    for batch in _batches(headers):
        ae = _ae(peer)
        add_scu_contexts(ae, {(sop_class, syntax) for _, sop_class, syntax in batch})
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=peer.tls_args())
        if not assoc.is_established:
            raise SendError(f"no association with {peer}")
        try:
            for path, _, _ in batch:
                reason = _store_one(assoc, path)
                if reason is None:
                    report.sent += 1
                    report.bytes += os.path.getsize(path)
                else:
                    report.failed.append((path, reason))
                if progress is not None:
                    progress.sent(path, failed=reason is not None)
                if not assoc.is_established:
                    raise SendError(f"association with {peer.ae_title} was aborted")
        finally:
            if assoc.is_established:
                assoc.release()
    return report


def _store_one(assoc: Association, path: Path) -> str | None:
    try:
        result = assoc.send_c_store(dcmread(path))
    except (ValueError, AttributeError) as exc:
        return str(exc)
    if "Status" not in result:
        return "no response (association aborted or timed out)"
    code = int(result.Status)
    return None if status.is_success(code) else status.describe(code)


def _batches(headers: list[tuple[Path, str, str]]) -> list[list[tuple[Path, str, str]]]:
    """Split files so each association needs at most 128 presentation contexts."""
    batches: list[list[tuple[Path, str, str]]] = []
    contexts: set[tuple[str, str]] = set()
    for item in headers:
        pair = (item[1], item[2])
        if not batches or (pair not in contexts and len(contexts) >= _MAX_CONTEXTS):
            batches.append([])
            contexts = set()
        contexts.add(pair)
        batches[-1].append(item)
    return batches
