"""edgekit: ONNX model in, a verified and measured edge artifact out.

``import edgekit`` stays light: heavy libraries load only inside the stage that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edgekit.types import BuildReport


def build(model: Any, target: Any, **kwargs: Any) -> BuildReport:
    """Build and verify ``model`` for ``target``; see :func:`edgekit.pipeline.build`."""
    from edgekit.pipeline import build as _build

    return _build(model, target, **kwargs)


__all__ = ["__version__", "build"]
