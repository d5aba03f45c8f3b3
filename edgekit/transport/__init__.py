"""Where the device runner executes: this host (LocalTransport) or a device over SSH."""

from edgekit.transport.base import CommandResult, Transport
from edgekit.transport.local import LocalTransport

__all__ = ["CommandResult", "LocalTransport", "Transport"]
