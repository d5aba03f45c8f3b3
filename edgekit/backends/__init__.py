"""Backend registry: a profile names its backend; the pipeline looks it up here.

Backends are registered by import path, so looking one up imports nothing heavy; a new backend is one
package under ``edgekit/backends/`` plus one line here (or a :func:`register` call from outside).
"""

from __future__ import annotations

import importlib

from edgekit.backends.base import ArtifactTensor, Backend, BuildHost, ConvertContext
from edgekit.errors import BackendUnavailable
from edgekit.profiles import TargetProfile

_REGISTRY: dict[str, str] = {
    "tflite": "edgekit.backends.tflite:TFLiteBackend",
    "tensorrt": "edgekit.backends.tensorrt:TensorRTBackend",
    "ncnn": "edgekit.backends.ncnn:NcnnBackend",
    "coreml": "edgekit.backends.coreml:CoreMLBackend",
}


def register(name: str, import_path: str) -> None:
    """Make backend ``name`` available: ``import_path`` is ``"package.module:ClassName"``."""
    _REGISTRY[name] = import_path


def registered() -> list[str]:
    return sorted(_REGISTRY)


def backend_class(name: str) -> type[Backend] | None:
    """The class registered as ``name`` (imported, not instantiated), or None."""
    if name not in _REGISTRY:
        return None
    module_name, class_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_backend(name: str, profile: TargetProfile | None = None) -> Backend:
    cls = backend_class(name)
    if cls is None:
        note = profile.note if profile and profile.note else f"backend '{name}' is not available in this edgekit version"
        target = f"target '{profile.name}': " if profile else ""
        raise BackendUnavailable(f"{target}{note}", hint=f"available backends: {', '.join(registered())}; run 'edgekit targets' to see usable targets")
    return cls()


__all__ = ["ArtifactTensor", "Backend", "BuildHost", "ConvertContext", "backend_class", "get_backend", "register", "registered"]
