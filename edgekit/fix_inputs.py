"""``--fix-input NAME=VALUE``: freeze a model input to a constant before simplification.

A voice model that takes ``sr`` (the sample rate) branches on it with ``If``; ncnn and onnx2tf cannot take
``If``. Frozen to 16000, the input becomes an initializer, ``Equal(sr, 16000)`` folds to a constant and the
simplifier removes the branch, and the artifact no longer has that input. The value takes the input's dtype
and shape from the model (a scalar is broadcast to a static shape); larger values come from a ``.npy``
(``NAME=@values.npy``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import OptionsError
from edgekit.modelio import LoadedModel, check_model, describe

#: values from a .npy up to this many elements are written into the report; larger ones by file name and sha256
REPORTED_ELEMENTS = 64


@dataclass(frozen=True)
class FixedInput:
    name: str
    value: np.ndarray
    given: str  # what the user wrote, for messages and the report

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"dtype": self.value.dtype.name, "shape": list(self.value.shape), "given": self.given}
        if self.value.size <= REPORTED_ELEMENTS or not self.given.startswith("@"):
            data["value"] = self.value.tolist()
        else:  # a large value from a file: the file is named in "given", its content pinned by hash
            data["sha256"] = hashlib.sha256(np.ascontiguousarray(self.value).tobytes()).hexdigest()
        return data


def parse_fix_input(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` -> (NAME, VALUE): a number, a comma-separated list of numbers, true/false, or ``@file.npy``."""
    name, sep, raw = text.rpartition("=")
    if not sep or not name or not raw:
        raise OptionsError(f"--fix-input {text!r}: expected NAME=VALUE, e.g. sr=16000, mask=1,1,0 or state=@state.npy")
    if raw.startswith("@"):
        return name, raw
    try:
        values = [_number(part) for part in raw.split(",")]
    except ValueError:
        raise OptionsError(f"--fix-input {text!r}: {raw!r} is not a number, a comma-separated list of numbers, true/false or @FILE.npy") from None
    return name, values[0] if len(values) == 1 else values


def _number(text: str) -> int | float | bool:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(lowered)
    except ValueError:
        return float(lowered)


def _load_value(raw: Any, name: str) -> np.ndarray:
    if isinstance(raw, str) and raw.startswith("@"):
        path = Path(raw[1:]).expanduser()
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise OptionsError(f"--fix-input {name}: cannot read {path}: {exc}", hint="give a .npy file of numbers (pickles are refused)") from None
    if isinstance(raw, np.ndarray):
        return raw
    try:
        return np.asarray(raw)
    except ValueError as exc:
        raise OptionsError(f"--fix-input {name}: {exc}") from None


def _shaped(name: str, value: np.ndarray, declared: tuple, dtype: np.dtype) -> np.ndarray:
    if value.dtype.kind not in "biuf":
        raise OptionsError(f"--fix-input {name}: value has dtype {value.dtype}; give numbers")
    if dtype.kind in "iub" and value.dtype.kind == "f" and not np.array_equal(value, np.round(value)):
        raise OptionsError(f"--fix-input {name}: the input is {dtype.name}, but the value {value.tolist() if value.size < 8 else '...'} is not integral")
    static = all(isinstance(d, int) and d > 0 for d in declared)
    if value.ndim == len(declared) and all(not isinstance(d, int) or d == s for s, d in zip(value.shape, declared, strict=True)):
        shaped = value
    elif value.size == 1 and static:
        shaped = np.broadcast_to(value.reshape(()), tuple(int(d) for d in declared))
    else:
        raise OptionsError(f"--fix-input {name}: a value of shape {list(value.shape)} does not fit the input's shape {list(declared)}",
                           hint="give one number (for a static shape), or the full tensor as NAME=@values.npy")
    return np.array(shaped, dtype=dtype, order="C")  # np.ascontiguousarray would turn a scalar into shape [1]


def apply_fixed_inputs(loaded: LoadedModel, fixes: dict[str, Any]) -> tuple[LoadedModel, list[FixedInput]]:
    """Turn each named input into an initializer holding its value; returns the model and what was frozen."""
    if not fixes:
        return loaded, []
    from onnx import numpy_helper

    by_name = {spec.name: spec for spec in loaded.inputs}
    frozen = []
    for name, raw in fixes.items():
        if name not in by_name:
            raise OptionsError(f"--fix-input names '{name}', but the model's inputs are: {', '.join(by_name) or 'none'}")
        spec = by_name[name]
        if spec.dtype.startswith("onnx:"):
            raise OptionsError(f"--fix-input {name}: the input has ONNX type {spec.dtype}, which edgekit cannot fill")
        given = raw if isinstance(raw, str) else str(np.asarray(raw).tolist())
        frozen.append(FixedInput(name, _shaped(name, _load_value(raw, name), tuple(spec.shape), np.dtype(spec.dtype)), given))
    graph = loaded.proto.graph
    names = {f.name for f in frozen}
    kept = [value for value in graph.input if value.name not in names]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(f.value, f.name) for f in frozen)
    if loaded.proto.ir_version < 4:
        loaded.proto.ir_version = 4  # initializers that are not graph inputs need IR 4
    del graph.value_info[:]
    loaded.proto = check_model(loaded.proto, loaded.path)
    loaded.inputs, loaded.outputs = describe(loaded.proto)
    return loaded, frozen

