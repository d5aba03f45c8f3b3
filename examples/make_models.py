#!/usr/bin/env python3
"""Generate the example models into examples/models/ (seeded random weights, no download), and a
small calibration set for each into examples/calib/ (seeded normal samples, already normalized).

    python examples/make_models.py            # all of them
    python examples/make_models.py tiny_cnn   # one
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgekit.modelio import load_model
from edgekit.samples import SAMPLES, write_sample

HERE = Path(__file__).resolve().parent
CALIBRATION_SAMPLES = 8


def write_calibration(model: Path, folder: Path) -> Path:
    """Random inputs stand in for real data here; ship your own representative samples for real models."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(123)
    (spec,) = load_model(model).inputs
    path = folder / f"{model.stem}.npy"
    np.save(path, rng.standard_normal((CALIBRATION_SAMPLES, *spec.shape[1:])).astype(np.float32))
    return path


def main(argv: list[str]) -> int:
    names = argv or list(SAMPLES)
    unknown = [n for n in names if n not in SAMPLES]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; choose from {', '.join(SAMPLES)}", file=sys.stderr)
        return 2
    for name in names:
        for path in (model := write_sample(name, HERE / "models"), write_calibration(model, HERE / "calib")):
            print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
