"""Structured logging, configured in exactly one place.

Call :func:`configure_logging` once from the composition root; everything else
does ``log = structlog.get_logger(__name__)`` and binds context such as
``study_uid``, ``calling_ae`` or ``job``.

Patient names and patient IDs never reach a log line: :func:`drop_phi` removes
any event field whose name says it carries them, whatever the caller passed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from node.config import LoggingSettings

__all__ = ["PHI_KEYS", "configure_logging", "drop_phi"]

#: Event keys that would carry protected health information; always removed.
PHI_KEYS = frozenset(
    {
        "patient_name",
        "patientname",
        "patient_id",
        "patientid",
        "patient_birth_date",
        "patientbirthdate",
        "other_patient_ids",
        "otherpatientids",
        "patient_address",
        "patientaddress",
    }
)


def drop_phi(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: remove fields that would carry patient identity."""
    for key in [k for k in event if k.lower().replace("-", "_") in PHI_KEYS]:
        del event[key]
    return event


def configure_logging(settings: LoggingSettings, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging to ``stream`` (stderr).

    ``settings.format``: ``json`` writes one JSON object per line, ``console``
    a readable coloured line, ``auto`` picks console on a terminal and JSON
    otherwise. Library loggers (pynetdicom, apscheduler, sqlalchemy) go through
    the same renderer, at WARNING unless the node's level is DEBUG.
    """
    out = stream if stream is not None else sys.stderr
    fmt = settings.format
    if fmt == "auto":
        fmt = "console" if _isatty(out) else "json"
    level = logging.getLevelName(settings.level)

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_phi,
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    library_level = logging.DEBUG if level == logging.DEBUG else logging.WARNING
    for name in (
        "pynetdicom",
        "apscheduler",
        "sqlalchemy",
        "highdicom",
        "PIL",
        "matplotlib",
        "urllib3",
    ):
        logging.getLogger(name).setLevel(max(library_level, level))
    # jobs that run until their queue is empty outlast their interval by design; the
    # scheduler's "skipped: maximum number of running instances reached" is not news
    logging.getLogger("apscheduler.scheduler").setLevel(max(logging.ERROR, level))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
