"""Subprocess helper for the TFLite backend (TensorFlow is heavy and can crash; keep it out of edgekit's process).

    python -m edgekit.backends.tflite.tool signature MODEL.tflite
    python -m edgekit.backends.tflite.tool tensors MODEL.tflite        # tensors ops write, in execution order
    python -m edgekit.backends.tflite.tool quantize --saved-model DIR --out X.tflite --mode dynamic|int8 [--calib C.npz] [--io float|int8]
        [--denylist NAMES.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def signature(path: str) -> dict:
    """The model's I/O: from its SignatureDef, or, for files without one (onnx2tf writes some), from the
    interpreter's input/output tensor details in graph order; ``source`` says which."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)

    def describe(details: dict) -> dict:
        return {name: {"shape": [int(d) for d in info["shape"]], "dtype": np.dtype(info["dtype"]).name,
                       "quantization": [float(info["quantization"][0]), int(info["quantization"][1])]}
                for name, info in details.items()}

    if interpreter.get_signature_list():
        runner = interpreter.get_signature_runner()
        return {"source": "signature", "inputs": describe(runner.get_input_details()), "outputs": describe(runner.get_output_details())}
    interpreter.allocate_tensors()
    return {"source": "tensor_details", "inputs": describe({d["name"]: d for d in interpreter.get_input_details()}),
            "outputs": describe({d["name"]: d for d in interpreter.get_output_details()})}


def tensors(path: str) -> dict:
    """The tensors the model's ops write (not weights), in execution order, for locating a divergence."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    written: list[dict] = []
    ops: list[dict] = []

    def names(indices) -> list[str]:
        return [details[int(i)]["name"] for i in indices if int(i) in details]

    for op in interpreter._get_ops_details():  # private, but what TensorFlow's own QuantizationDebugger reads
        if op["op_name"] == "DELEGATE":
            continue
        ops.append({"type": op["op_name"], "inputs": names(op["inputs"]), "outputs": names(op["outputs"])})
        for index in op["outputs"]:
            tensor = details.get(int(index))
            if tensor is not None:
                written.append({"name": tensor["name"], "shape": [int(d) for d in tensor["shape"]], "dtype": np.dtype(tensor["dtype"]).name})
    try:
        outputs = {name: details[int(info["index"])]["name"] for name, info in interpreter.get_signature_runner().get_output_details().items()}
    except ValueError:  # no SignatureDef
        outputs = {}
    return {"tensors": written, "outputs": outputs, "ops": ops}


def quantize(saved_model: str, out: str, mode: str, calib: str | None, io: str, denylist: list[str] | None = None) -> None:
    """TFLiteConverter over the SavedModel; with ``denylist`` (op output tensor names) those ops stay float,
    through TensorFlow's QuantizationDebugger (selective quantization)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        with np.load(calib, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        count = len(next(iter(arrays.values())))

        def representative_dataset():  # one sample per step, each array in the input's full shape
            for index in range(count):
                yield {name: value[index] if value.dtype.kind != "f" else value[index].astype(np.float32) for name, value in arrays.items()}

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if denylist:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
            options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(denylist), fully_quantize=io == "int8")
            debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative_dataset, debug_options=options)
            with open(out, "wb") as handle:
                handle.write(debugger.get_nondebug_quantized_model())
            return
        if io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    with open(out, "wb") as handle:
        handle.write(converter.convert())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sig = sub.add_parser("signature")
    sig.add_argument("model")
    listing = sub.add_parser("tensors")
    listing.add_argument("model")
    quant = sub.add_parser("quantize")
    quant.add_argument("--saved-model", required=True)
    quant.add_argument("--out", required=True)
    quant.add_argument("--mode", choices=["dynamic", "int8"], required=True)
    quant.add_argument("--calib")
    quant.add_argument("--io", choices=["float", "int8"], default="float")
    quant.add_argument("--denylist", help="a JSON file: op output tensor names to keep float (int8 only)")
    args = parser.parse_args(argv)
    if args.command == "signature":
        print(json.dumps(signature(args.model)))
    elif args.command == "tensors":
        print(json.dumps(tensors(args.model)))
    else:
        denylist = json.loads(open(args.denylist).read()) if args.denylist else None
        quantize(args.saved_model, args.out, args.mode, args.calib, args.io, denylist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
