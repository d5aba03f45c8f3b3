"""Backend registry: a profile names its backend; the pipeline looks it up here.

Backends are registered by import path so that looking one up imports nothing heavy.
"""

from __future__ import annotations

import importlib

from edgekit.backends.base import Backend, ConvertContext
from edgekit.errors import BackendUnavailable
from edgekit.profiles import TargetProfile

_REGISTRY: dict[str, str] = {
    "tflite": "edgekit.backends.tflite:TFLiteBackend",
    "tensorrt": "edgekit.backends.tensorrt:TensorRTBackend",
    "ncnn": "edgekit.backends.ncnn:NcnnBackend",
    "coreml": "edgekit.backends.coreml:CoreMLBackend",
}


def register(name: str, import_path: str) -> None:
    _REGISTRY[name] = import_path


def registered() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str, profile: TargetProfile | None = None) -> Backend:
    if name not in _REGISTRY:
        note = profile.note if profile and profile.note else f"backend '{name}' is not available in this edgekit version"
        target = f"target '{profile.name}': " if profile else ""
        raise BackendUnavailable(f"{target}{note}", hint=f"available backends: {', '.join(registered())}; run 'edgekit targets' to see usable targets")
    module_name, class_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


__all__ = ["Backend", "ConvertContext", "get_backend", "register", "registered"]
