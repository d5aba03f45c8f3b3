"""PyTorch models from the wheels -> ONNX, each export checked against its PyTorch module.

- MTCNN (facenet-pytorch 2.6.0): the classes PNet/RNet/ONet are taken from the wheel's own
  ``facenet_pytorch/models/mtcnn.py``. Importing that module would import the whole package (torchvision ops,
  a warnings filter, the model downloader), so only the three class definitions are compiled from its source
  (``ast``), constructed with ``pretrained=False`` (their loader calls ``torch.load`` without ``weights_only``), and
  the state dicts ``facenet_pytorch/data/*.pt`` are loaded with ``torch.load(weights_only=True)``.
- Resemblyzer 0.1.4: ``resemblyzer/voice_encoder.py`` imports librosa and webrtcvad at module level and loads its
  weights in ``__init__``, so ``SpeakerEncoder`` below is a copy of its network (layers and ``forward``), with the
  sizes read from the wheel's ``resemblyzer/hparams.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

OPSET = 17
ATOL, RTOL = 1e-4, 1e-3


class ExportMismatch(RuntimeError):
    """The exported ONNX model does not compute what the PyTorch module computes."""


def classes_from_source(source: Path, names: tuple[str, ...], namespace: dict) -> dict[str, type]:
    """Compile only the named top-level classes of ``source`` (no module-level imports or side effects)."""
    tree = ast.parse(source.read_text(), filename=str(source))
    wanted = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name in names]
    missing = set(names) - {node.name for node in wanted}
    if missing:
        raise ExportMismatch(f"{source} defines no {', '.join(sorted(missing))}")
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(source), "exec"), namespace)  # noqa: S102 - pinned, sha256-checked source
    return {name: namespace[name] for name in names}


def hparams(source: Path) -> dict[str, object]:
    """The constant assignments of resemblyzer/hparams.py, read without executing it."""
    values = {}
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def mtcnn_module(mtcnn_py: Path, weights: Path, class_name: str):
    import os

    import torch
    from torch import nn

    cls = classes_from_source(mtcnn_py, (class_name,), {"torch": torch, "nn": nn, "os": os, "np": np})[class_name]
    module = cls(pretrained=False)
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return module.eval()


def speaker_encoder(hparams_py: Path, weights: Path):
    import torch
    from torch import nn

    sizes = hparams(hparams_py)

    class SpeakerEncoder(nn.Module):
        """Copy of resemblyzer.voice_encoder.VoiceEncoder's network and forward (Resemblyzer 0.1.4)."""

        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(sizes["mel_n_channels"], sizes["model_hidden_size"], sizes["model_num_layers"], batch_first=True)
            self.linear = nn.Linear(sizes["model_hidden_size"], sizes["model_embedding_size"])
            self.relu = nn.ReLU()

        def forward(self, mels):
            _, (hidden, _) = self.lstm(mels)
            embeds_raw = self.relu(self.linear(hidden[-1]))
            return embeds_raw / torch.norm(embeds_raw, dim=1, keepdim=True)

    module = SpeakerEncoder()
    checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    # strict=False as in VoiceEncoder: the checkpoint also holds the training-only similarity_weight/bias
    result = module.load_state_dict(checkpoint["model_state"], strict=False)
    if result.missing_keys:
        raise ExportMismatch(f"{weights}: missing weights {result.missing_keys}")
    return module.eval()


def export_and_check(module, input_name: str, output_names: list[str], samples: np.ndarray, path: Path) -> dict:
    """torch.onnx.export at the samples' shape (batch 1), then compare onnxruntime with PyTorch on every sample."""
    import onnxruntime as ort
    import torch

    from edgekit.fsutil import atomic_path

    example = torch.from_numpy(samples[:1])
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(module, (example,), str(tmp), input_names=[input_name], output_names=output_names,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        worst = 0.0
        for i in range(len(samples)):
            expected = module(torch.from_numpy(samples[i : i + 1]))
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = session.run(output_names, {input_name: samples[i : i + 1]})
            for name, want, have in zip(output_names, expected, got, strict=True):
                want = want.numpy()
                if want.shape != have.shape or not np.allclose(have, want, atol=ATOL, rtol=RTOL):
                    error = np.abs(have - want).max() if want.shape == have.shape else f"shape {have.shape} vs {want.shape}"
                    raise ExportMismatch(f"{path.name}: output '{name}' on sample {i} differs from PyTorch (max abs error {error})")
                worst = max(worst, float(np.abs(have - want).max()))
    return {"checked_samples": len(samples), "max_abs_error_vs_torch": worst, "opset": OPSET}
