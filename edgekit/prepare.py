"""The load stage's model preparation: what real exports need before any converter sees them.

In order: onnxruntime-only ops refused (or rewritten to float with ``--dequantize``), inputs frozen with
``--fix-input``, input shapes fixed from ``--input-shape`` and then, for targets that need static shapes,
from the sample data's shape; the sample data split into calibration and verification samples (int8 is
never verified on the samples it was calibrated on); the onnxruntime reference run.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.calibration import SampleSet, check_against, held_out_split, load_samples, random_samples
from edgekit.errors import InputError, OptionsError, StageError
from edgekit.fix_inputs import FixedInput, apply_fixed_inputs
from edgekit.metrics import compare, merge
from edgekit.modelio import LoadedModel, apply_input_shapes, check_model, describe, load_model
from edgekit.profiles import Preprocessing, TargetProfile
from edgekit.reference import run_reference
from edgekit.types import BuildOptions, TensorSpec

#: converters read models in this opset's semantics: onnx2tf and pnnx applied an opset<13 Softmax(axis=1) (flatten
#: from axis 1, then softmax) to a size-1 axis of [1, 1000, 1, 1] (the zoo's SqueezeNet: every output 1.0, -60 dB)
CONVERTER_OPSET = 13
#: samples read from --calib at most (calibration converges long before; verification takes --samples of them)
MAX_CALIBRATION_SAMPLES = 256
_HELD_OUT = re.compile(r"^held-out:(?P<path>.*)\[(?P<start>\d+):(?P<stop>\d+)\]$")
_RANDOM = re.compile(r"^random\(seed=(-?\d+)\)$")


@dataclass
class Prepared:
    loaded: LoadedModel  # dequantized, inputs frozen, shapes fixed: the model the build converts
    calibration: SampleSet | None  # what calibration sees (without the held-out samples)
    samples: SampleSet  # the verification inputs
    references: list[dict[str, np.ndarray]]
    calibrates: bool  # whether this build calibrates on ``calibration``
    fixed_inputs: list[FixedInput] = field(default_factory=list)
    shapes_from_data: dict[str, list[int]] = field(default_factory=dict)
    dequantized: dict[str, Any] | None = None
    opset_upgraded_from: int | None = None  # the model converters see was upgraded to CONVERTER_OPSET from this

    @property
    def calibration_samples(self) -> int:
        return self.calibration.count if self.calibrates and self.calibration is not None else 0

    def report_keys(self) -> dict[str, Any]:
        return {"fixed_inputs": {f.name: f.to_dict() for f in self.fixed_inputs}, "shapes_from_data": self.shapes_from_data,
                "dequantized": self.dequantized}


def _dequantized_model(loaded: LoadedModel, path: Path, allowed: bool) -> tuple[LoadedModel, LoadedModel | None, dict[str, int] | None]:
    """(the model to build, the original when it was rewritten, the ops rewritten)."""
    from edgekit import ortops

    if not ortops.ort_only_nodes(loaded.proto):
        return loaded, None, None
    if not allowed or not ortops.rewritable(loaded.proto):
        ortops.refuse(loaded.proto, path)
    rewritten, ops = ortops.dequantize(loaded.proto)
    proto = check_model(rewritten, path)
    inputs, outputs = describe(proto)
    return dataclasses.replace(loaded, proto=proto, inputs=inputs, outputs=outputs), loaded, ops


def _initializers_not_inputs(loaded: LoadedModel) -> LoadedModel:
    """IR-3 exports list every initializer in graph.input; converters then take one for the model input (pnnx bound
    [1, 3, 224, 224] to DenseNet's 'conv1/bn_scale_0'). edgekit already treats them as constants: say so in the model."""
    graph = loaded.proto.graph
    constants = {t.name for t in graph.initializer}
    kept = [value for value in graph.input if value.name not in constants]
    if len(kept) < len(graph.input):
        del graph.input[:]
        graph.input.extend(kept)
        loaded.proto.ir_version = max(int(loaded.proto.ir_version), 4)  # IR 4 lets initializers stay out of the inputs
    return loaded


def _load_data(options: BuildOptions, inputs: list[TensorSpec], pre: Preprocessing) -> tuple[SampleSet | None, SampleSet | None]:
    calib = load_samples(options.calib, inputs, pre, MAX_CALIBRATION_SAMPLES) if options.calib else None
    verify = load_samples(options.verify_data, inputs, pre, options.max_samples, kind="verify-data") if options.verify_data else None
    return calib, verify


def shapes_from_data(inputs: list[TensorSpec], sets: list[SampleSet]) -> dict[str, tuple[int, ...]]:
    """Full shapes for inputs with dynamic dims, from the samples' shape; all sample sets must agree."""
    found: dict[str, tuple[int, ...]] = {}
    for spec in inputs:
        if spec.is_static:
            continue
        seen = {s.source: s.shapes()[spec.name] for s in sets if spec.name in s.arrays}
        if len(set(seen.values())) > 1:
            raise OptionsError(f"input '{spec.name}' {list(spec.shape)} has dynamic dims and the sample sets disagree on its shape: "
                               + ", ".join(f"{list(shape)} in {source}" for source, shape in seen.items()),
                               hint=f"fix it with --input-shape {spec.name}=..., or give samples of one shape")
        if seen:
            found[spec.name] = next(iter(seen.values()))
    return found


def choose_samples(calib: SampleSet | None, verify: SampleSet | None, calibrates: bool, inputs: list[TensorSpec],
                   count: int, seed: int) -> tuple[SampleSet | None, SampleSet]:
    """(calibration samples, verification samples). With --verify-data, calibration takes all of --calib; else a
    calibrating build holds out the last 20% (at least one) of --calib for verification; a float build verifies
    on the first ``count`` samples of --calib (nothing was fitted to them); without data, seeded random inputs."""
    if verify is not None:
        return calib, verify.head(count)
    if calib is None:
        return None, random_samples(inputs, count, seed)
    if not calibrates:
        return calib, calib.head(count)
    path = calib.source.split(":", 1)[1]
    start = held_out_split(calib.count, path)
    stop = min(calib.count, start + count)
    return calib.head(start), calib.select(start, stop, f"held-out:{path}[{start}:{stop}]")


def refuse_blocking(blocking: list[str], profile: TargetProfile, model_path: Path, defer_if: bool = False) -> None:
    """Raise StageError naming the ops the backend cannot take (``blocking_ops`` lines, "op (nodes): reason")."""
    if defer_if:
        blocking = [line for line in blocking if not line.startswith("If ")]
    if blocking:
        raise StageError(f"the {profile.backend} backend cannot convert these ops:\n  " + "\n  ".join(blocking),
                         hint=f"run 'edgekit inspect {model_path} --target {profile.name}', or pick another target"
                         + ("; an If that depends only on an input (a sample rate, a flag) folds away with --fix-input NAME=VALUE"
                            if any(line.startswith("If ") for line in blocking) else ""))


def upgrade_opset(loaded: LoadedModel, samples: SampleSet, references: list[dict[str, np.ndarray]],
                  log: Callable[[str], None]) -> int | None:
    """Bring the model converters see to CONVERTER_OPSET (the reference stays the user's model); returns the old
    opset, or None when it was already there or the upgraded model does not compute the same (then it is kept)."""
    import onnx

    from edgekit.simplify import differs

    if loaded.opset >= CONVERTER_OPSET:
        return None
    try:
        upgraded = onnx.version_converter.convert_version(loaded.proto, CONVERTER_OPSET)
        del upgraded.graph.value_info[:]  # stale types (Dropout's mask was float before opset 12) fail re-inference
        upgraded = check_model(upgraded, loaded.path)
    except Exception as exc:  # the version converter raises anything from a missing adapter to shape errors
        log(f"kept opset {loaded.opset}: the ONNX version converter failed ({str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__})")
        return None
    problem = differs(upgraded, samples, references)
    if problem:
        log(f"kept opset {loaded.opset}: the model upgraded to opset {CONVERTER_OPSET} computes something else ({problem})")
        return None
    loaded.proto = upgraded
    return loaded.opset


def outputs_as_run(declared: list[TensorSpec], references: list[dict[str, np.ndarray]]) -> list[TensorSpec]:
    """Output specs with the shapes onnxruntime produced: exporters declare wrong or open output shapes (ddddocr's
    recognizer declares [1, seqlen] and returns [T, 1, classes]); an output whose shape varies by sample keeps its own."""
    specs = []
    for spec in declared:
        shapes = {tuple(int(d) for d in ref[spec.name].shape) for ref in references if spec.name in ref}
        specs.append(dataclasses.replace(spec, shape=shapes.pop()) if len(shapes) == 1 else spec)
    return specs


def samples_from_source(source: str, count: int, inputs: list[TensorSpec], pre: Preprocessing) -> SampleSet:
    """The verification inputs a report's ``input_source`` names, re-created (``edgekit verify``)."""
    if match := _RANDOM.match(source):
        return random_samples(inputs, count, int(match[1]))
    if match := _HELD_OUT.match(source):
        start, stop = int(match["start"]), int(match["stop"])
        data = load_samples(Path(match["path"]), inputs, pre, MAX_CALIBRATION_SAMPLES)
        if data.count < stop:
            raise InputError(f"the report verified on samples {start}..{stop - 1} of {match['path']}, which now holds {data.count}",
                             hint="restore the calibration data the build used, or rebuild")
        return data.select(start, stop, source)
    kind, _, path = source.partition(":")
    if kind in ("calibration", "verify-data") and path:
        return load_samples(Path(path), inputs, pre, MAX_CALIBRATION_SAMPLES, kind=kind).head(count)
    raise InputError(f"the report's input_source {source!r} is not one edgekit can reproduce")


def _dequantize_check(original: LoadedModel, loaded: LoadedModel, fixes: dict[str, Any], ops: dict[str, int], samples: SampleSet,
                      references: list[dict[str, np.ndarray]], profile: TargetProfile) -> dict[str, Any]:
    """The float rewrite against onnxruntime running the original (quantized) model, within the int8 tolerances."""
    original_loaded, _ = apply_fixed_inputs(original, fixes)
    expected = run_reference(original_loaded.proto, samples)
    tolerance = profile.tolerance_for("int8")
    # top-1 along the last axis for every output with one (reported, not gated): greedy decoding of the CTC logits
    # of ddddocr's recognizer agrees iff every position's top class does
    outputs = [merge([compare(spec.name, e[spec.name], r[spec.name], tolerance, class_scores=e[spec.name].ndim > 0 and e[spec.name].shape[-1] >= 2)
                      for e, r in zip(expected, references, strict=True)], tolerance) for spec in loaded.outputs]
    check = {"samples": samples.count, "input_source": samples.source, "tolerances": tolerance.to_dict(), "passed": all(o.passed for o in outputs),
             "outputs": [{"name": o.name, "sqnr_db": o.sqnr_db, "cosine": o.cosine, "max_abs_error": o.max_abs_error, "gain": o.gain,
                          "top1_agreement": o.top1_agreement, "passed": o.passed, "failures": o.failures} for o in outputs]}
    if not check["passed"]:
        bad = "; ".join(f"{o.name}: {', '.join(o.failures)}" for o in outputs if not o.passed)
        raise StageError(f"load: the float rewrite of the quantized ops does not match onnxruntime's run of the original model ({bad})",
                         hint="export the float model instead of the onnxruntime-quantized one")
    return {"ops": ops, "check": check}


def prepare(model_path: Path, profile: TargetProfile, precision: str, options: BuildOptions, calibrates: bool,
            blocking_ops: Callable[[Any], list[str]], log: Callable[[str], None] = lambda message: None) -> Prepared:
    """Load, check and prepare the model and its samples for one build (see the module docstring)."""
    loaded = _initializers_not_inputs(load_model(model_path))
    loaded, original, ops = _dequantized_model(loaded, model_path, options.dequantize)
    unknown = sorted((set(profile.checks) | set(options.checks)) - {spec.name for spec in loaded.outputs})
    if unknown:
        raise OptionsError(f"--check names output(s) {', '.join(unknown)}, but the model's outputs are: {', '.join(s.name for s in loaded.outputs)}")
    fixes = {**profile.fix_inputs, **options.fix_inputs}
    loaded, fixed = apply_fixed_inputs(loaded, fixes)
    loaded = apply_input_shapes(loaded, options.input_shapes, require_static=False)
    calib, verify = _load_data(options, loaded.inputs, profile.preprocessing)
    from_data = shapes_from_data(loaded.inputs, [s for s in (calib, verify) if s is not None]) if profile.static_shapes else {}
    if from_data:
        log("took input dims from the sample data: " + ", ".join(f"{name}={'x'.join(map(str, shape))}" for name, shape in from_data.items()))
    loaded = apply_input_shapes(loaded, from_data, require_static=profile.static_shapes)
    for data in (calib, verify):
        if data is not None:
            check_against(data, loaded.inputs)
    # an If whose condition is constant once inputs are fixed folds away in simplification: judged after it
    refuse_blocking(blocking_ops(loaded.proto), profile, model_path, defer_if=options.simplify)
    calibration, samples = choose_samples(calib, verify, calibrates, loaded.inputs, options.max_samples, options.seed)
    references = run_reference(loaded.proto, samples)
    loaded.outputs = outputs_as_run(loaded.outputs, references)
    dequantized = _dequantize_check(original, loaded, fixes, ops or {}, samples, references, profile) if original is not None else None
    upgraded_from = upgrade_opset(loaded, samples, references, log)
    return Prepared(loaded, calibration, samples, references, calibrates, fixed, {k: list(v) for k, v in from_data.items()}, dequantized,
                    upgraded_from)
