"""The Core ML route's PyTorch leg: ONNX -> torch module (onnx2torch) -> torch.export (or trace).

coremltools 9 has no ONNX frontend, so edgekit goes through PyTorch. Each step is checked against
onnxruntime on the same inputs, because a silent numeric change here is the most common way the
route goes wrong, and it can be seen on Linux where Core ML itself cannot run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit._lazy import require
from edgekit.backends.coreml.onnx_fixes import dropout_as_identity, inference_dropouts, prelu_as_relus
from edgekit.calibration import SampleSet
from edgekit.errors import StageError
from edgekit.metrics import compare, merge
from edgekit.profiles import Tolerance
from edgekit.types import OutputMetrics

_NOT_IMPLEMENTED = re.compile(r"operation_type='([^']+)'")


def blocking_nodes(model: Any) -> dict[str, list[str]]:
    """op_type -> node names for nodes onnx2torch has no converter for (at the model's opset)."""
    registry = require("onnx2torch.node_converters.registry", "coreml", purpose="ONNX to PyTorch for Core ML")
    opsets = {entry.domain or "": entry.version for entry in model.opset_import}
    rewritten = set(inference_dropouts(model))  # these become Identity before onnx2torch sees them (onnx_fixes)
    found: dict[str, list[str]] = {}
    for position, node in enumerate(model.graph.node):
        if position in rewritten:
            continue
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        try:
            registry.get_converter(node.op_type, opsets.get(domain, opsets.get("", 1)), domain or "")
        except NotImplementedError:
            found.setdefault(node.op_type if not domain else f"{domain}.{node.op_type}", []).append(node.name or "<unnamed>")
    return found


def describe_blocking(found: dict[str, list[str]]) -> list[str]:
    return [f"{op} (nodes: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): onnx2torch has no converter for it, so the Core ML route stops here"
            for op, names in found.items()]


def to_torch(model: Any) -> Any:
    """The onnx2torch module in eval mode; unsupported ops become a StageError naming op and nodes."""
    onnx2torch = require("onnx2torch", "coreml", purpose="ONNX to PyTorch for Core ML")
    model, _ = prelu_as_relus(model)  # coremltools' prelu takes ranks 3-5 only
    model, _ = dropout_as_identity(model)  # onnx2torch's Dropout breaks the next layer
    try:
        return onnx2torch.convert(model).eval()
    except NotImplementedError as exc:
        match = _NOT_IMPLEMENTED.search(str(exc))
        op = match.group(1) if match else str(exc)
        nodes = [n.name or "<unnamed>" for n in model.graph.node if n.op_type == op]
        raise StageError(f"convert: onnx2torch cannot convert ONNX op {op} (nodes: {', '.join(nodes[:5]) or 'unknown'}): {exc}",
                         hint="replace the op in the exported model, or pick a target whose backend takes it") from None
    except Exception as exc:
        raise StageError(f"convert: onnx2torch failed: {type(exc).__name__}: {exc}",
                         hint="rerun with --keep-work and check the simplified model in the work folder") from None


@dataclass
class IntermediateCheck:
    """How a PyTorch step's outputs compare with onnxruntime's."""

    step: str
    passed: bool
    samples: int
    outputs: list[OutputMetrics] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "passed": self.passed, "samples": self.samples,
                "outputs": [{"name": o.name, "cosine": o.cosine, "sqnr_db": o.sqnr_db, "max_abs_error": o.max_abs_error,
                             "passed": o.passed, "failures": o.failures} for o in self.outputs]}


def run_torch(module: Any, input_names: list[str], sample: dict[str, np.ndarray]) -> list[np.ndarray]:
    torch = require("torch", "coreml")
    with torch.no_grad():
        result = module(*(torch.from_numpy(np.ascontiguousarray(sample[name])) for name in input_names))
    values = result if isinstance(result, (tuple, list)) else (result,)
    return [v.detach().cpu().numpy() for v in values]


def check_against_reference(step: str, module: Any, input_names: list[str], output_names: list[str], samples: SampleSet,
                            references: list[dict[str, np.ndarray]], tolerance: Tolerance) -> IntermediateCheck:
    per_output: dict[str, list[OutputMetrics]] = {name: [] for name in output_names}
    for index in range(samples.count):
        try:
            produced = run_torch(module, input_names, samples.sample(index))
        except Exception as exc:
            raise StageError(f"convert: the {step} PyTorch module failed to run on sample {index}: {type(exc).__name__}: {exc}",
                             hint="the model may use an op onnx2torch converts only partly; rerun with --keep-work") from None
        if len(produced) != len(output_names):
            raise StageError(f"convert: the {step} PyTorch module returned {len(produced)} outputs, the ONNX model has {len(output_names)}")
        for name, value in zip(output_names, produced, strict=True):
            per_output[name].append(compare(name, references[index][name], value, tolerance))
    merged = [merge(metrics, tolerance) for metrics in per_output.values()]
    return IntermediateCheck(step, all(m.passed for m in merged), samples.count, merged)


def require_passed(check: IntermediateCheck, tolerance: Tolerance) -> None:
    if check.passed:
        return
    differing = "; ".join(f"output '{o.name}': {', '.join(o.failures)}" for o in check.outputs if not o.passed)
    raise StageError(f"convert: the {check.step} PyTorch module does not match onnxruntime within the fp32 tolerance "
                     f"(cosine >= {tolerance.min_cosine}, SQNR >= {tolerance.min_sqnr_db} dB): {differing}",
                     hint="the ONNX-to-PyTorch step changed the model's numbers; this is a converter bug, not a precision "
                          "effect. Report it with the model, or pick another target")


def export(module: Any, input_names: list[str], sample: dict[str, np.ndarray]) -> tuple[Any, str, str | None]:
    """(program, how, why export failed): torch.export first, torch.jit.trace where export fails."""
    torch = require("torch", "coreml")
    example = tuple(torch.from_numpy(np.ascontiguousarray(sample[name])) for name in input_names)
    try:
        program = torch.export.export(module, example).run_decompositions({})
        return program, "torch.export", None
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    try:
        with torch.no_grad():
            return torch.jit.trace(module, example, check_trace=False), "torch.jit.trace", reason
    except Exception as exc:
        raise StageError(f"convert: neither torch.export ({reason}) nor torch.jit.trace ({type(exc).__name__}: {exc}) "
                         "could capture the PyTorch module", hint="rerun with --keep-work; the model may have data-dependent control flow") from None


def program_module(program: Any, how: str) -> Any:
    """Something callable with positional tensors, to check what coremltools will see."""
    return program.module() if how == "torch.export" else program
