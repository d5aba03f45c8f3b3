"""ONNX artifacts through onnxruntime (the reference runtime, and what a new backend can start from)."""

from .protocol import EXIT_LOAD_FAILED, RemoteError, require_runtime


class Model:
    def __init__(self, artifact, options):
        ort, label = require_runtime("onnxruntime", [("onnxruntime", None, "onnxruntime")], "onnxruntime")
        self.runtime, self.runtime_version = "onnxruntime", ort.__version__
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = int(options.get("num_threads", 0))
        try:
            self.session = ort.InferenceSession(artifact, session_options, providers=options.get("providers") or ["CPUExecutionProvider"])
        except Exception as exc:
            raise RemoteError("load_failed", "onnxruntime could not load %s: %s" % (artifact, exc), EXIT_LOAD_FAILED)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feed):
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))
