"""The node's one exception hierarchy.

Every failure the node raises on purpose derives from :class:`NodeError`, so a
pipeline stage can catch ``NodeError``, move its study to ``failed`` and record
``str(exc)`` as the reason, while programming errors still surface as bugs::

    NodeError
    ├── ConfigError          settings file or environment is invalid
    ├── StorageError         spool or database cannot take or give data
    │   └── SpoolFullError   spool is over its disk watermark
    ├── DicomError           a DICOM object or association is unusable
    ├── ModelError           a model folder, card or weights file is invalid
    ├── InferenceError       a study could not be inferred
    ├── OutputError          a result object could not be built
    └── SendError            a result could not be delivered to a destination
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "DicomError",
    "InferenceError",
    "ModelError",
    "NodeError",
    "OutputError",
    "SendError",
    "SpoolFullError",
    "StorageError",
]


class NodeError(Exception):
    """Base of every error the node raises deliberately."""


class ConfigError(NodeError):
    """Invalid configuration.

    ``key`` is the dotted setting name (``node.port``), ``source`` the file or
    environment variable it came from, so the message alone tells an admin
    what to fix.
    """

    def __init__(self, message: str, *, key: str | None = None, source: str | Path | None = None):
        self.key = key
        self.source = str(source) if source is not None else None
        parts = []
        if self.source:
            parts.append(self.source)
        if key:
            parts.append(key)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class StorageError(NodeError):
    """The spool or the database could not store or return data."""


class SpoolFullError(StorageError):
    """The spool's file system is over its configured watermark."""


class DicomError(NodeError):
    """A DICOM object or exchange is unusable (missing UIDs, bad encoding, ...)."""


class ModelError(NodeError):
    """A model folder, model card or weights file is missing or inconsistent."""


class InferenceError(NodeError):
    """A study could not be turned into a result."""


class OutputError(NodeError):
    """A result object (SR, CAD SR, secondary capture) could not be built."""


class SendError(NodeError):
    """A result could not be delivered to a destination."""
