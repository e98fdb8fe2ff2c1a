"""Typed, frozen settings loaded from YAML, with environment overrides.

The composition root (the CLI) calls :func:`load_settings` once and passes the
resulting :class:`Settings` down; nothing else reads files or the environment
for configuration.

Rules:

* Unknown keys and bad values are rejected with a :class:`~node.errors.ConfigError`
  whose message names the file (or environment variable) and the dotted key.
* Relative paths written in a config file resolve against that file's folder.
  Built-in defaults (used for keys the file leaves out) resolve against the
  working directory the node was started from.
* Any setting can be overridden by an environment variable named
  ``BREAST_NODE__<SECTION>__<KEY>`` (double underscores separate levels, names
  are case-insensitive), for example ``BREAST_NODE__NODE__PORT=11113``. The
  value is parsed as YAML, so ``[a, b]`` gives a list and ``11113`` an integer.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation, UltrasoundImageStorage
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from node.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "ClientTls",
    "Colormap",
    "CompletionSettings",
    "Destination",
    "DicomDestination",
    "DicomwebAuth",
    "DicomwebDestination",
    "EligibilityRule",
    "EligibilitySettings",
    "FolderDestination",
    "HttpSettings",
    "InferenceSettings",
    "LoggingSettings",
    "NodeSettings",
    "OutputKind",
    "OutputSettings",
    "QueueSettings",
    "RetentionSettings",
    "SecuritySettings",
    "SendingSettings",
    "ServerTls",
    "Settings",
    "StorageSettings",
    "WorkerSettings",
    "check_ae_title",
    "load_settings",
]

ENV_PREFIX = "BREAST_NODE__"

_SECRET_WORDS = ("password", "secret", "token", "passphrase")


# --------------------------------------------------------------------------- #
# Value types
# --------------------------------------------------------------------------- #
def check_ae_title(value: str) -> str:
    """Validate a DICOM Application Entity title (PS3.5 table 6.2-1, VR AE).

    At most 16 characters of the default character repertoire, no backslash and
    no control characters; leading and trailing spaces are not significant and
    are removed. Returns the normalised title.
    """
    if not isinstance(value, str):
        raise ValueError("AE title must be a string")
    stripped = value.strip(" ")
    if not stripped:
        raise ValueError("AE title must not be empty")
    if len(stripped) > 16:
        raise ValueError(f"AE title {stripped!r} is longer than 16 characters")
    for char in stripped:
        code = ord(char)
        if char == "\\":
            raise ValueError(f"AE title {stripped!r} contains a backslash")
        if code < 0x20 or code == 0x7F:
            raise ValueError(f"AE title {stripped!r} contains a control character")
        if code > 0x7E:
            raise ValueError(
                f"AE title {stripped!r} has a character outside the DICOM default repertoire"
            )
    return stripped


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    value = value.expanduser()
    if value.is_absolute():
        return value
    base = (info.context or {}).get("base_dir") or Path.cwd()
    return (Path(base) / value).resolve()


AETitle = Annotated[str, AfterValidator(check_ae_title)]
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


def _cwd_path(relative: str) -> Path:
    return (Path.cwd() / relative).resolve()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- #
# Sections
# --------------------------------------------------------------------------- #
class NodeSettings(_Section):
    """The DICOM listener (our Storage SCP)."""

    ae_title: AETitle = "BREAST_AI"
    host: str = Field(default="0.0.0.0", min_length=1)
    port: Port = 11112
    max_associations: int = Field(default=16, strict=True, ge=1, le=1000)
    max_pdu: int = Field(default=0, strict=True, ge=0, le=2**32 - 1)
    """Largest P-DATA-TF PDU we announce to a peer (Maximum Length Received, PS3.8 D.1),
    bytes; 0 announces ``largest_pdu``. Large PDUs are fastest for mammograms."""
    largest_pdu: int = Field(default=64 * 1024**2, strict=True, ge=4096, le=2**32 - 1)
    """Largest PDU the listener reads after association, bytes (the PDU's length field),
    whatever was announced: one whose header announces more gets an A-ABORT before any of
    it is read, so a peer cannot make the node hold more than this per connection."""
    pdu_timeout: float = Field(default=60.0, gt=0, le=3600)
    """Seconds to receive one whole PDU once its first bytes have come; a peer that stalls
    or trickles longer is disconnected."""
    association_request_timeout: float = Field(default=10.0, gt=0, le=3600)
    """Seconds from a TCP connection (its TLS handshake included) until its whole
    A-ASSOCIATE-RQ has arrived; a connection that takes longer is closed."""
    largest_association_request: int = Field(
        default=256 * 1024, strict=True, ge=1024, le=16 * 1024**2
    )
    """Largest A-ASSOCIATE-RQ PDU read, bytes; one announcing more gets an A-ABORT unread."""
    max_pending_connections: int = Field(default=32, strict=True, ge=1, le=10000)
    """Connections accepted whose A-ASSOCIATE-RQ has not arrived yet; when one more comes,
    the oldest is closed. They do not count against ``max_associations``."""
    acse_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds to wait for association messages (request, release) from the peer."""
    dimse_timeout: float = Field(default=60.0, gt=0, le=3600)
    """Seconds to wait for the next DIMSE message (C-STORE, C-ECHO) from the peer."""
    network_timeout: float = Field(default=120.0, gt=0, le=3600)
    """Seconds an idle connection is kept before it is closed."""

    @model_validator(mode="after")
    def _announced_within_read(self) -> NodeSettings:
        if self.max_pdu > self.largest_pdu:
            raise ValueError("max_pdu must not exceed largest_pdu (the most the listener reads)")
        return self

    @property
    def announced_pdu(self) -> int:
        """The Maximum Length Received announced to peers, bytes."""
        return self.max_pdu or self.largest_pdu


class ServerTls(_Section):
    """DICOM TLS on our listener (PS3.15 B.1, BCP 195): certificate, key, client checks."""

    certificate: ConfigPath
    """PEM certificate (chain) the node presents."""
    private_key: ConfigPath
    """PEM private key of ``certificate`` (unencrypted; keep it readable by the service only)."""
    ca_certificates: ConfigPath | None = None
    """PEM bundle of the CAs whose client certificates are accepted (mutual TLS)."""
    require_client_cert: bool = False
    """Refuse connections without a client certificate signed by ``ca_certificates``."""
    handshake_timeout: float = Field(default=10.0, gt=0, le=600)
    """Seconds a client's TLS handshake may take. It runs on the connection's own thread
    (never the one that accepts connections), within ``node.association_request_timeout``."""

    @model_validator(mode="after")
    def _client_ca(self) -> ServerTls:
        if self.require_client_cert and self.ca_certificates is None:
            raise ValueError("require_client_cert needs ca_certificates")
        return self


def _check_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from exc


IPNetwork = Annotated[str, AfterValidator(_check_network)]


class SecuritySettings(_Section):
    """Who may associate with the listener, and DICOM TLS for it."""

    allowed_calling_ae_titles: tuple[AETitle, ...] = ()
    """Calling AE titles allowed to associate; empty: any. Others are rejected (A-ASSOCIATE-RJ,
    calling AE title not recognised)."""
    allowed_addresses: tuple[IPNetwork, ...] = ()
    """Source IP addresses or CIDR networks allowed to associate; empty: any."""
    tls: ServerTls | None = None
    """``null``: plain TCP. Otherwise the listener only speaks TLS."""


class StorageSettings(_Section):
    """Where received instances and the study queue live."""

    database: str = Field(default_factory=lambda: f"sqlite:///{_cwd_path('var/node.db')}")
    spool: ConfigPath = Field(default_factory=lambda: _cwd_path("var/spool"))
    min_free_bytes: int = Field(default=2 * 1024**3, strict=True, ge=0)
    """The reserve: refuse instances (Out of Resources) when the spool's file system has
    less free, checked when a C-STORE arrives and before each MiB of it is written."""
    max_used_percent: float = Field(default=95.0, gt=0, le=100)
    """Refuse instances (Out of Resources) that would make the spool's file system fuller."""
    database_busy_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """SQLite: how long a writer waits for another writer's lock before failing."""

    @field_validator("database")
    @classmethod
    def _database_url(cls, value: str, info: ValidationInfo) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not an SQLAlchemy database URL: {value!r}") from exc
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            path = Path(url.database).expanduser()
            if not path.is_absolute():
                base = (info.context or {}).get("base_dir") or Path.cwd()
                path = (Path(base) / path).resolve()
            url = url.set(database=str(path))
        return url.render_as_string(hide_password=False)


class CompletionSettings(_Section):
    """When a study counts as complete."""

    quiet_seconds: float = Field(default=60.0, gt=0, le=86400)
    """A study is complete this many seconds after its last instance arrived."""
    force_seconds: float = Field(default=5400.0, gt=0, le=7 * 86400)
    """A study still receiving this many seconds after its first instance is forced."""
    force_action: Literal["process", "discard", "ignore"] = "process"
    """What a forced study does: complete now, be skipped (discarded), or keep waiting."""
    late_policy: Literal["reprocess", "ignore"] = "reprocess"
    """An instance for a study whose completion was decided: start a new generation, or
    store it and do nothing else."""
    check_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    """How often the completion job looks for complete studies."""


class QueueSettings(_Section):
    """How pipeline workers claim studies from the shared queue."""

    lease_seconds: float = Field(default=600.0, gt=0, le=86400)
    """A claimed study returns to the queue if its worker does not renew within this time."""


class WorkerSettings(_Section):
    """The inference worker: how often it looks for queued studies and how many it takes."""

    check_interval_seconds: float = Field(default=2.0, gt=0, le=3600)
    """How often the worker looks for queued studies (it then works until none are left)."""
    batch_studies: int = Field(default=4, strict=True, ge=1, le=64)
    """Most queued studies claimed and inferred together (their images share batches)."""
    pipeline: bool = True
    """Claim, decode and preprocess the next studies while the current ones are inferred."""
    enabled: bool = True
    """``serve`` runs an inference worker; false leaves inference to ``breast-node worker``
    processes sharing the database and spool (the node still receives and sends)."""
    max_attempts: int = Field(default=3, strict=True, ge=1, le=100)
    """Claims for inference of one study generation before it is failed instead. A study is
    claimed again when its worker stopped without finishing it (crashed, killed, lost its
    lease): an image that kills the process would otherwise make a restarted node claim
    it, and die, forever. The failed study gets its failure report; ``breast-node retry``
    queues it again with fresh attempts."""
    nice: int = Field(default=10, strict=True, ge=0, le=19)
    """CPU priority a ``breast-node worker`` process gives itself (Unix nice value, 0-19):
    inference is heavy and can wait, receiving cannot, so on a shared machine the
    listener's process gets the CPU first. Not applied to a worker inside ``serve``."""


class SendingSettings(_Section):
    """Delivery of result objects to the destinations, with retries."""

    max_attempts: int = Field(default=8, strict=True, ge=1, le=100)
    """Attempts per object and destination before the study is failed."""
    backoff_initial_seconds: float = Field(default=30.0, gt=0, le=86400)
    """Wait after the first failed attempt; doubled after each further one."""
    backoff_max_seconds: float = Field(default=900.0, gt=0, le=7 * 86400)
    """Longest wait between two attempts."""
    check_interval_seconds: float = Field(default=2.0, gt=0, le=3600)
    """How often the sender looks for results that are due."""
    batch_studies: int = Field(default=8, strict=True, ge=1, le=256)
    """Most studies delivered in one pass (one association per DICOM destination)."""
    acse_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds to wait for the destination to accept or release an association."""
    dimse_timeout: float = Field(default=60.0, gt=0, le=3600)
    """Seconds to wait for each C-STORE response."""
    network_timeout: float = Field(default=60.0, gt=0, le=3600)
    """Seconds without any network traffic before the association is aborted."""
    max_pdu: int = Field(default=0, strict=True, ge=0)
    """Largest PDU we receive from the destination, in bytes; 0 means unlimited."""

    @model_validator(mode="after")
    def _backoff_order(self) -> SendingSettings:
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("backoff_max_seconds must not be below backoff_initial_seconds")
        return self


def _check_uid(value: str) -> str:
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", value) or len(value) > 64:
        raise ValueError(f"{value!r} is not a DICOM UID")
    return value


UID = Annotated[str, AfterValidator(_check_uid)]
Upper = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9 _]+$")]

MG_FOR_PRESENTATION = str(DigitalMammographyXRayImageStorageForPresentation)
US_IMAGE = str(UltrasoundImageStorage)


class EligibilityRule(_Section):
    """One rule: a study is inferred when the images that match some rule cover its views.

    An image matches a rule when every criterion the rule names holds for it; an empty
    list means "any".
    """

    name: Name
    calling_ae_titles: tuple[AETitle, ...] = ()
    modalities: tuple[Upper, ...] = ()
    sop_classes: tuple[UID, ...] = ()
    body_parts: tuple[Upper, ...] = ()
    required_views: tuple[Upper, ...] = ()
    allow_multiframe: bool = False
    model: Name | None = None
    """The model (its card's ``name``) that infers the images this rule matches; unset:
    the first model in ``models`` whose card lists the image's modality."""


def _default_rules() -> tuple[EligibilityRule, ...]:
    return (
        EligibilityRule(name="mammography", modalities=("MG",), sop_classes=(MG_FOR_PRESENTATION,)),
        EligibilityRule(
            name="breast-ultrasound",
            modalities=("US",),
            sop_classes=(US_IMAGE,),
            body_parts=("BREAST",),
        ),
    )


class EligibilitySettings(_Section):
    """Which complete studies are inferred; the others are skipped with a reason."""

    rules: tuple[EligibilityRule, ...] = Field(default_factory=_default_rules)
    without_model: Literal["refuse", "skip"] = "refuse"
    """A rule that can match images of a modality no loaded model accepts: ``refuse``
    to start (the error names the rule), or start and ``skip`` such images (each
    study's result lists them with the reason; a study left with no image fails with
    it). A rule's modalities are those it names, else those of the SOP classes it
    names, else every modality the node infers (MG, US)."""

    @model_validator(mode="after")
    def _unique_rule_names(self) -> EligibilitySettings:
        names = [rule.name for rule in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("eligibility rule names must be unique")
        return self


OutputKind = Literal["sr", "mgcad", "sc", "gsps"]
"""A result object: TID 1500 SR, Mammography CAD SR, Grad-CAM secondary captures, GSPS
(see :mod:`node.outputs`)."""

Colormap = Literal["jet", "hot", "inferno", "turbo"]
"""Colour maps of the heat-map secondary captures (see :mod:`node.outputs.render`)."""
_ALL_KINDS: tuple[OutputKind, ...] = ("sr", "mgcad", "sc", "gsps")


def _unique_kinds(value: tuple[OutputKind, ...]) -> tuple[OutputKind, ...]:
    if len(set(value)) != len(value):
        raise ValueError("each object kind may be listed once")
    return value


OutputKinds = Annotated[tuple[OutputKind, ...], AfterValidator(_unique_kinds)]


class _DestinationBase(_Section):
    name: Name
    objects: OutputKinds = _ALL_KINDS
    """Which result objects this destination receives (of those that are built)."""


class ClientTls(_Section):
    """DICOM TLS towards a destination: whom we trust and, for mutual TLS, who we are."""

    ca_certificates: ConfigPath | None = None
    """PEM bundle of the CAs that may sign the destination's certificate; ``null``: the
    system's trust store."""
    certificate: ConfigPath | None = None
    """PEM client certificate, for destinations that require one (with ``private_key``)."""
    private_key: ConfigPath | None = None
    server_hostname: str | None = None
    """Name the destination's certificate must carry; ``null``: the destination's ``host``."""
    check_hostname: bool = True
    """Check the certificate's name (its signature is always checked)."""

    @model_validator(mode="after")
    def _key_pair(self) -> ClientTls:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        return self


class DicomDestination(_DestinationBase):
    """A DICOM Storage SCP (usually the PACS) that receives our results."""

    ae_title: AETitle
    host: str = Field(min_length=1)
    port: Port
    tls: ClientTls | None = None
    """``null``: plain TCP; otherwise results go over DICOM TLS."""


class FolderDestination(_DestinationBase):
    """A folder that receives our result files (for sites without a PACS, and demos)."""

    folder: ConfigPath


class DicomwebAuth(_Section):
    """How the node authenticates to a DICOMweb server: HTTP Basic or a bearer token."""

    username: str | None = Field(default=None, min_length=1)
    password: str | None = None
    """With ``username``: HTTP Basic. Masked in logs and ``check-config``."""
    token: str | None = Field(default=None, min_length=1)
    """``Authorization: Bearer <token>``. Masked in logs and ``check-config``."""

    @model_validator(mode="after")
    def _one_scheme(self) -> DicomwebAuth:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.token is not None and self.username is not None:
            raise ValueError("give either username and password or token, not both")
        if self.token is None and self.username is None:
            raise ValueError("give username and password, or token")
        return self


class DicomwebDestination(_DestinationBase):
    """A DICOMweb server that receives our results with STOW-RS (PS3.18 10.5): Orthanc's
    DICOMweb plugin, dcm4chee, cloud DICOM stores."""

    dicomweb: AnyHttpUrl
    """The service root, e.g. ``http://pacs:8042/dicom-web``; results are POSTed to
    ``<root>/studies``."""
    auth: DicomwebAuth | None = None
    """``null``: no authentication."""
    ca_certificates: ConfigPath | None = None
    """PEM bundle of the CAs that may sign an ``https`` server's certificate; ``null``:
    the system's trust store. The certificate is always checked."""
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Time limit for connecting and for each read of one STOW-RS request."""


def _destination_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        for key in ("folder", "dicomweb"):
            if key in value:
                return key
        return "dicom"
    if isinstance(value, FolderDestination):
        return "folder"
    return "dicomweb" if isinstance(value, DicomwebDestination) else "dicom"


Destination = Annotated[
    Annotated[DicomDestination, Tag("dicom")]
    | Annotated[FolderDestination, Tag("folder")]
    | Annotated[DicomwebDestination, Tag("dicomweb")],
    Discriminator(_destination_kind),
]
"""A result destination: DICOM (``ae_title``/``host``/``port``), ``folder`` or
``dicomweb`` (STOW-RS)."""


class InferenceSettings(_Section):
    """How the model runs: device, batching, precision, TTA and explanations."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when a GPU is present, else CPU."""
    batch_size: int = Field(default=4, strict=True, ge=1, le=256)
    """Images per forward pass (across the studies being inferred); bounds memory."""
    tta: Literal["card", "none", "flip", "multi"] = "card"
    """Test-time augmentation: ``card``: each model's own (its card's ``ensemble.tta``,
    with which its operating points were measured); ``none``, ``flip`` (identity and
    mirror) or ``multi`` for every model."""
    tta_views: int = Field(default=5, strict=True, ge=2, le=5)
    """Views used by ``multi`` (identity, flip, zoom in, zoom out, shift)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``auto``: bf16 autocast on CUDA, fp32 on CPU."""
    channels_last: bool = True
    compile: bool = False
    """``torch.compile`` the members (slower start, faster steady state on CUDA)."""
    cam: bool = True
    """Grad-CAM heat maps and regions for the malignant class."""
    cam_threshold: float = Field(default=0.5, gt=0, le=1)
    """A region is where the map is at least this fraction of its maximum."""
    max_regions: int = Field(default=5, strict=True, ge=0, le=50)
    breast_aggregation: Literal["max", "mean"] = "max"
    operating_point: str | None = None
    """Operating point name, which every model's card must have; ``null``: each card's
    default."""
    threads: int = Field(default=0, strict=True, ge=0, le=1024)
    """CPU threads for torch; 0 leaves torch's default."""
    decode_processes: int = Field(default=0, strict=True, ge=0, le=64)
    """Processes that read, decode and preprocess images in parallel; 0 decodes in the
    worker itself. The JPEG 2000 and JPEG decoders hold Python's lock, so only processes
    decode several images at once: worth it on a GPU machine with spare cores."""
    max_image_bytes: int = Field(default=256 * 1024**2, strict=True, ge=1024**2, le=64 * 1024**3)
    """Largest image decoded, in bytes: Rows x Columns x Number of Frames x Samples per
    Pixel x bytes per sample, as the header and (JPEG 2000, JPEG, JPEG-LS) the compressed
    stream declare it, checked before any pixel is decoded. A larger image fails its study
    with a reason naming this setting (a decompression bomb: a few KB declaring
    gigabytes). The default, 256 MiB, is about five times the image of the largest
    mammography detectors (5928 x 4728 at 16 bits: 53 MiB)."""


SeriesNumber = Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
SeriesDescription = Annotated[str, Field(min_length=1, max_length=64)]


class OutputSettings(_Section):
    """Which result objects are made and how they look (see docs/outputs.md)."""

    objects: OutputKinds = ("sr", "mgcad", "sc")
    """Objects made for every inferred study (the CAD SR only for mammograms)."""
    failure_report: bool = True
    """A study that fails or is skipped after eligibility still gets a result saying so."""
    sr_series_number: SeriesNumber = 9901
    sr_series_description: SeriesDescription = "AI breast cancer detection report"
    mgcad_series_number: SeriesNumber = 9902
    mgcad_series_description: SeriesDescription = "AI mammography CAD report"
    sc_series_number: SeriesNumber = 9903
    sc_series_description: SeriesDescription = "AI heatmaps, not for diagnostic use"
    gsps_series_number: SeriesNumber = 9904
    gsps_series_description: SeriesDescription = "AI region outlines"
    colormap: Colormap = "jet"
    """Colour map of the heat-map overlay."""
    opacity: float = Field(default=0.4, ge=0, le=1)
    """Opacity of the hottest heat-map colour over the image (0 = invisible)."""
    sc_size: int = Field(default=1024, strict=True, ge=0, le=8192)
    """Longest side of the secondary capture image in pixels; 0 keeps the original size."""
    unmarked_regions: Literal["omit", "optional"] = "omit"
    """Regions scoring below the operating point: left out of every object (``omit``), or
    also reported in the Mammography CAD SR as "Presentation Optional" findings with
    their score and CAD operating point (``optional``). They are never outlined (SC,
    GSPS) nor made TID 1500 regions."""
    heatmap_below_operating_point: Literal["shown", "faint", "off"] = "faint"
    """The heat map on the secondary capture of an image below the operating point:
    drawn as on a positive image (``shown``), at a quarter of ``opacity`` (``faint``), or
    not drawn (``off``). Such an image never gets outlines."""


class LoggingSettings(_Section):
    """Structured logging (structlog)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"
    """``auto``: readable console output on a terminal, JSON lines otherwise."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class HttpSettings(_Section):
    """The monitoring endpoint: ``/healthz``, ``/metrics`` and the status page ``/``."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", min_length=1)
    """Address to bind; 127.0.0.1 keeps it local (put a reverse proxy in front to share it)."""
    port: Port = 8112
    token: str | None = Field(default=None, min_length=16)
    """When set, every request needs ``Authorization: Bearer <token>``; masked in logs."""
    threads: int = Field(default=4, strict=True, ge=1, le=64)
    """Requests handled at once, each read in full before a thread is given to it."""
    request_timeout: float = Field(default=10.0, gt=0, le=600)
    """Seconds a client has to send its whole request, and the node to send its answer;
    a slower client is disconnected."""
    max_connections: int = Field(default=64, strict=True, ge=1, le=10000)
    """Requests being read at once; when another connection comes, the oldest is closed."""


class RetentionSettings(_Section):
    """How long finished studies (done, failed, skipped) and audit rows are kept."""

    days: float | None = Field(default=30.0, gt=0, le=36500)
    """Finished studies unchanged for longer, and older audit rows, are purged
    (spool files and database rows); ``null`` keeps everything."""
    check_interval_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400)
    """How often the purge job runs."""


class Settings(_Section):
    """All of the node's settings. Frozen: pass it around, never mutate it."""

    node: NodeSettings = Field(default_factory=NodeSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    completion: CompletionSettings = Field(default_factory=CompletionSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    eligibility: EligibilitySettings = Field(default_factory=EligibilitySettings)
    destinations: tuple[Destination, ...] = Field(
        default_factory=lambda: (
            FolderDestination(name="results-folder", folder=_cwd_path("var/results")),
        )
    )
    models: tuple[ConfigPath, ...] = Field(
        default_factory=lambda: (_cwd_path("models/demo"), _cwd_path("models/demo-us"))
    )
    """Model folders (card + weights). Each image goes to the model whose card lists its
    modality (the first such one; ``eligibility.rules[].model`` picks another), so a
    study with mammograms and ultrasound images gets each part inferred by its own model.
    A missing folder is left out with a warning; none at all (or ``[]``): receive and
    queue only."""
    model: ConfigPath | None = None
    """One model folder: the same as ``models: [folder]`` (``null``: ``models: []``).
    Give ``model`` or ``models``, not both."""
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    outputs: OutputSettings = Field(default_factory=OutputSettings)
    sending: SendingSettings = Field(default_factory=SendingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @model_validator(mode="before")
    @classmethod
    def _one_model_key(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "model" in data:
            if "models" in data:
                raise ValueError("give model (one folder) or models (a list), not both")
            data = dict(data)
            folder = data["model"]
            data["models"] = [] if folder is None else [folder]
        return data

    @model_validator(mode="after")
    def _unique_destination_names(self) -> Settings:
        seen: set[str] = set()
        for dest in self.destinations:
            if dest.name in seen:
                raise ValueError(f"destination name {dest.name!r} is used twice")
            seen.add(dest.name)
        if len(set(self.models)) != len(self.models):
            raise ValueError("models: a model folder is listed twice")
        return self

    @property
    def available_models(self) -> tuple[Path, ...]:
        """The configured model folders that exist."""
        return tuple(folder for folder in self.models if folder.is_dir())

    @property
    def model_available(self) -> bool:
        """True when at least one configured model folder exists."""
        return bool(self.available_models)

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret-looking value masked."""
        masked: dict[str, Any] = _mask_secrets(self.model_dump(mode="json"))
        return masked


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def _mask_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: "***" if _is_secret(key) and item else _mask_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask_secrets(item) for item in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        # database URLs with credentials
        return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", value)
    return value


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load settings from ``path`` (or the built-in defaults) plus environment overrides.

    Raises :class:`ConfigError` naming the file (or variable) and the key.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source: str | None = None
    base_dir = Path.cwd()
    if path is not None:
        file = Path(path).expanduser()
        source = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file ({exc.strerror})", source=file) from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"not valid YAML{where}", source=file) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("top level must be a mapping of sections", source=file)
        data = loaded
        base_dir = file.resolve().parent

    env_sources = _apply_env(data, env)
    try:
        return Settings.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise _config_error(exc, source, env_sources) from None


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Merge ``BREAST_NODE__A__B=value`` into ``data``; return dotted key -> variable name."""
    applied: dict[str, str] = {}
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        try:
            value = yaml.safe_load(env[name]) if env[name] != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError("not a valid YAML value", key=".".join(parts), source=name) from exc
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
        applied[".".join(parts)] = name
    return applied


def _config_error(
    exc: ValidationError, source: str | None, env_sources: Mapping[str, str]
) -> ConfigError:
    error = exc.errors()[0]
    loc = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
    # pydantic adds the tagged union member's class name to the location; drop it
    loc = [p for p in loc if p not in {"dicom", "folder", "dicomweb"} or p == loc[-1]]
    key = ".".join(loc) if loc else None
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    elif "input" in error and error["type"] not in {"missing"}:
        shown = error["input"]
        if not isinstance(shown, dict | list):
            message = f"{message} (got {shown!r})"
    origin = source
    if key is not None:
        for dotted, variable in env_sources.items():
            if key == dotted or key.startswith(dotted + "."):
                origin = variable
                break
    return ConfigError(message, key=key, source=origin or "defaults")
