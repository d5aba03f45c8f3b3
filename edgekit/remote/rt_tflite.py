"""TFLite artifacts through LiteRT (ai-edge-litert), tflite-runtime or TensorFlow Lite, whichever the machine has."""

from .protocol import EXIT_LOAD_FAILED, RemoteError, module_version, require_runtime

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
        try:
            self.interpreter = interpreter_class(model_path=artifact, num_threads=int(options.get("num_threads", 4)))
            self.interpreter.allocate_tensors()
            self.signature = self.interpreter.get_signature_runner()
        except Exception as exc:
            raise RemoteError("load_failed", "TFLite could not load %s: %s" % (artifact, exc), EXIT_LOAD_FAILED)
        self.input_details = self.signature.get_input_details()
        self.output_details = self.signature.get_output_details()

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
        return {name: self._dequantize(value, self.output_details[name]) for name, value in result.items()}
