"""PyTorch -> ONNX: torch.onnx's dynamo exporter where it works, the TorchScript exporter as the fallback (the
report says which and why), then the export check against the module run the way it was handed to us."""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._lazy import require, version_of
from edgekit.calibration import SampleSet
from edgekit.errors import ModelError, OptionsError, StageError
from edgekit.export import ExportSettings
from edgekit.export.check import check_export, export_samples, load_exported
from edgekit.export.pytorch_load import load_torch_file

DYNAMO_OPSET = 18  # the dynamo exporter's lowest
TORCHSCRIPT_OPSET = 17
_RANDOMNESS = ("Dropout", "BatchNorm", "AlphaDropout", "FeatureAlphaDropout")


@dataclass
class TorchSource:
    kind: str  # "module" | "pt2" | "torchscript" | "pickled-module"
    model: Any  # what torch.onnx.export gets
    callable: Any  # what the reference run calls
    input_names: list[str]
    examples: tuple  # example tensors, in input order


def export_torch(model: Any, settings: ExportSettings, target: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    torch = require("torch", "torch", purpose="exporting PyTorch models to ONNX")
    source = _source(model, settings, torch)
    output_names = _output_names(source, torch)
    exporter, fallback_reason, opset = _export(source, settings, output_names, target, torch)
    shapes = {name: tuple(int(d) for d in example.shape) for name, example in zip(source.input_names, source.examples, strict=True)}
    loaded = load_exported(target, settings, shapes)
    samples = export_samples(loaded, settings)
    check = check_export(loaded, samples, lambda s: _run(source, s, torch), settings, "PyTorch", _training_diagnosis(source.callable))
    info = {"framework": "pytorch", "source_format": source.kind, "tool": "torch.onnx", "tool_version": version_of("torch"),
            "exporter": exporter, "fallback_reason": fallback_reason, "opset": opset,
            "onnxscript_version": version_of("onnxscript"), "input_names": source.input_names, "output_names": output_names,
            "input_shapes": {k: list(v) for k, v in shapes.items()}, **check}
    return info, {spec.name: tuple(int(d) for d in spec.shape) for spec in loaded.inputs}


def _source(model: Any, settings: ExportSettings, torch: Any) -> TorchSource:
    if isinstance(model, (str, Path)):
        kind, loaded = load_torch_file(Path(model), settings.trust_pickle)
    else:
        kind, loaded = "module", model
    if isinstance(loaded, torch.export.ExportedProgram):
        names = [spec.arg.name for spec in loaded.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
        stored = tuple(loaded.example_inputs[0]) if loaded.example_inputs else ()
        examples = _examples(names, settings, torch, stored if len(stored) == len(names) else None)
        return TorchSource("pt2" if kind != "module" else "exported-program", loaded, loaded.module(), names, examples)
    if not isinstance(loaded, torch.nn.Module):
        raise ModelError(f"edgekit.build got a {type(loaded).__name__}; it takes an ONNX file, a model file, or a torch.nn.Module")
    if isinstance(loaded, torch.jit.ScriptModule):
        names = [arg.name for arg in loaded.forward.schema.arguments[1:]]
    else:
        names = _forward_names(loaded)
    given = tuple(settings.example_inputs) if settings.example_inputs is not None else None
    return TorchSource("torchscript" if isinstance(loaded, torch.jit.ScriptModule) and kind != "module" else kind,
                       loaded, loaded, names, _examples(names, settings, torch, given))


def _forward_names(module: Any) -> list[str]:
    params = inspect.signature(module.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _examples(names: list[str], settings: ExportSettings, torch: Any, given: tuple | None) -> tuple:
    """Example inputs: given ones (API, .pt2), with --input-shape replacing their shapes; else random float32 at --input-shape."""
    unknown = set(settings.input_shapes) - set(names)
    if unknown:
        raise OptionsError(f"--input-shape names {', '.join(sorted(unknown))}, but the model's inputs are: {', '.join(names)}")
    if given is not None:
        if len(given) > len(names):
            names.extend(f"input_{i}" for i in range(len(names), len(given)))
        del names[len(given):]  # optional forward arguments that were not given are not inputs
        if not all(isinstance(g, torch.Tensor) for g in given):
            raise OptionsError("example_inputs must be a tuple of tensors (one per forward argument)")
        generator = torch.Generator().manual_seed(settings.seed)
        return tuple(torch.randn(settings.input_shapes[n], generator=generator).to(g.dtype) if n in settings.input_shapes else g
                     for n, g in zip(names, given, strict=True))
    missing = [n for n in names if n not in settings.input_shapes]
    if missing:
        example = " ".join(f"--input-shape {n}=1x3x224x224" for n in missing)
        raise OptionsError(f"this PyTorch model does not record its input shapes; edgekit needs them for {', '.join(missing)}",
                           hint=f"give them, e.g. {example} (float32 inputs), or in Python pass example_inputs=(x,)")
    generator = torch.Generator().manual_seed(settings.seed)
    return tuple(torch.randn(settings.input_shapes[n], generator=generator) for n in names)


def _output_names(source: TorchSource, torch: Any) -> list[str]:
    with torch.no_grad():
        count = len(_flatten(source.callable(*source.examples), torch))
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _export(source: TorchSource, settings: ExportSettings, output_names: list[str], target: Path, torch: Any) -> tuple[str, str | None, int]:
    """("dynamo" | "torchscript", why the dynamo exporter was not used, opset)."""
    try:
        with _quiet():
            program = _dynamo_program(source, torch)
            onnx_program = torch.onnx.export(program, source.examples, dynamo=True, input_names=source.input_names,
                                             output_names=output_names, opset_version=DYNAMO_OPSET, verbose=False,
                                             dynamic_shapes=settings.dynamic_shapes if source.kind == "module" else None)
            onnx_program.save(str(target))
        return "dynamo", None, DYNAMO_OPSET
    except Exception as exc:  # the dynamo exporter raises many types (TorchExportError, ImportError without onnxscript, ...)
        reason = _reason(exc)
    legacy = source.model.module() if isinstance(source.model, torch.export.ExportedProgram) else source.model
    try:
        with _quiet():
            torch.onnx.export(legacy, source.examples, str(target), dynamo=False, input_names=source.input_names,
                              output_names=output_names, opset_version=TORCHSCRIPT_OPSET)
    except Exception as exc:  # the TorchScript exporter raises its own SymbolicValueError, RuntimeError, ...
        raise StageError(f"export: torch.onnx could not export the model: dynamo exporter: {reason}; TorchScript exporter: {_reason(exc)}",
                         hint="check that torch.export.export(model, example_inputs) works; 'pip install onnxscript' enables the dynamo exporter") from None
    return "torchscript", reason, TORCHSCRIPT_OPSET


def _dynamo_program(source: TorchSource, torch: Any) -> Any:
    """What the dynamo exporter takes: modules and ExportedPrograms as they are, TorchScript converted to an ExportedProgram."""
    if isinstance(source.model, torch.jit.ScriptModule):
        from torch._export.converter import TS2EPConverter  # torch.onnx's own advice for ScriptModules

        return TS2EPConverter(source.model, source.examples).convert()
    return source.model


@contextlib.contextmanager
def _quiet():
    # torch.onnx prints progress on stdout, which must stay clean for --json; warnings go to the report instead
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(("-", "#"))]
    summary = next((line for line in lines if "Exception summary" not in line and "step" not in line.lower()), "")
    detail = next((line for line in lines if line.startswith("<class")), "")
    text = f"{type(exc).__name__}: {summary}" + (f" ({detail})" if detail and detail != summary else "")
    return text[:500]


def _flatten(value: Any, torch: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flatten(v, torch)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flatten(v, torch)]
    return []


def _run(source: TorchSource, samples: SampleSet, torch: Any) -> list[list[np.ndarray]]:
    results = []
    with torch.no_grad():
        for index in range(samples.count):
            sample = samples.sample(index)
            inputs = [torch.from_numpy(np.ascontiguousarray(sample[name])) for name in source.input_names]
            results.append([t.detach().cpu().numpy() for t in _flatten(source.callable(*inputs), torch)])
    return results


def _training_diagnosis(module: Any) -> str | None:
    modules = list(module.modules()) if hasattr(module, "modules") else []
    random = sorted({_kind(m) for m in modules if getattr(m, "training", False) and _kind(m).startswith(_RANDOMNESS)})
    if random:
        return (f"the module is in training mode ({', '.join(random)}): dropout/batch-norm make outputs random or batch-dependent; "
                "call model.eval() before exporting")
    return None


def _kind(module: Any) -> str:
    return getattr(module, "original_name", None) or type(module).__name__
