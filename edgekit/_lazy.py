"""Import heavy optional dependencies only where they are used."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgekit.errors import MissingDependency


def require(module: str, extra: str, *, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" ({purpose})" if purpose else ""
        raise MissingDependency(
            f"Python package '{module.split('.')[0]}' is needed{what} but could not be imported: {exc}",
            hint=f"pip install 'edgekit[{extra}]'",
        ) from exc


def version_of(distribution: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
