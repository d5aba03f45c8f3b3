"""Small Keras models for the export tests, written by a subprocess (python -m tests.models.keras_nets FOLDER) so the
test process never imports TensorFlow. Seeded random weights; nothing downloaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def conv_lstm_attention(keras, attention: str):
    """Conv1D + BatchNorm -> LSTM -> self-attention -> dropout -> Dense: (1, 20, 4) -> (1, 20, 5)."""
    inputs = keras.Input((20, 4), name="x")
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv1D(16, 3, padding="same")(inputs)))
    h = keras.layers.LSTM(32, return_sequences=True)(h)
    layers = {"multi-head": lambda: keras.layers.MultiHeadAttention(4, 8)(h, h), "dot-product": lambda: keras.layers.Attention()([h, h]),
              "additive": lambda: keras.layers.AdditiveAttention()([h, h])}
    a = layers[attention]()
    h = keras.layers.Dropout(0.3)(keras.layers.Add()([a, h]))
    return keras.Model(inputs, keras.layers.Dense(5, name="head")(h))


def write(folder: Path, marker: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    conv_lstm_attention(keras, "multi-head").save(folder / "net.keras")
    # Keras 3.15 cannot reload its own legacy .h5 of MultiHeadAttention (call signature) or Attention (score_mode)
    conv_lstm_attention(keras, "additive").save(folder / "net.h5")
    conv_lstm_attention(keras, "dot-product").export(str(folder / "saved_model"), verbose=False)
    inputs = keras.Input((4,), name="x")
    code = keras.layers.Lambda(lambda t, path=str(marker): (open(path, "w").close(), t * 2)[1])  # noqa: SIM115
    keras.Model(inputs, code(inputs)).save(folder / "lambda.keras")
    if marker.exists():
        marker.unlink()  # saving traced the lambda once; only a later load must not run it


if __name__ == "__main__":
    write(Path(sys.argv[1]), Path(sys.argv[2]))
