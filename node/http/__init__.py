"""The node's monitoring endpoint: ``/healthz``, ``/metrics`` and a status page at ``/``."""

from node.http.server import MonitoringServer
from node.http.view import NodeView

__all__ = ["MonitoringServer", "NodeView"]
