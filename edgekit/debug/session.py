"""What the pipeline calls once a build has been verified: locate the first divergent layer (when verification
failed, or with ``--locate``), then, for a failed build with ``--fallback auto``, keep sensitive layers in float
round by round. Returns the artifact and verification to report, plus the report's ``quantization`` section."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.backends.base import Backend, ConvertContext
from edgekit.calibration import SampleSet
from edgekit.debug.fallback import Attempt, FallbackResult, members, param_fraction, run_fallback
from edgekit.debug.graph import Graph, node_id
from edgekit.debug.locate import LayerPoint, LocateRequest, LocateResult, locate
from edgekit.errors import EdgekitError
from edgekit.fsutil import size_of
from edgekit.profiles import TargetProfile, Tolerance
from edgekit.transport.base import Transport
from edgekit.types import Artifact, BuildOptions, StageRecord, VerificationResult

Verifier = Callable[[Artifact], tuple[list[VerificationResult], EdgekitError | None]]


@dataclass
class DebugRequest:
    backend: Backend
    ctx: ConvertContext
    profile: TargetProfile
    options: BuildOptions
    artifact: Artifact  # installed in the output folder
    verifications: list[VerificationResult]
    device_error: EdgekitError | None
    samples: SampleSet
    tolerance: Tolerance
    transports: list[Transport]
    verify: Verifier  # verifies an artifact where the build verifies (no stage records)
    install: Callable[[Artifact, Artifact], Artifact]  # (new, installed) -> new, installed in place of the old one
    primary: Callable[[list[VerificationResult]], VerificationResult]


@dataclass
class DebugOutcome:
    artifact: Artifact
    verifications: list[VerificationResult]
    device_error: EdgekitError | None
    quantization: dict[str, Any] | None = None
    stages: list[StageRecord] = field(default_factory=list)


def fallback_mode(profile: TargetProfile, options: BuildOptions, precision: str) -> tuple[str, float]:
    mode = options.fallback or ("auto" if precision in profile.fallback_precisions else "none")
    budget = options.fallback_budget if options.fallback_budget is not None else profile.fallback_budget
    return mode, budget


def debug_build(request: DebugRequest) -> DebugOutcome:
    ctx, backend = request.ctx, request.backend
    outcome = DebugOutcome(request.artifact, request.verifications, request.device_error)
    mode, budget = fallback_mode(request.profile, request.options, ctx.precision)
    forced = backend.float_only_layers(ctx.model, ctx.precision) if ctx.precision != "fp32" else {}
    primary = request.primary(request.verifications)
    if ctx.precision != "fp32":
        outcome.quantization = _quantization(ctx.precision, mode, budget, request.artifact, forced, ctx.model)
    if primary.status != "failed" and not request.options.locate:
        return outcome
    if primary.status == "skipped":
        primary.locate = LocateResult("skipped", backend.intermediate_outputs, reason=f"verification did not run: {primary.reason}").to_dict()
        return outcome
    timer = _Timer()
    with timer:
        located = locate(_request(request, request.artifact))
    outcome.stages.append(locate_stage(located, timer.seconds))
    final_located = located
    can_fall_back = ctx.precision in backend.float_layer_precisions
    # the layers are ranked by locate's numbers, so a runtime that refused the artifact (XNNPACK) is no obstacle
    # as long as locate could read its layers (without the delegate); each round is verified as the build is
    if primary.status == "failed" and mode == "auto" and can_fall_back and located.layers:
        graph = Graph(ctx.model)
        with _Timer() as fallback_timer:
            result = _fall_back(request, graph, located, budget)
        chosen = result.chosen
        if chosen.index > 0:
            artifact, verifications, error = chosen.attempt.payload
            outcome.artifact = request.install(artifact, request.artifact)
            outcome.verifications, outcome.device_error = verifications, error
            final_located = chosen.located
            if final_located is None:  # it passed: show the repaired curve too
                with timer:
                    final_located = locate(_request(request, outcome.artifact))
        outcome.stages.append(_fallback_stage(result, fallback_timer.seconds))
        outcome.stages[0] = locate_stage(located, timer.seconds)
        outcome.quantization = _quantization(ctx.precision, mode, budget, outcome.artifact, forced, ctx.model, graph, result, located, final_located)
    elif primary.status == "failed" and mode == "auto" and outcome.quantization is not None:
        outcome.quantization["fallback_skipped"] = (f"the {backend.name} backend has no per-layer fallback for {ctx.precision}" if not can_fall_back
                                                    else "no layer could be compared, so none could be ranked")
    attach(request.primary(outcome.verifications), final_located)
    return outcome


def _request(request: DebugRequest, artifact: Artifact) -> LocateRequest:
    return LocateRequest(request.backend, request.ctx, artifact, request.samples, request.tolerance,
                         request.transports[0] if request.transports else None)


def _fall_back(request: DebugRequest, graph: Graph, located: LocateResult, budget: float) -> FallbackResult:
    ctx, backend = request.ctx, request.backend
    first = _attempt(ctx.float_layers, request.artifact, request.verifications, request.device_error, request.primary)
    ops = backend.float_layer_ops(ctx.precision)

    def measure(floats: frozenset[str]) -> Attempt:
        folder = ctx.work_dir / f"fallback-{len(floats)}-{abs(hash(floats)) % 10**8}"
        folder.mkdir(exist_ok=True)
        ctx.log(f"fallback: converting with {len(floats)} ONNX nodes in float")
        try:
            artifact = backend.convert(dataclasses.replace(ctx, float_layers=floats, work_dir=folder, stages=[]))
        except EdgekitError as exc:
            return Attempt(floats, False, f"error: {exc.message}", None, 0)
        verifications, error = request.verify(artifact)
        return _attempt(floats, artifact, verifications, error, request.primary)

    def relocate(attempt: Attempt) -> LocateResult | None:
        return locate(_request(request, attempt.payload[0])) if attempt.payload else None

    def eligible(point: LayerPoint) -> bool:
        return ops is None or any(graph.op(graph.index[n]) in ops for n in members(point) if n in graph.index)

    return run_fallback(graph, first, located, budget=budget, measure=measure, relocate=relocate, eligible=eligible)


def _attempt(floats: frozenset[str], artifact: Artifact, verifications: list[VerificationResult], error: EdgekitError | None,
             primary: Callable[[list[VerificationResult]], VerificationResult]) -> Attempt:
    result = primary(verifications)
    worst = min((o.sqnr_db for o in result.outputs), default=None)
    return Attempt(floats, result.status == "passed", result.status, worst, _bytes(artifact),
                   dict(artifact.details.get("float_layers", {})), (artifact, verifications, error))


def _bytes(artifact: Artifact) -> int:
    return size_of(artifact.path) + sum(size_of(p) for p in artifact.extra_files)


def attach(verification: VerificationResult, located: LocateResult) -> None:
    verification.locate = located.to_dict()
    verification.layers = [p.to_dict() for p in located.layers]
    first = located.first_divergence
    verification.first_divergence = first.summary() if first is not None else None


def _quantization(precision: str, mode: str, budget: float, artifact: Artifact, forced: dict[str, str], model: Any,
                  graph: Graph | None = None, result: FallbackResult | None = None, before: LocateResult | None = None,
                  after: LocateResult | None = None) -> dict[str, Any]:
    """The report's ``quantization``: asked vs built, and every layer kept float with why (and what it gained)."""
    ops = {node_id(node): node.op_type for node in model.graph.node}
    applied = dict(artifact.details.get("float_layers", {}))
    layers: list[dict[str, Any]] = []

    def add(node: str, reason: str, gain: float | None = None) -> None:
        if all(layer["node"] != node for layer in layers):
            layers.append({"node": node, "op": ops.get(node), "reason": reason, "sqnr_gain_db": gain})

    for node, reason in forced.items():
        add(node, reason)
    out: dict[str, Any] = {"requested": precision, "applied": precision, "fallback": mode, "budget": budget, "float_layers": layers,
                           "size_cost_bytes": 0, "parameters_in_float": 0.0, "rounds": list(artifact.details.get("fallback", {}).get("rounds", [])),
                           "stopped": artifact.details.get("fallback", {}).get("stopped")}
    fused: set[str] = set()
    if result is not None and graph is not None and result.chosen.index > 0:
        chosen = result.chosen
        for node, reason in result.reasons.items():
            if node in chosen.attempt.float_layers:
                add(node, reason, _gain(node, before, after))
                fused.update(n for n in _group_of(node, before) if n != node)
        out.update(size_cost_bytes=chosen.attempt.size_bytes - result.rounds[0].attempt.size_bytes,
                   parameters_in_float=round(param_fraction(graph, set(applied) | set(chosen.attempt.float_layers)), 4))
    if result is not None:
        out.update(rounds=[r.to_dict() for r in result.rounds], stopped=result.stopped, kept_round=result.chosen.index)
    for node, reason in applied.items():
        if node not in fused:
            add(node, reason)
    unmapped = artifact.details.get("float_layers_unmapped") or []
    if unmapped:
        out["float_layers_unmapped"] = list(unmapped)
    if layers:
        out["applied"] = "mixed"
    return out


