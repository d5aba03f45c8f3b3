"""TensorRT int8: the QDQ model, its onnxruntime check on the host, and per-layer fallback on that check.

The QDQ model is what TensorRT is told to quantize, and onnxruntime runs it here without a GPU, so locating
the first divergent node and keeping sensitive nodes out of quantization (``nodes_to_exclude``) happen on the
host, before any engine is built. Tensor names survive onnxruntime's quantizer, so the two models are compared
by name (:func:`edgekit.debug.locate.locate_onnx`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.backends.base import ConvertContext
from edgekit.backends.tensorrt.options import TrtOptions
from edgekit.errors import StageError, VerificationFailed

QDQ_CHECK_SAMPLES = 8


@dataclass
class Int8Result:
    path: Path
    detail: dict[str, Any]
    float_layers: dict[str, str] = field(default_factory=dict)


def quantize(ctx: ConvertContext, onnx_path: Path, options: TrtOptions) -> Int8Result:
    """The checked QDQ model; with ``ctx.fallback_budget``, sensitive nodes are kept in float until it passes."""
    from edgekit.debug.fallback import Attempt, run_fallback
    from edgekit.debug.graph import Graph
    from edgekit.debug.locate import locate_onnx
    from edgekit.modelio import read_model_proto
    from edgekit.qdq import check_qdq, quantize_qdq

    if ctx.calibration is None:
        raise StageError("quantize: int8 needs calibration data")  # the pipeline checks this earlier
    started = time.perf_counter()
    tolerance = ctx.profile.tolerance_for("int8")
    samples = ctx.calibration.head(min(QDQ_CHECK_SAMPLES, ctx.calibration.count))
    by_name = onnx_path == ctx.model_path  # a shape-range build quantizes the source model, whose names may differ

    def attempt(floats: frozenset[str]) -> Attempt:
        asked = [ctx.model_node(node) for node in options.int8_exclude_nodes] if by_name else list(options.int8_exclude_nodes)
        excluded = tuple(dict.fromkeys([*asked, *sorted(floats)]))
        target = ctx.work_dir / (f"{ctx.artifact_stem}.qdq.onnx" if not floats else f"{ctx.artifact_stem}.qdq-{len(floats)}.onnx")
        qdq = quantize_qdq(onnx_path, ctx.calibration, target, op_types=options.int8_op_types,  # type: ignore[arg-type]
                           calibration_method=options.calibration_method, nodes_to_exclude=excluded)
        check = check_qdq(ctx.model_path, qdq.path, samples, tolerance)
        return Attempt(floats, check.passed, "passed" if check.passed else "failed", min(o.sqnr_db for o in check.outputs),
                       qdq.path.stat().st_size, {n: "excluded from Q/DQ insertion (nodes_to_exclude)" for n in floats}, (qdq, check))

    def relocate(done: Attempt) -> Any:
        return locate_onnx(ctx.model, read_model_proto(done.payload[0].path), samples, tolerance) if by_name else None

    ctx.log("onnxruntime: inserting Q/DQ nodes (explicit int8 quantization)")
    chosen = first = attempt(frozenset(ctx.float_layers))
    fallback: dict[str, Any] | None = None
    if not first.passed and ctx.fallback_budget is not None and by_name:
        ctx.log("onnxruntime: the QDQ model fails its check; locating the first divergent node")
        graph = Graph(ctx.model)
        # any node may matter: the QDQ pass also quantizes tensors written by ops it fuses with (a Conv's ReLU)
        result = run_fallback(graph, first, relocate(first), budget=ctx.fallback_budget, measure=attempt, relocate=relocate)
        chosen = result.chosen.attempt
        fallback = {"rounds": [r.to_dict() for r in result.rounds], "stopped": result.stopped, "kept_round": result.chosen.index,
                    "reasons": {n: result.reasons[n] for n in result.reasons if n in chosen.float_layers}}
    qdq, check = chosen.payload
    detail = {**qdq.to_dict(), "check": check.to_dict(), **({"fallback": fallback} if fallback else {})}
    ctx.record("quantize", started, "onnxruntime.quantization", qdq.tool_version, **qdq.to_dict(), check_passed=check.passed,
               min_sqnr_db=min(o.sqnr_db for o in check.outputs), min_cosine=min(o.cosine for o in check.outputs),
               **({"fallback_rounds": len(fallback["rounds"]) - 1, "float_layers": sorted(ctx.user_node(n) for n in chosen.float_layers)} if fallback else {}))
    if not check.passed:
        worst = ", ".join(f"{o.name}: cosine {o.cosine:.4f}, SQNR {o.sqnr_db:.1f} dB" for o in check.outputs if not o.passed)
        located = relocate(chosen)
        where = f"; first divergent node: {ctx.user_node(located.first_divergence.node)}" if located and located.first_divergence else ""
        tried = f"; per-layer fallback kept {len(chosen.float_layers)} nodes in float and stopped ({fallback['stopped']})" if fallback else ""
        raise VerificationFailed(
            f"the int8 QDQ model fails its onnxruntime check against the float model ({worst}; needs cosine >= "
            f"{tolerance.min_cosine} and SQNR >= {tolerance.min_sqnr_db} dB over {check.samples} calibration samples){where}{tried}; no engine was built",
            hint="calibrate with more representative data (same preprocessing as in deployment), try backend_options.calibration_method = "
            "\"entropy\" or \"percentile\", keep sensitive nodes in float with backend_options.int8_exclude_nodes or --fallback auto "
            "with a larger --fallback-budget, or use --precision fp16")
    reasons = (fallback or {}).get("reasons", {})
    return Int8Result(qdq.path, detail, {n: reasons.get(n, why) for n, why in chosen.applied.items()})
