"""Load & check: read an untrusted ONNX file safely, validate it, and describe its inputs/outputs.

External-data references are checked here, *before* onnx or onnxruntime touch them: onnx's own
loader has had path-traversal, symlink and hard-link bypasses, and onnxruntime follows hard links.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._lazy import require
from edgekit.errors import ModelError, OptionsError
from edgekit.fsutil import sha256_file
from edgekit.types import TensorSpec

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

# Refuse models whose declared tensors would need more than this, before allocating anything.
# 2 GiB is also protobuf's limit for one in-memory model, which onnx.checker and the converters need.
MAX_DECLARED_BYTES = int(os.environ.get("EDGEKIT_MAX_MODEL_BYTES", 2 * 1024**3))
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class LoadedModel:
    path: Path
    proto: Any  # onnx.ModelProto with external data loaded
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    file_bytes: int
    external_files: list[Path] = field(default_factory=list)
    ir_version_lowered_from: int | None = None


def _onnx():
    return require("onnx", "core", purpose="reading ONNX models")


def _fail(path: Path, problem: str, hint: str | None = None) -> ModelError:
    return ModelError(f"{path}: {problem}", hint=hint)


def read_model_proto(path: Path) -> Any:
    """Parse the protobuf without loading external data; errors say what the file looks like."""
    onnx = _onnx()
    if not path.exists():
        raise _fail(path, "no such file", hint="check the path to your .onnx model")
    if path.is_dir():
        raise _fail(path, "is a directory, not an ONNX file")
    if not path.is_file():
        raise _fail(path, "is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "is empty (0 bytes)", hint="re-export the model; the file was probably not written completely")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == _ZIP_MAGIC:
        raise _fail(path, "is a zip archive, not an ONNX protobuf", hint="unpack it first, or export the model to ONNX (e.g. torch.onnx.export)")
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise _fail(path, f"is not a valid ONNX model (protobuf does not parse: {exc}); the file may be truncated or not ONNX at all", hint="re-export or re-download the model") from None
    if not model.graph.node and not model.graph.output:
        raise _fail(path, "parses as protobuf but holds no ONNX graph (no nodes, no outputs); it is probably not an ONNX model or is truncated")
    if not model.opset_import:
        raise _fail(path, "declares no opset (opset_import is empty); it is not a usable ONNX model")
    return model


def _all_tensors(model: Any):
    """Every TensorProto in the model: initializers, node attributes, subgraphs (If/Loop bodies) and the nodes of
    model-local functions, which onnx's loader also fills from external data. Attributes are read by the fields
    that are set, not by their declared type, as onnx's loader does."""

    def from_nodes(nodes):
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                sparse_tensors = [attr.sparse_tensor, *attr.sparse_tensors] if attr.HasField("sparse_tensor") else list(attr.sparse_tensors)
                for sparse in sparse_tensors:
                    yield sparse.values
                    yield sparse.indices
                if attr.HasField("g"):
                    yield from visit(attr.g)
                for graph in attr.graphs:
                    yield from visit(graph)

    def visit(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        yield from from_nodes(graph.node)

    yield from visit(model.graph)
    for function in model.functions:
        yield from from_nodes(function.node)


def _tensor_nbytes(tensor: Any) -> int | None:
    onnx = _onnx()
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    count = 1
    for dim in tensor.dims:
        if dim < 0:
            raise ModelError(f"tensor '{tensor.name}' declares a negative dimension {dim}")
        count *= dim
    return count * itemsize


def check_external_data(model: Any, path: Path) -> list[Path]:
    """Validate every external-data reference against the model's folder; returns the files used."""
    onnx = _onnx()
    base = path.parent.resolve()
    files: set[Path] = set()
    declared_total = 0
    for tensor in _all_tensors(model):
        expected = _tensor_nbytes(tensor)
        declared_total += expected or 0
        if declared_total > MAX_DECLARED_BYTES:
            raise _fail(path, f"declares tensors needing more than {MAX_DECLARED_BYTES / 1024**3:.1f} GiB (at '{tensor.name}', dims {list(tensor.dims)}); refusing to load it",
                        hint="edgekit handles models up to 2 GiB of weights (protobuf's limit), which covers edge models; check that the file is what you think it is")
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            if expected is not None and tensor.HasField("raw_data") and len(tensor.raw_data) != expected:
                raise _fail(path, f"tensor '{tensor.name}' has {len(tensor.raw_data)} bytes of raw data but its dims and dtype need {expected}")
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"tensor '{tensor.name}' external data location {location!r}"
        if not location:
            raise _fail(path, f"tensor '{tensor.name}' is marked external but names no location")
        rel = Path(location)
        if rel.is_absolute() or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
            raise _fail(path, f"{where} is an absolute path; external data must live inside the model's folder")
        if ".." in rel.parts or ".." in location.replace("\\", "/").split("/"):
            raise _fail(path, f"{where} contains '..'; external data must live inside the model's folder")
        target = base / rel
        if not target.exists() and not target.is_symlink():
            raise _fail(path, f"{where}: file not found next to the model", hint="copy the external data file(s) into the model's folder")
        resolved = target.resolve()
        if target.is_symlink() or not resolved.is_relative_to(base):
            raise _fail(path, f"{where} is a symbolic link or resolves outside the model's folder ({resolved})")
        info_stat = resolved.stat()
        if not stat.S_ISREG(info_stat.st_mode):
            raise _fail(path, f"{where} is not a regular file")
        if info_stat.st_nlink > 1:
            raise _fail(path, f"{where} is a hard link (link count {info_stat.st_nlink}); refusing it because it may point outside the model's folder", hint="copy the data file instead of linking it")
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise _fail(path, f"{where} has a non-numeric offset or length") from None
        if offset < 0 or (length is not None and length < 0):
            raise _fail(path, f"{where} has a negative offset or length")
        available = info_stat.st_size - offset
        if length is None:
            length = available
        if offset + length > info_stat.st_size:
            raise _fail(path, f"{where}: offset {offset} + length {length} runs past the end of the file ({info_stat.st_size} bytes); the data file is truncated or does not belong to this model")
        if expected is not None and length != expected:
            raise _fail(path, f"{where}: holds {length} bytes but the tensor's dims and dtype need {expected}")
        files.add(resolved)
    return sorted(files)


def _specs(values: Any, initializer_names: set[str]) -> list[TensorSpec]:
    onnx = _onnx()
    specs = []
    for value in values:
        if value.name in initializer_names:
            continue
        tensor_type = value.type.tensor_type
        dims: list[int | str | None] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        except (KeyError, TypeError, ValueError):
            dtype = f"onnx:{tensor_type.elem_type}"
        specs.append(TensorSpec(value.name, tuple(dims), dtype))
    return specs


def describe(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    initializer_names = {t.name for t in model.graph.initializer}
    return _specs(model.graph.input, initializer_names), _specs(model.graph.output, set())


def main_opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def check_model(model: Any, path: Path) -> Any:
    """onnx.checker (full) and strict shape inference; returns the shape-inferred model."""
    onnx = _onnx()
    supported = onnx.defs.onnx_opset_version()
    opset = main_opset(model)
    if opset > supported:
        raise _fail(path, f"uses opset {opset}, newer than this onnx ({onnx.__version__}) supports ({supported})", hint="re-export with an older opset, or upgrade onnx")
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        first = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3]) or repr(exc)
        raise _fail(path, f"fails the ONNX checker: {first}", hint="re-export the model; 'python -c \"import onnx; onnx.checker.check_model(...)\"' shows the full message") from None
    except Exception as exc:  # full_check also raises InferenceError, and ValueError/RuntimeError by version (found by fuzzing)
        first = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3]) or type(exc).__name__
        raise _fail(path, f"fails the ONNX checker: {first}") from None
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError, RuntimeError or ValueError by version
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(path, f"shape inference failed: {message}") from None


