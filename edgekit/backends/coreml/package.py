"""coremltools on Linux: importing it quietly, reading a saved package's spec, and Core ML feature names."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit._lazy import require


def coreml_name(name: str, taken: set[str]) -> str:
    """A Core ML feature name for an ONNX tensor name (identifier characters only, unique)."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name) or "tensor"
    if clean[0].isdigit():
        clean = f"t_{clean}"
    candidate, n = clean, 1
    while candidate in taken:
        n += 1
        candidate = f"{clean}_{n}"
    taken.add(candidate)
    return candidate


@contextlib.contextmanager
def quiet_tools(log: io.StringIO) -> Iterator[None]:
    """coremltools and torch print progress bars and version warnings; keep them for the log instead."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ logging ignores TF_CPP_MIN_LOG_LEVEL set in-process."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_coremltools() -> Any:
    if "coremltools" in sys.modules:
        return sys.modules["coremltools"]
    # coremltools imports TensorFlow when it is installed (the tflite extra), which logs from C++ on import.
    with quiet_tools(io.StringIO()), native_stderr_silenced():
        return require("coremltools", "coreml", purpose="the Core ML backend")


def describe_package(path: Path) -> dict[str, Any]:
    """What an .mlpackage holds, read from its spec without loading it (works on Linux)."""
    ct = import_coremltools()
    with quiet_tools(io.StringIO()):
        model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    main = spec.mlProgram.functions["main"]
    ops = main.block_specializations[main.opset].operations
    counts = Counter(op.type for op in ops)
    fp16 = ct.proto.MIL_pb2.DataType.Value("FLOAT16")
    computes_fp16 = any(out.type.tensorType.dataType == fp16 for op in ops if op.type != "const" for out in op.outputs)

    def feature(item: Any) -> dict[str, Any]:
        kind = item.type.WhichOneof("Type")
        if kind == "imageType":
            image = item.type.imageType
            return {"name": item.name, "type": "image", "shape": [int(image.height), int(image.width)],
                    "color": ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)}
        array = item.type.multiArrayType
        return {"name": item.name, "type": "multiarray", "shape": [int(d) for d in array.shape],
                "dtype": ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)}

    compression = sorted(t for t in counts if t.startswith("constexpr_"))
    return {
        "inputs": [feature(i) for i in spec.description.input],
        "outputs": [feature(o) for o in spec.description.output],
        "specification_version": int(spec.specificationVersion),
        "opset": main.opset,
        "compute_precision": "fp16" if computes_fp16 else "fp32",
        "weight_compression": compression,
        "activation_quantization": bool(counts.get("quantize")),
        "op_counts": dict(sorted(counts.items())),
        "metadata": {"author": spec.description.metadata.author, "version": spec.description.metadata.versionString,
                     "short_description": spec.description.metadata.shortDescription,
                     **dict(spec.description.metadata.userDefined)},
    }
