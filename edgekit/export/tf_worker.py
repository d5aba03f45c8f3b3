"""TensorFlow work for the export stage, run in a subprocess (TensorFlow is heavy and can crash).

    python -m edgekit.export.tf_worker convert --source PATH --out MODEL.onnx --opset N --shapes JSON [--trust-code]
        -> JSON {"format", "inputs": [{name, shape, dtype}], "outputs": [names], "versions": {...}}
    python -m edgekit.export.tf_worker run --source PATH --samples S.npz --count N --outputs A,B --out OUT.npz --shapes JSON [--trust-code]
        S.npz holds "s{i}_i{k}": input k of sample i; OUT.npz gets "s{i}_o{k}": output k of sample i

Problems with the user's model (Keras safe mode refusing a Lambda, a missing input shape, file-system ops in a
SavedModel) are answered as JSON {"error": kind, "message": ...} with exit code 0, so edgekit can raise the right
error; anything else is a crash whose log tail edgekit quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

# Ops a model signature has no business running: file access and calls back into Python.
FORBIDDEN_OPS = {"ReadFile", "WriteFile", "MatchingFiles", "Save", "SaveV2", "SaveSlices", "MergeV2Checkpoints",
                 "Restore", "RestoreV2", "RestoreSlice", "WholeFileReader", "WholeFileReaderV2", "PyFunc",
                 "PyFuncStateless", "EagerPyFunc", "ImmutableConst", "DebugIdentityV2", "DebugIdentityV3"}


class ModelProblem(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


class Source:
    """A SavedModel signature or a Keras model, with named inputs at static shapes."""

    def __init__(self, path: Path, shapes: dict, trust_code: bool) -> None:
        tf = _tf()
        self.path = path
        self.keras = None
        if path.is_dir():
            self.format = "savedmodel"
            declared = self._signature(path)
            self.names = self.signature_names
        else:
            self.format = "keras"
            import keras

            try:
                self.keras = keras.models.load_model(str(path), safe_mode=not trust_code, compile=False)
            except ValueError as exc:
                if "safe_mode" in str(exc) or "unsafe" in str(exc):
                    raise ModelProblem("code", f"{path}: {str(exc).splitlines()[0]}") from None
                raise
            self.names = [t.name.split(":")[0] for t in self.keras.inputs]
            declared = {name: (list(t.shape), tf.as_dtype(t.dtype)) for name, t in zip(self.names, self.keras.inputs, strict=True)}
        self.specs = [tf.TensorSpec(_static(name, dims, shapes), dtype, name=name) for name, (dims, dtype) in declared.items()]

    def _signature(self, folder: Path) -> dict:
        """Load the SavedModel's serving signature; returns its inputs' declared (dims, dtype) by name."""
        tf = _tf()
        self.loaded = tf.saved_model.load(str(folder))  # kept: its signatures reference its variables
        signatures = dict(self.loaded.signatures)
        if not signatures:
            raise ModelProblem("model", f"{self.path}: the SavedModel has no signatures; export it with a serving signature (model.export(DIR))")
        self.function = signatures["serving_default" if "serving_default" in signatures else sorted(signatures)[0]]
        self._refuse_forbidden_ops()
        specs = self.function.structured_input_signature[1]
        self.signature_names = sorted(specs)
        self.output_keys = sorted(self.function.structured_outputs, key=_natural)
        return {name: (specs[name].shape.as_list(), specs[name].dtype) for name in self.signature_names}

    def _refuse_forbidden_ops(self) -> None:
        graph = self.function.graph.as_graph_def()
        ops = {node.op for node in graph.node}
        for function in graph.library.function:
            ops.update(node.op for node in function.node_def)
        bad = sorted(ops & FORBIDDEN_OPS)
        if bad:
            raise ModelProblem("model", f"{self.path}: the SavedModel's signature runs ops that touch files or call Python "
                                        f"({', '.join(bad)}); edgekit will not run it")

    def convert(self, out: str, opset: int, scratch: Path) -> list[str]:
        """tf2onnx on the serving signature. A Keras model goes through its own SavedModel export first: tf2onnx's LSTM
        rewriter recognises Keras 3's LSTM there (an ONNX LSTM op), while tracing the model directly leaves a Loop that
        the edge converters cannot take."""
        import tf2onnx

        tf = _tf()
        spec_names = [s.name for s in self.specs]
        if self.keras is not None:
            self.keras.export(str(scratch), verbose=False)
            self._signature(scratch)
        function, signature_names, keys, renamed = self.function, self.signature_names, self.output_keys, self.output_names()
        by_name = set(spec_names) == set(signature_names)

        @tf.function(input_signature=self.specs)
        def wrapped(*args):
            given = dict(zip(spec_names, args, strict=True))
            result = function(**({name: given[name] for name in signature_names} if by_name else dict(zip(signature_names, args, strict=True))))
            return {name: tf.identity(result[key], name=name) for key, name in zip(keys, renamed, strict=True)}

        model_proto, _ = tf2onnx.convert.from_function(wrapped, input_signature=self.specs, opset=opset, output_path=out)
        return [o.name for o in model_proto.graph.output]

    def output_names(self) -> list[str]:
        """ONNX output names: the Keras model's output names, else the signature's output keys."""
        if self.keras is None:
            return list(self.output_keys)
        names = list(getattr(self.keras, "output_names", None) or [])
        return names if len(names) == len(self.keras.outputs) else [f"output_{i}" for i in range(len(self.keras.outputs))]

    def run(self, feed: dict) -> dict[str, np.ndarray]:
        tf = _tf()
        if self.keras is not None:
            result = self.keras([feed[name] for name in self.names] if len(self.names) > 1 else feed[self.names[0]], training=False)
            return dict(zip(self.output_names(), (np.asarray(t) for t in tf.nest.flatten(result)), strict=True))
        result = self.function(**{name: tf.constant(feed[name]) for name in self.signature_names})
        return {key: result[key].numpy() for key in self.output_keys}


def _natural(key: str) -> tuple:
    """output_2 before output_10."""
    stem = key.rstrip("0123456789")
    return (stem, int(key[len(stem):]) if key[len(stem):] else -1)


def _static(name: str, dims: list, shapes: dict) -> list[int]:
    if name in shapes:
        given = [int(d) for d in shapes[name]]
        if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims, given, strict=True)):
            raise ModelProblem("shape", f"--input-shape {name}={'x'.join(map(str, given))} does not fit the model's declared shape {dims}")
        return given
    fixed = [1 if (d is None and axis == 0) else d for axis, d in enumerate(dims)]  # batch: 1, as edge models run
    if any(d is None for d in fixed):
        example = "x".join(str(d) if d is not None else "N" for d in fixed)
        raise ModelProblem("shape", f"input '{name}' has dynamic dims {dims}; give --input-shape {name}={example}")
    return fixed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("convert", "run"))
    parser.add_argument("--source", required=True)
    parser.add_argument("--shapes", default="{}")
    parser.add_argument("--trust-code", action="store_true")
    parser.add_argument("--out", required=True)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--samples")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--outputs", default="", help="run: the ONNX output names, in the order to write them")
    args = parser.parse_args(argv)
    try:
        source = Source(Path(args.source), json.loads(args.shapes), args.trust_code)
        if args.command == "convert":
            outputs = source.convert(args.out, args.opset, Path(args.out).with_suffix(".savedmodel"))
            answer = {"format": source.format, "outputs": outputs, "versions": _versions(),
                      "inputs": [{"name": s.name, "shape": s.shape.as_list(), "dtype": s.dtype.name} for s in source.specs]}
        else:
            produced = {}
            with np.load(args.samples, allow_pickle=False) as archive:
                for index in range(args.count):
                    feed = {name: archive[f"s{index}_i{k}"] for k, name in enumerate(source.names)}
                    outputs = source.run(feed)
                    for k, name in enumerate(args.outputs.split(",")):
                        if name not in outputs:
                            raise ModelProblem("model", f"the model has no output '{name}' (it has {', '.join(outputs)})")
                        produced[f"s{index}_o{k}"] = outputs[name]
            np.savez(args.out, **produced)
            answer = {"samples": args.count}
    except ModelProblem as exc:
        answer = {"error": exc.kind, "message": str(exc)}
    print(json.dumps(answer))
    return 0


def _versions() -> dict:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("tensorflow", "tf2onnx", "keras") if _installed(name)}


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
