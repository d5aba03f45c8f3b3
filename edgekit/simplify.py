"""Simplify: onnxsim, falling back to onnxslim; the result is checked against the original."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from edgekit._lazy import version_of
from edgekit.calibration import SampleSet
from edgekit.errors import StageError, tail
from edgekit.metrics import compare
from edgekit.profiles import Tolerance
from edgekit.reference import run_reference

# Simplification must not change the maths beyond float reassociation noise.
EQUIVALENCE = Tolerance(min_cosine=0.99999, min_sqnr_db=60.0)


@dataclass
class SimplifyResult:
    model: Any
    tool: str | None
    tool_version: str | None
    nodes_before: int
    nodes_after: int
    attempts: list[str]
    seconds: float


def _with_onnxsim(model: Any) -> Any:
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    return simplified


def _with_onnxslim(model: Any) -> Any:
    import onnxslim

    return onnxslim.slim(model)


SIMPLIFIERS = (("onnxsim", _with_onnxsim), ("onnxslim", _with_onnxslim))


def simplify(model: Any, samples: SampleSet, reference: list[dict] | None = None) -> SimplifyResult:
    """Try each simplifier in turn; keep the first whose output matches the original on ``samples``."""
    start = time.perf_counter()
    before = len(model.graph.node)
    reference = reference if reference is not None else run_reference(model, samples)
    attempts: list[str] = []
    for tool, run in SIMPLIFIERS:
        if version_of(tool) is None:
            attempts.append(f"{tool}: not installed")
            continue
        try:
            candidate = run(model)
        except Exception as exc:  # simplifiers raise anything from protobuf to onnxruntime errors
            attempts.append(f"{tool}: failed: {tail(str(exc) or type(exc).__name__, 3)}")
            continue
        mismatch = differs(candidate, samples, reference)
        if mismatch:
            attempts.append(f"{tool}: output differs from the original ({mismatch}); discarded")
            continue
        return SimplifyResult(candidate, tool, version_of(tool), before, len(candidate.graph.node), attempts, time.perf_counter() - start)
    raise StageError(
        "simplify: no simplifier produced a model equivalent to the original:\n  " + "\n  ".join(attempts),
        hint="pass --no-simplify to convert the model as it is",
    )


def differs(candidate: Any, samples: SampleSet, reference: list[dict]) -> str | None:
    """Why ``candidate`` is not equivalent to the model ``reference`` came from (on ``samples``), or None."""
    try:
        outputs = run_reference(candidate, samples)
    except Exception as exc:
        return f"it does not run: {exc}"
    for expected, got in zip(reference, outputs, strict=False):
        for name, value in expected.items():
            if name not in got:
                return f"output '{name}' disappeared"
            metrics = compare(name, value, got[name], EQUIVALENCE)
            if not metrics.passed and metrics.finite:
                return f"'{name}': " + "; ".join(metrics.failures)
    return None