def load_model(path: Path | str) -> LoadedModel:
    """Load & check: parse, validate external data, load it, run the checker and shape inference."""
    _onnx()
    path = Path(path)
    model = read_model_proto(path)
    external = check_external_data(model, path)
    if external:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise _fail(path, f"cannot read external data: {exc}") from None
    lowered_from = lower_ir_version(model)
    model = check_model(model, path)
    inputs, outputs = describe(model)
    if not outputs:
        raise _fail(path, "the graph declares no outputs")
    return LoadedModel(
        path=path,
        proto=model,
        sha256=sha256_file(path),
        inputs=inputs,
        outputs=outputs,
        opset=main_opset(model),
        file_bytes=path.stat().st_size + sum(f.stat().st_size for f in external),
        external_files=external,
        ir_version_lowered_from=lowered_from,
    )


def lower_ir_version(model: Any) -> int | None:
    """Set the IR version to the lowest one the model's opsets need; returns the old one if it changed.

    Exporters stamp the newest IR their onnx knows (onnx 1.19 writes 12) while runtimes and converters
    lag (onnxruntime 1.23 reads up to 11). The opsets fix the semantics; the checker, run right after,
    rejects a model that really uses a newer IR's features.
    """
    onnx = _onnx()
    try:
        needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    except (ValueError, TypeError):
        return None
    if model.ir_version > needed:
        original = int(model.ir_version)
        model.ir_version = needed
        return original
    return None


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``name=1x3x224x224`` (or ``name:1,3,224,224``) -> ("name", (1, 3, 224, 224))."""
    for separator in ("=", ":"):
        if separator in text:
            name, dims_text = text.rsplit(separator, 1)
            break
    else:
        raise OptionsError(f"--input-shape {text!r}: expected NAME=DIMS, e.g. image=1x3x224x224")
    parts = dims_text.replace(",", "x").lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise OptionsError(f"--input-shape {text!r}: dimensions must be integers separated by 'x', e.g. {name}=1x3x224x224") from None
    if not name or any(d <= 0 for d in dims):
        raise OptionsError(f"--input-shape {text!r}: needs an input name and positive dimensions")
    return name, dims


def parse_input_shapes(values: tuple[str, ...] | list[str]) -> tuple[dict[str, tuple[int, ...]], dict[str, ShapeRange]]:
    """--input-shape values -> (fixed shapes, ranges). ``NAME=MIN:OPT:MAX`` gives a range and fixes NAME to OPT
    for everything that needs one shape (reference run, verification); other forms go to ``parse_shape``."""
    from edgekit.remote.trt_builder import parse_shape_spec

    shapes: dict[str, tuple[int, ...]] = {}
    ranges: dict[str, ShapeRange] = {}
    for text in values:
        name, _, spec = text.rpartition("=")
        if name and spec.count(":") >= 1:
            try:
                parsed = parse_shape_spec(text)
            except ValueError as exc:
                raise OptionsError(f"--input-shape {text!r}: {exc}", hint="a range is NAME=MIN:OPT:MAX, e.g. images=1x3x224x224:4x3x224x224:8x3x224x224") from None
            low, opt, high = (tuple(d) for d in parsed[1:])
            shapes[name] = opt
            ranges[name] = (low, opt, high)
        else:
            key, dims = parse_shape(text)
            shapes[key] = dims
    return shapes, ranges


def apply_input_shapes(loaded: LoadedModel, shapes: dict[str, tuple[int, ...]], require_static: bool) -> LoadedModel:
    """Fix input dims from --input-shape, re-run shape inference, and demand static shapes if asked."""
    _onnx()
    by_name = {spec.name: spec for spec in loaded.inputs}
    for name, dims in shapes.items():
        if name not in by_name:
            raise OptionsError(f"--input-shape names '{name}', but the model's inputs are: {', '.join(by_name)}")
        declared = by_name[name].shape
        if len(declared) != len(dims):
            raise OptionsError(f"--input-shape {name}: gives {len(dims)} dims but the input has rank {len(declared)} {list(declared)}")
        for i, (want, have) in enumerate(zip(dims, declared, strict=False)):
            if isinstance(have, int) and have != want:
                raise OptionsError(f"--input-shape {name}: dim {i} is fixed to {have} in the model; cannot set it to {want}")
    if shapes:
        for value in loaded.proto.graph.input:
            if value.name in shapes:
                for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name], strict=False):
                    dim.Clear()
                    dim.dim_value = size
        for value in loaded.proto.graph.output:
            for dim in value.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value"):
                    dim.Clear()
        del loaded.proto.graph.value_info[:]
        loaded.proto = check_model(loaded.proto, loaded.path)
        loaded.inputs, loaded.outputs = describe(loaded.proto)
    if require_static:
        dynamic = [spec for spec in loaded.inputs if not spec.is_static]
        if dynamic:
            example = " ".join(
                f"--input-shape {s.name}=" + "x".join(str(d) if isinstance(d, int) else "N" for d in s.shape) for s in dynamic
            )
            raise OptionsError(
                "this target needs static input shapes, but these inputs have dynamic dims: "
                + ", ".join(f"{s.name} {list(s.shape)}" for s in dynamic),
                hint=f"fix them with {example} (replace N with the size you deploy), or pass sample data "
                "(--calib or --verify-data): edgekit takes the dims from the samples' shape",
            )
    return loaded


def op_histogram(model: Any) -> Counter:
    return Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node)


def constant_tensors(model: Any) -> dict[str, Any]:
    """The tensors whose values the graph fixes, by name: initializers and Constant nodes' ``value``."""
    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
    return constants


def parameter_count(model: Any) -> int:
    total = 0
    for tensor in model.graph.initializer:
        count = 1
        for dim in tensor.dims:
            count *= dim
        total += count
    return total


def save_model(model: Any, path: Path) -> Path:
    """Save a model for tools to read; models over ~2 GB go to one external-data file beside it."""
    onnx = _onnx()
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > 1_800_000_000:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))
    return path
