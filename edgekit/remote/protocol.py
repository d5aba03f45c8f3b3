"""What the host and the remote scripts agree on: exit codes, the error line, and the one error class.

The host imports these names instead of re-declaring them. Python 3.8, stdlib only.
"""

import json
import sys

PROTOCOL_VERSION = 2

EXIT_USAGE = 2
#: the runtime (TFLite, ncnn, TensorRT, ...) or the builder's TensorRT is not on this machine
EXIT_MISSING = 3
#: the artifact would not load, or the ONNX model would not parse for an engine build
EXIT_LOAD_FAILED = 4
#: inference, or the engine build, failed
EXIT_FAILED = 5

#: the kind of error for an exception TensorRT's API raised that the builder does not expect (an API change)
TENSORRT_API_ERROR = "tensorrt_api_error"

#: stderr line prefix for a structured error: ``EDGEKIT_REMOTE_ERROR {"kind": ..., "message": ...}``
ERROR_MARKER = "EDGEKIT_REMOTE_ERROR"

INSTALL_HINTS = {
    "tflite": "pip install ai-edge-litert (or tflite-runtime on older boards)",
    "ncnn": "pip install ncnn",
    "onnxruntime": "pip install onnxruntime",
    "tensorrt": "install TensorRT's Python bindings (JetPack ships them: python3-libnvinfer)",
    "coreml": "pip install coremltools (on macOS)",
}


class RemoteError(Exception):
    """A failure the host should read as (kind, message), with the exit code that classifies it."""

    def __init__(self, kind, message, code):
        Exception.__init__(self, message)
        self.kind, self.message, self.code = kind, message, code


def report_error(error):
    sys.stderr.write(ERROR_MARKER + " " + json.dumps({"kind": error.kind, "message": error.message}) + "\n")
    return error.code


def import_first(candidates):
    """Import the first available of (module, attribute, label) candidates: (object, label), or (None, why not)."""
    errors = []
    for module, attribute, label in candidates:
        try:
            imported = __import__(module, fromlist=[attribute] if attribute else [])
            return (getattr(imported, attribute) if attribute else imported), label
        except Exception as exc:  # a broken install can raise more than ImportError
            errors.append("%s: %s" % (module, exc))
    return None, "; ".join(errors)


def require_runtime(runtime, candidates, what):
    """Like import_first, but a missing runtime is a RemoteError that names what to install."""
    found, label = import_first(candidates)
    if found is None:
        raise RemoteError("runtime_missing", "%s could not be imported (%s); %s" % (what, label, INSTALL_HINTS[runtime]), EXIT_MISSING)
    return found, label


def module_version(module):
    try:
        return getattr(__import__(module), "__version__", None)
    except Exception:
        return None
