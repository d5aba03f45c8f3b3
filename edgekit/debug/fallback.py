"""Per-layer precision fallback: keep the layers that lose the most SQNR in float until verification passes
or the budget is spent.

Each round ranks the layers of the latest located curve by the noise they add themselves (``own_sqnr_db``),
adds the worst ones not yet in float (1, then 2, 4, ... per round), converts again, verifies again and, if
it still fails, locates again: keeping one layer in float moves the problem, so the next ranking is measured,
not guessed. The loop is the same for every backend; what a round does comes from callbacks (the pipeline's
convert + verify; for TensorRT int8 the QDQ model and its onnxruntime check).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.debug.graph import Graph
from edgekit.debug.locate import LayerPoint, LocateResult, own_sqnr_db

MAX_ROUNDS = 6


@dataclass
class Attempt:
    """One conversion with a set of float layers, and how it verified."""

    float_layers: frozenset[str]
    passed: bool
    status: str  # passed | failed | skipped
    min_sqnr_db: float | None
    size_bytes: int
    applied: dict[str, str] = field(default_factory=dict)  # what the backend really kept float: node -> why
    payload: Any = None  # the caller's (artifact, verifications)


@dataclass
class Round:
    index: int
    added: list[str]  # layers (named nodes) this round put in float
    attempt: Attempt
    seconds: float
    located: LocateResult | None = None
    parameters_in_float: float = 0.0  # what the backend really kept float (it may add layers: TFLite's writers)
    over_budget: bool = False

    def to_dict(self) -> dict[str, Any]:
        first = self.located.first_divergence if self.located is not None else None
        return {"round": self.index, "added": self.added, "float_layers": len(self.attempt.applied or self.attempt.float_layers),
                "status": self.attempt.status, "min_sqnr_db": self.attempt.min_sqnr_db, "artifact_bytes": self.attempt.size_bytes,
                "parameters_in_float": round(self.parameters_in_float, 4), "over_budget": self.over_budget,
                "seconds": self.seconds, "first_divergence": first.summary() if first is not None else None}


@dataclass
class FallbackResult:
    rounds: list[Round]
    stopped: str  # why the loop ended: passed | budget | no candidates | rounds | failed to convert
    budget: float
    chosen: Round  # the round whose artifact is kept
    reasons: dict[str, str] = field(default_factory=dict)  # node -> why the loop put it in float

    @property
    def passed(self) -> bool:
        return self.chosen.attempt.passed


def members(point: LayerPoint) -> list[str]:
    return point.fused or [point.node]


def param_fraction(graph: Graph, nodes: frozenset[str] | set[str]) -> float:
    total = graph.total_params
    used = sum(graph.params(graph.index[n]) for n in nodes if n in graph.index)
    return used / total if total else 0.0


def run_fallback(graph: Graph, first: Attempt, first_located: LocateResult, *, budget: float,
                 measure: Callable[[frozenset[str]], Attempt], relocate: Callable[[Attempt], LocateResult | None],
                 eligible: Callable[[LayerPoint], bool] = lambda point: True, max_rounds: int = MAX_ROUNDS) -> FallbackResult:
    """Rounds of keeping layers in float, from ``first`` (the build as converted) and its located curve."""
    rounds = [Round(0, [], first, 0.0, first_located)]
    reasons: dict[str, str] = {}
    located, floats, take, stopped = first_located, set(first.float_layers), 1, "rounds"
    for index in range(1, max_rounds + 1):
        ranked = _candidates(located, floats, eligible) if located else []
        if not ranked:
            stopped = "no candidates"
            break
        added: list[str] = []
        for point, why in ranked:
            grown = floats | set(members(point))
            if param_fraction(graph, grown) > budget + 1e-12:
                continue  # a layer too big for what is left of the budget; a smaller one may still fit
            floats = grown
            added.append(point.node)
            reasons[point.node] = f"{why} (round {index})"
            if len(added) == take:
                break
        if not added:
            stopped = "budget"
            break
        started = time.perf_counter()
        attempt = measure(frozenset(floats))
        used = param_fraction(graph, floats | set(attempt.applied))
        rounds.append(Round(index, added, attempt, round(time.perf_counter() - started, 3), parameters_in_float=used,
                            over_budget=used > budget + 1e-12))
        if rounds[-1].over_budget:
            stopped = "budget"  # the backend kept more in float than asked (the writers of float layers' inputs)
            break
        if attempt.passed:
            stopped = "passed"
            break
        if attempt.status != "failed":
            stopped = f"verification {attempt.status}"
            break
        located = relocate(attempt)
        rounds[-1].located = located
        take *= 2
    return FallbackResult(rounds, stopped, budget, _best(rounds), reasons)


def _candidates(located: LocateResult, floats: set[str], eligible: Callable[[LayerPoint], bool]) -> list[tuple[LayerPoint, str]]:
    """Layers to put in float next, worst first, with why. A layer already in float that still adds noise was
    fed rounded values: the backend quantizes that tensor where it is written (TFLite, onnxruntime's QDQ), so
    the layers writing its inputs come next."""
    writers = {point.output: point for point in located.layers}
    found: dict[str, tuple[LayerPoint, str]] = {}
    for point in located.worst_layers():
        noise = f"{_db(point.input_sqnr_db)} in -> {_db(point.sqnr_db)} out, adds noise at {_db(own_sqnr_db(point))}"
        if not set(members(point)) <= floats:
            if eligible(point):
                found.setdefault(point.node, (point, f"sensitive: {noise}"))
            continue
        for tensor in point.inputs:
            writer = writers.get(tensor)
            if writer is not None and eligible(writer) and not set(members(writer)) <= floats:
                found.setdefault(writer.node, (writer, f"writes the input of float layer {point.node}, which still adds noise ({noise})"))
    return list(found.values())


def _best(rounds: list[Round]) -> Round:
    """The first passing round within the budget, else the one within it whose outputs came closest."""
    allowed = [r for r in rounds if not r.over_budget]
    passing = [r for r in allowed if r.attempt.passed]
    if passing:
        return passing[0]
    return max(allowed, key=lambda r: r.attempt.min_sqnr_db if r.attempt.min_sqnr_db is not None and not math.isnan(r.attempt.min_sqnr_db) else -math.inf)


def _db(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.1f} dB" if math.isfinite(value) else str(value)
