"""Verifying on several devices at once: one error (and exit code) for all their faults.

The exit code of a run with device faults is the faulty devices' own code when they all failed the
same way (e.g. 7: all unreachable), else 6; devices that verified keep their results in the report.
"""

from __future__ import annotations

from typing import Any

from edgekit.errors import DeviceError


def fault_of(error: DeviceError) -> dict[str, Any]:
    """The report's ``verification.fault`` for a device that could not verify."""
    return {"kind": error.kind, "exit_code": error.exit_code, "message": error.message}


def fleet_error(failures: list[tuple[str, DeviceError]], devices: int) -> DeviceError | None:
    """One error for the devices that could not verify (None if all could)."""
    if not failures:
        return None
    if devices == 1:
        return failures[0][1]
    kinds = {type(error) for _, error in failures}
    cls = kinds.pop() if len(kinds) == 1 else DeviceError
    listed = "; ".join(f"{name}: {error.kind}" for name, error in failures)
    return cls(f"{len(failures)} of {devices} devices could not verify ({listed}); the others' results are in the report",
               hint="the summary table and each entry of 'verifications' in the report say what failed on which device")
