"""One error hierarchy for everything a user can get wrong or a tool can break.

Each class carries the CLI exit code it maps to, so build scripts can branch on the code
without parsing text. The codes are documented in the README ("Exit codes").
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Base class: a message that says what happened and what to do about it."""

    exit_code = 4

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class InputError(EdgekitError):
    """Something the user handed us is wrong: a model, a profile, calibration data, an option."""

    exit_code = 3


class ModelError(InputError):
    """The ONNX model cannot be read, fails its checks, or is unsafe to load."""


class ProfileError(InputError):
    """A target profile is missing or invalid (the message names the file and key)."""


class CalibrationError(InputError):
    """Calibration data is missing, unreadable, or does not fit the model's inputs."""


class OptionsError(InputError):
    """Build options contradict each other or the model (e.g. a bad --input-shape)."""


class ToolError(EdgekitError):
    """An external tool (simplifier, converter, runtime) failed; the message carries its log tail."""

    exit_code = 4


class StageError(ToolError):
    """A pipeline stage failed; names the stage, its tool, and the stages that had finished."""


class MissingDependency(EdgekitError):
    """An optional extra is not installed; the message names the pip install to run."""

    exit_code = 5


class DeviceError(EdgekitError):
    """A device or transport problem. Exit code 6 for the family; the subclasses below say more precisely
    what failed, with their own codes (README, "Exit codes")."""

    exit_code = 6
    #: a short name for the kind of fault, written into the report (``verification.fault.kind``)
    kind = "device"
    #: the report written before this error was raised (a build verified on devices), so it can be shown
    report = None


class DeviceUnreachable(DeviceError):
    """No TCP connection: refused, unknown host name, no route, or no answer within connect_timeout."""

    exit_code = 7
    kind = "unreachable"


class DeviceAuthFailed(DeviceError):
    """The device refused authentication. Never retried: a retry cannot fix a wrong key or user."""

    exit_code = 8
    kind = "auth-refused"


class DeviceConnectionLost(DeviceError):
    """The connection dropped or was reset after it was established (an upload is retried once first)."""

    exit_code = 9
    kind = "connection-lost"


class DeviceStalled(DeviceError):
    """The device stopped answering within a stated deadline: no SSH banner, a key exchange or an
    authentication that never finishes, a connection gone silent (keepalives unanswered), or a remote
    command that hangs (it is killed on the device)."""

    exit_code = 10
    kind = "stalled"


class DeviceTransferFailed(DeviceError):
    """A file did not arrive intact: its size or sha256 was still wrong after one re-send."""

    exit_code = 11
    kind = "transfer-corrupted"


class VerificationFailed(EdgekitError):
    """The artifact was built but its outputs do not match the reference within tolerance."""

    exit_code = 1


class BackendUnavailable(InputError):
    """The target's backend is not implemented or cannot run on this host."""


EXIT_INTERRUPTED = 130


def script_error(stderr: str) -> tuple[str, str]:
    """(kind, message) from the last error line a remote script wrote to stderr, else ("crash", stderr tail)."""
    import json

    from edgekit.remote.protocol import ERROR_MARKER as marker

    for line in reversed(stderr.splitlines()):
        if line.startswith(marker + " "):
            try:
                data = json.loads(line.split(" ", 1)[1])
            except ValueError:
                break
            return data.get("kind", "error"), data.get("message", "")
    return "crash", tail(stderr, 12)


def tail(text: str, lines: int = 15) -> str:
    """The last ``lines`` lines of a tool's log, for error messages."""
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
