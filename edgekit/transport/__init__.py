"""Where the device runner executes: this host (LocalTransport), an emulated ARM CPU (EmulatedTransport)
or a device over SSH (SSHTransport)."""

from edgekit.devices import Device
from edgekit.transport.base import CommandResult, Transport
from edgekit.transport.local import LocalTransport

__all__ = ["CommandResult", "LocalTransport", "Transport", "transport_for"]


def transport_for(device: Device, keep: bool = False) -> Transport:
    """The transport that reaches ``device``: this host, the emulator, or SSH."""
    if device.is_host:
        local = LocalTransport(keep=keep)
        local.device_name = device.name  # named: it is one of several places compared side by side
        return local
    if device.emulator:
        from edgekit.transport.emulated import EmulatedTransport

        return EmulatedTransport(device.emulator, cpu=device.cpu, name=device.name, keep=keep,
                                 run_timeout=device.run_timeout, lock_timeout=device.lock_timeout)
    from edgekit.transport.ssh import SSHTransport

    return SSHTransport(device, keep_remote=keep)
