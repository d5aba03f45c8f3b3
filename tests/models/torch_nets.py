"""Small PyTorch models for the export tests (seeded random weights, nothing downloaded). Importable by class
path, so a pickled instance can be loaded again (with --trust-pickle)."""

from __future__ import annotations

import torch
from torch import nn


class ConvLstmAttention(nn.Module):
    """Conv1d + BatchNorm -> LSTM -> multi-head self-attention -> dropout -> linear head: (1, 4, 20) -> (1, 20, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 16, 3, padding=1)
        self.bn = nn.BatchNorm1d(16)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        h, _ = self.lstm(h.transpose(1, 2))
        a, _ = self.attn(h, h, h)
        return self.head(self.drop(a + h))


class DataDependentBranch(nn.Module):
    """torch.export cannot capture a branch on a tensor's value; the TorchScript exporter traces the branch taken."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        y = self.conv(image)
        if y.abs().sum() > 0:
            return torch.relu(y)
        return y


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for parameter in module.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    return module.eval()


class RunsCodeWhenUnpickled:
    """Unpickling this writes a marker file: what a hostile .pt can do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))
