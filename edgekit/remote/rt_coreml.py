"""Core ML packages through coremltools' predict (macOS only: Core ML itself does the work)."""

import platform
import sys

from .protocol import EXIT_LOAD_FAILED, EXIT_MISSING, RemoteError, require_runtime


class Model:
    def __init__(self, artifact, options):
        if sys.platform != "darwin":
            raise RemoteError("runtime_missing", "Core ML prediction needs macOS (this host runs %s)" % platform.system(), EXIT_MISSING)
        ct, label = require_runtime("coreml", [("coremltools", None, "coremltools")], "coremltools")
        self.runtime, self.runtime_version = "coremltools", ct.__version__
        self.compute_units = options.get("compute_units", "ALL")
        self.image_inputs = options.get("image_inputs") or {}
        try:
            self.model = ct.models.MLModel(artifact, compute_units=getattr(ct.ComputeUnit, self.compute_units))
        except Exception as exc:
            raise RemoteError("load_failed", "Core ML could not load %s: %s" % (artifact, exc), EXIT_LOAD_FAILED)

    def _image(self, array, spec):
        """A PIL image whose pixels, after the package's scale and bias, give ``array`` back (up to rounding)."""
        import numpy as np
        from PIL import Image

        planes = (array[0].astype(np.float64) - np.asarray(spec["bias"]).reshape(-1, 1, 1)) / spec["scale"]
        pixels = np.clip(np.round(planes), 0, 255).astype(np.uint8)
        if spec["color"] == "GRAY":
            return Image.fromarray(pixels[0], mode="L")
        if spec["color"] == "BGR":
            pixels = pixels[::-1]
        return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), mode="RGB")

    def run(self, feed):
        import numpy as np

        fed = {}
        for name, value in feed.items():
            if name in self.image_inputs:
                fed[name] = self._image(value, self.image_inputs[name])
            else:
                fed[name] = value.astype(np.int32) if value.dtype.kind in "iu" else value.astype(np.float32)
        return dict((name, np.asarray(value)) for name, value in self.model.predict(fed).items())

    def environment(self):
        return {"compute_units": self.compute_units, "macos": platform.mac_ver()[0]}
