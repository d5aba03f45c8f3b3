"""Import heavy optional dependencies only where they are used."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgekit.errors import MissingDependency

#: ``extra`` for edgekit's own dependencies (installed with edgekit itself, not through an extra)
CORE = "core"
# import name -> distribution name, where they differ
_DISTRIBUTIONS = {"onnx2torch": "onnx2torch", "ai_edge_litert": "ai-edge-litert", "google": "protobuf", "PIL": "pillow"}


def install_hint(module: str, extra: str) -> str:
    """The pip command that brings ``module`` back: the extra that installs it, or the core dependency itself."""
    if extra != CORE:
        return f"pip install 'edgekit[{extra}]'"
    top = module.split(".")[0]
    distribution = _DISTRIBUTIONS.get(top, top)
    return f"pip install '{distribution}' (a dependency of edgekit itself; reinstalling edgekit brings it back too)"


def require(module: str, extra: str, *, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an error naming what to install (``extra`` is an edgekit extra, or CORE)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" ({purpose})" if purpose else ""
        raise MissingDependency(
            f"Python package '{module.split('.')[0]}' is needed{what} but could not be imported: {exc}",
            hint=install_hint(module, extra),
        ) from exc


def version_of(distribution: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