def _group_of(node: str, located: LocateResult | None) -> list[str]:
    for point in located.layers if located else []:
        if point.node == node:
            return members(point)
    return [node]


def _gain(node: str, before: LocateResult | None, after: LocateResult | None) -> float | None:
    def sqnr(located: LocateResult | None) -> float | None:
        for point in located.layers if located else []:
            if node in members(point):
                return point.sqnr_db
        return None

    old, new = sqnr(before), sqnr(after)
    if old is None or new is None:
        return None
    if not math.isfinite(old) or not math.isfinite(new):
        return new - old if not (math.isnan(old) or math.isnan(new)) else None
    return round(new - old, 2)


def locate_stage(located: LocateResult, seconds: float) -> StageRecord:
    first = located.first_divergence
    return StageRecord("locate", round(seconds, 3), "edgekit-locate", None,
                       {"status": "skipped" if located.status == "skipped" else "passed", "method": located.method,
                        "compared_tensors": len(located.layers), "first_divergence": first.node if first else None,
                        **({"reason": located.reason} if located.reason else {})})


def _fallback_stage(result: FallbackResult, seconds: float) -> StageRecord:
    return StageRecord("fallback", round(seconds, 3), "edgekit-fallback", None,
                       {"status": "passed" if result.passed else "failed", "rounds": len(result.rounds) - 1, "stopped": result.stopped,
                        "kept_round": result.chosen.index})


class _Timer:
    """Adds up the seconds spent inside ``with`` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> _Timer:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._started
