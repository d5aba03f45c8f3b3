"""What runs on devices: the runner (one module per runtime), the TensorRT engine builder, and the protocol
the host shares with them.

Everything here is Python 3.8, the standard library and numpy (plus the device's runtime, imported where it
is used), and imports nothing else from edgekit: it travels to a device as one zipapp built by
:func:`edgekit.remote.bundle.write_bundle`. The host imports :mod:`edgekit.remote.protocol` from here.
"""
