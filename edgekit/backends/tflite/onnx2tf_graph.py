"""Runs onnx2tf with its float TFLite files converted from the model's concrete function (a frozen graph)
instead of from the Keras model. Same arguments as ``python -m onnx2tf``.

Why: TFLiteConverter.from_keras_model first saves the Keras model, and Keras writes every layer's config as
JSON, with the weights onnx2tf passes to TensorFlow ops spelled out as lists of numbers. Measured here on
VGG-19 (143 M parameters, 548 MB): that route grew past 21 GB and was killed after 433 s; this one peaks at
11.8 GB and finishes in 114 s. onnx2tf itself falls back to the concrete function when the Keras route
raises, which is what this launcher makes it do. The float files then carry no SignatureDef; edgekit reads
their I/O from the tensor details (TFLiteBackend._signature says which).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import tensorflow as tf

    def keras_route_off(*args: object, **kwargs: object) -> None:
        raise RuntimeError("edgekit: convert from the concrete function (see edgekit/backends/tflite/onnx2tf_graph.py)")

    tf.lite.TFLiteConverter.from_keras_model = keras_route_off
    from onnx2tf.onnx2tf import main as onnx2tf_main

    sys.argv = ["onnx2tf", *argv]
    onnx2tf_main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
