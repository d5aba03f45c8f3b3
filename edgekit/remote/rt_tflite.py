"""TFLite artifacts through LiteRT (ai-edge-litert), tflite-runtime or TensorFlow Lite, whichever the machine has.

With the option ``intermediates`` the outputs asked for are tensor names of the model, any tensor, not only
its signature outputs (edgekit's locate reads the layers of a failing build this way). The interpreter then
keeps every tensor and runs without the default delegates: XNNPACK computes inside its own buffers, so the
tensors of a delegated graph would never be written.
"""

import sys

from .protocol import EXIT_FAILED, EXIT_LOAD_FAILED, RemoteError, module_version, require_runtime

CANDIDATES = [
    ("ai_edge_litert.interpreter", "Interpreter", "ai_edge_litert"),
    ("tflite_runtime.interpreter", "Interpreter", "tflite_runtime"),
    ("tensorflow.lite", "Interpreter", "tensorflow.lite"),
]


class Model:
    """Runs through the SignatureDef when the file has one; files without one (onnx2tf writes some) run through
    the interpreter's input/output tensors, matched to the requested names by name where they agree, else by order."""

    def __init__(self, artifact, options):
        interpreter_class, label = require_runtime("tflite", CANDIDATES, "a TFLite runtime")
        self.runtime = label
        self.runtime_version = module_version(label.split(".")[0])
        self.signature = None
        self.intermediates = bool(options.get("intermediates"))
        extra = {}
        if self.intermediates:
            resolvers = getattr(sys.modules[interpreter_class.__module__], "OpResolverType", None)
            extra["experimental_preserve_all_tensors"] = True
            if resolvers is not None:
                extra["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = interpreter_class(model_path=artifact, num_threads=int(options.get("num_threads", 4)), **extra)
            self.interpreter.allocate_tensors()
            if self.interpreter.get_signature_list():
                self.signature = self.interpreter.get_signature_runner()
        except Exception as exc:
            raise RemoteError("load_failed", "TFLite could not load %s: %s" % (artifact, exc), EXIT_LOAD_FAILED)
        if self.signature is not None:
            self.io_mode = "signature"
            self.input_details = self.signature.get_input_details()
            self.output_details = self.signature.get_output_details()
        else:
            self.input_details = _by_name(self.interpreter.get_input_details(), options.get("input_names", []))
            self.output_details = _by_name(self.interpreter.get_output_details(), [] if self.intermediates else options.get("output_names", []))
            self.io_mode = "tensor_details"
        self.tensors = dict((d["name"], d) for d in self.interpreter.get_tensor_details()) if self.intermediates else {}
        self.output_names = options.get("output_names", [])

    @staticmethod
    def _quantize(array, details):
        import numpy as np

        dtype = details["dtype"]
        if np.issubdtype(dtype, np.integer) and array.dtype.kind == "f":
            scale, zero = details["quantization"]
            if scale:
                info = np.iinfo(dtype)
                return np.clip(np.round(array / scale + zero), info.min, info.max).astype(dtype)
        return array.astype(dtype)

    @staticmethod
    def _dequantize(array, details):
        import numpy as np

        if np.issubdtype(array.dtype, np.integer):
            scale, zero = details["quantization"]
            if scale:
                return (array.astype(np.float32) - zero) * scale
        return array

    def run(self, feed):
        fed = dict((name, self._quantize(value, self.input_details[name])) for name, value in feed.items())
        if self.signature is not None:
            result = self.signature(**fed)
        else:
            for name, value in fed.items():
                self.interpreter.set_tensor(self.input_details[name]["index"], value)
            self.interpreter.invoke()
            result = dict((name, self.interpreter.get_tensor(d["index"])) for name, d in self.output_details.items())
        if self.intermediates:
            return self._read_tensors()
        return dict((name, self._dequantize(value, self.output_details[name])) for name, value in result.items())

    def _read_tensors(self):
        import numpy as np

        found = {}
        for name in self.output_names:
            details = self.tensors.get(name)
            if details is None:
                raise RemoteError("run_failed", "the model has no tensor named %r" % name, EXIT_FAILED)
            scales = details.get("quantization_parameters", {}).get("scales")
            value = np.array(self.interpreter.get_tensor(details["index"]))
            if scales is not None and len(scales) > 1:
                raise RemoteError("run_failed", "tensor %r is quantized per channel; edgekit reads per-tensor ones only" % name, EXIT_FAILED)
            found[name] = self._dequantize(value, details)
        return found

    def environment(self):
        return {"tflite_io": self.io_mode}


def _by_name(details, wanted):
    """Tensor details keyed by the names the caller uses: the tensor's own name when it is one of them,
    else the wanted names in order (a file without a SignatureDef lists its I/O tensors in graph order)."""
    names = [d["name"] for d in details]
    if not wanted or set(wanted) <= set(names):
        return dict((d["name"], d) for d in details)
    if len(wanted) != len(details):
        raise RemoteError("load_failed", "the TFLite file has no SignatureDef and %d I/O tensors (%s), but %d were asked for (%s)"
                          % (len(details), ", ".join(names), len(wanted), ", ".join(wanted)), EXIT_LOAD_FAILED)
    return dict(zip(wanted, details))
