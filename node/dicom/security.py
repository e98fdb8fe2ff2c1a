"""Who may associate with the listener, and DICOM TLS contexts for both directions.

:class:`AssociationPolicy` answers pynetdicom's ``EVT_REQUESTED``: it rejects an
association request from an address outside ``security.allowed_addresses`` or with a
calling AE title outside ``security.allowed_calling_ae_titles`` (PS3.8 9.3.4,
A-ASSOCIATE-RJ) before any presentation context is negotiated.

:func:`server_context` and :func:`client_context` build the ``ssl.SSLContext`` of the
listener and of a destination (PS3.15 B.1, the BCP 195 profile: TLS 1.2 or newer,
certificates checked).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from enum import IntEnum
from typing import Any

import structlog
from pynetdicom import evt

from node.config import ClientTls, SecuritySettings, ServerTls
from node.errors import ConfigError

__all__ = [
    "AssociationPolicy",
    "ClientContext",
    "RejectReason",
    "RejectResult",
    "RejectSource",
    "client_context",
    "server_context",
]

log = structlog.get_logger(__name__)


class RejectResult(IntEnum):
    """A-ASSOCIATE-RJ Result (PS3.8 9.3.4)."""

    PERMANENT = 0x01
    TRANSIENT = 0x02


class RejectSource(IntEnum):
    """A-ASSOCIATE-RJ Source (PS3.8 9.3.4)."""

    SERVICE_USER = 0x01


class RejectReason(IntEnum):
    """A-ASSOCIATE-RJ Reason/Diag. when the source is the service user (PS3.8 9.3.4)."""

    NO_REASON_GIVEN = 0x01
    CALLING_AE_NOT_RECOGNISED = 0x03


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AssociationPolicy:
    """The ``EVT_REQUESTED`` handler that enforces the allow-lists (empty lists allow all)."""

    def __init__(self, settings: SecuritySettings) -> None:
        self._titles = frozenset(settings.allowed_calling_ae_titles)
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n) for n in settings.allowed_addresses
        )

    def address_allowed(self, address: str) -> bool:
        """True when ``address`` lies in an allowed network (or none is configured)."""
        if not self._networks:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self._networks)

    def calling_ae_allowed(self, ae_title: str) -> bool:
        """True when ``ae_title`` is allowed (or no list is configured)."""
        return not self._titles or ae_title.strip() in self._titles

    def handle_requested(self, event: evt.Event) -> None:
        """Reject the request when its source address or calling AE title is not allowed."""
        requestor: Any = event.assoc.requestor
        address = str(requestor.address)
        # the request's own calling AE title: the requestor's is filled in on acceptance
        calling_ae = str(requestor.primitive.calling_ae_title).strip()
        if not self.address_allowed(address):
            self._reject(event, RejectReason.NO_REASON_GIVEN, address, calling_ae, "address")
        elif not self.calling_ae_allowed(calling_ae):
            self._reject(
                event, RejectReason.CALLING_AE_NOT_RECOGNISED, address, calling_ae, "calling AE"
            )

    @staticmethod
    def _reject(
        event: evt.Event, reason: RejectReason, address: str, calling_ae: str, what: str
    ) -> None:
        log.warning(
            "association.rejected",
            address=address,
            calling_ae=calling_ae,
            reason=f"{what} not allowed",
            diagnostic=reason.name.lower(),
        )
        event.assoc.acse.send_reject(RejectResult.PERMANENT, RejectSource.SERVICE_USER, reason)
        event.assoc.kill()  # waits until the A-ASSOCIATE-RJ has left, then ends the thread


class _ListenerContext(ssl.SSLContext):
    """A server context that leaves the handshake to the connection's own thread.

    pynetdicom wraps each accepted socket in the thread that accepts connections; a
    handshake there would make every later client wait for a silent peer. Wrapped
    without it, the handshake runs in the connection's thread
    (:class:`~node.dicom.transport.RequestHandler`), within
    ``security.tls.handshake_timeout``.
    """

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


class ClientContext(ssl.SSLContext):
    """A client context that remembers the sockets it wrapped.

    pynetdicom drops, without closing it, the TLS socket of a connection whose handshake
    failed; the SCU closes the sockets listed here when no association came of them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.sockets: list[ssl.SSLSocket] = []

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        wrapped = super().wrap_socket(sock, *args, **kwargs)
        self.sockets.append(wrapped)
        return wrapped


def _load(what: str, action: Any, *paths: Any) -> None:
    try:
        action(*map(str, paths))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load {what}: {exc}") from exc


def server_context(tls: ServerTls) -> ssl.SSLContext:
    """The listener's TLS context: TLS 1.2+, our certificate, optional client checks;
    sockets it wraps do their handshake when the connection's thread asks for it.

    Raises :class:`ConfigError` when a certificate or key cannot be loaded.
    """
    context = _ListenerContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load("security.tls certificate", context.load_cert_chain, tls.certificate, tls.private_key)
    if tls.ca_certificates is not None:
        _load("security.tls.ca_certificates", context.load_verify_locations, tls.ca_certificates)
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(tls: ClientTls) -> ssl.SSLContext:
    """The TLS context for a destination: TLS 1.2+, its certificate checked, ours if set.

    With ``ca_certificates`` only those CAs are trusted, otherwise the system's store.
    Raises :class:`ConfigError` when a certificate or key cannot be loaded.
    """
    context = ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # certificates and names checked
    if tls.ca_certificates is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load("tls.ca_certificates", context.load_verify_locations, tls.ca_certificates)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = tls.check_hostname
    if tls.certificate is not None and tls.private_key is not None:
        _load("tls certificate", context.load_cert_chain, tls.certificate, tls.private_key)
    return context
