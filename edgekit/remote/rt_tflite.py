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
    def __init__(self, artifact, options):
        interpreter_class, label = require_runtime("tflite", CANDIDATES, "a TFLite runtime")
        self.runtime = label
        self.runtime_version = module_version(label.split(".")[0])
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
            self.signature = self.interpreter.get_signature_runner()
        except Exception as exc:
            raise RemoteError("load_failed", "TFLite could not load %s: %s" % (artifact, exc), EXIT_LOAD_FAILED)
        self.input_details = self.signature.get_input_details()
        self.output_details = self.signature.get_output_details()
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
        fed = {name: self._quantize(value, self.input_details[name]) for name, value in feed.items()}
        result = self.signature(**fed)
        if self.intermediates:
            return self._read_tensors()
        return {name: self._dequantize(value, self.output_details[name]) for name, value in result.items()}

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
