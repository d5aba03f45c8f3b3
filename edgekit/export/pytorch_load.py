"""Open PyTorch model files without running code from them unless the user said so (--trust-pickle).

What each format can do when loaded (torch 2.14, read from its sources):
- TorchScript (``torch.jit.save``: a zip with ``code/`` and ``constants.pkl``): its pickles are read by TorchScript's
  own unpickler, which only builds tensors and TorchScript classes compiled from ``code/``; no Python runs.
- ``.pt2`` (``torch.export.save``): weights are raw bytes described by JSON, *but* payloads flagged ``use_pickle``,
  "opaque" constants (``pickle.loads``) and the example inputs (``weights_only=True``, then silently
  ``weights_only=False`` when that fails) can unpickle arbitrary objects. edgekit refuses flagged payloads and loads
  the rest with torch forced to weights-only unpickling, so the silent fallback cannot run code.
- ``torch.save`` files (a pickle, usually in a zip with ``data.pkl``): ``weights_only=True`` loads tensors and plain
  containers (a state_dict) safely; a whole pickled ``nn.Module`` needs full unpickling, which can run any code.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit._lazy import require
from edgekit.errors import ModelError

TRUST_HINT = ("if you trust this file as you would trust running a program from its author, pass --trust-pickle "
              "(Python API: trust_pickle=True); better, save the model with torch.export.save (.pt2) or torch.jit.save (TorchScript)")


def _torch() -> Any:
    return require("torch", "torch", purpose="exporting PyTorch models to ONNX")


@contextlib.contextmanager
def weights_only_unpickling() -> Iterator[None]:
    """Force every torch.load in this block to weights-only unpickling, whatever the caller (or torch) passes."""
    saved = {name: os.environ.get(name) for name in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def file_format(path: Path) -> str:
    """"pt2", "torchscript" or "pickle" from the file's content (extensions are often wrong: .pt is used for all three)."""
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    if not zipfile.is_zipfile(path):
        return "pickle"  # torch.save's legacy (pre-1.6) format
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path}: cannot read it as a PyTorch archive: {exc}") from None
    tails = {name.split("/", 1)[-1] for name in names}
    if "archive_format" in tails or any(t.startswith("models/") and t.endswith(".json") for t in tails):
        return "pt2"
    if "serialized_exported_program.json" in tails:
        return "pt2"  # the pre-2.8 .pt2 layout
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return "torchscript"
    return "pickle"


def pt2_pickled_payloads(path: Path) -> list[str]:
    """What in a .pt2 archive would be unpickled with full pickle (empty: nothing)."""
    found = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            tail = name.split("/", 1)[-1]
            if tail == "serialized_exported_program.json":
                found.append("the archive uses the pre-2.8 .pt2 layout, whose loader falls back to full pickle")
            elif tail.startswith("data/") and tail.endswith("_config.json"):
                try:
                    config = json.loads(archive.read(name)).get("config", {})
                except (ValueError, AttributeError):
                    found.append(f"{tail} is not valid JSON")
                    continue
                found.extend(f"{fqn} ({tail})" for fqn, meta in config.items() if not isinstance(meta, dict) or meta.get("use_pickle"))
    return found


def load_exported_program(path: Path, trust_pickle: bool) -> Any:
    torch = _torch()
    pickled = [] if trust_pickle else pt2_pickled_payloads(path)
    if pickled:
        raise ModelError(f"{path}: this .pt2 holds pickled payloads that would run code when loaded: {', '.join(pickled[:5])}",
                         hint=TRUST_HINT)
    guard = contextlib.nullcontext() if trust_pickle else weights_only_unpickling()
    try:
        with guard:
            return torch.export.load(str(path))
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, AssertionError, KeyError by version
        raise ModelError(f"{path}: torch.export.load failed: {_first_line(exc)}",
                         hint="re-save it with torch.export.save from this torch version" if trust_pickle else TRUST_HINT) from None


def load_torchscript(path: Path) -> Any:
    torch = _torch()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "torch.jit.load is deprecated": still the way to read TorchScript
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit raises RuntimeError with C++ traces
        raise ModelError(f"{path}: torch.jit.load failed: {_first_line(exc)}") from None


def load_pickled(path: Path, trust_pickle: bool) -> Any:
    """A ``torch.save`` file: weights-only first; a whole module only with --trust-pickle."""
    torch = _torch()
    try:
        with weights_only_unpickling():
            content = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError naming the global that is not allowed, or a corrupt file
        if not trust_pickle:
            raise ModelError(f"{path}: loading it needs full pickle, which runs whatever code the file names "
                             f"(weights-only loading refused it: {_first_line(exc)})", hint=TRUST_HINT) from None
        try:
            content = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as inner:  # anything the pickle does can raise
            raise ModelError(f"{path}: torch.load failed: {_first_line(inner)}",
                             hint="a pickled module needs its class importable (the package or script that defined it on the path)") from None
    if isinstance(content, torch.nn.Module):
        return content
    what = "a state_dict (weights only)" if isinstance(content, dict) and content and all(
        isinstance(v, torch.Tensor) for v in content.values()) else f"a {type(content).__name__}, not an nn.Module"
    raise ModelError(f"{path}: the file holds {what}; exporting needs the model's code as well",
                     hint="build the module in Python, load the weights into it, and call edgekit.build(module, example_inputs=(x,), target=...); "
                     "or save it with torch.export.save (.pt2)")


def load_torch_file(path: Path, trust_pickle: bool) -> tuple[str, Any]:
    """(format, loaded object) for a PyTorch file."""
    kind = file_format(path)
    if kind == "pt2":
        return kind, load_exported_program(path, trust_pickle)
    if kind == "torchscript":
        return kind, load_torchscript(path)
    return "pickled-module", load_pickled(path, trust_pickle)


def _first_line(exc: BaseException) -> str:
    """The informative line of a torch error: for a refused unpickling, the global it refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    refused = next((line for line in lines if "Unsupported global" in line or "Unsupported operand" in line), None)
    if refused:
        return refused.split(" Please use")[0].removeprefix("WeightsUnpickler error: ")[:400]
    return (lines[0] if lines else type(exc).__name__)[:400]
