"""Run a conversion tool in a subprocess: a timeout, the full log kept in the work folder, a short labelled tail
in the error, and the tool's last JSON line read back. Converters (TensorFlow, pnnx, ncnn) can crash or hang;
in a subprocess they cannot take edgekit down."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import StageError, tail

CONVERT_TIMEOUT_S = float(os.environ.get("EDGEKIT_CONVERT_TIMEOUT", 1800))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# TensorFlow and CUDA libraries log these at start-up whatever the log level; they only bury the real error.
_NOISE_PREFIXES = ("W0000", "I0000", "E0000", "WARNING: All log messages", "oneDNN", "cuda", "computation placer")
_NOISE_WORDS = ("cuDNN", "cuBLAS")
_MAX_LINE = 400


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for tool subprocesses: CPU only, never online, quiet TensorFlow."""
    env = dict(os.environ)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "TF_ENABLE_ONEDNN_OPTS": "0",
                "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", **extra})
    return env


def clean_log(text: str) -> str:
    lines = []
    for line in text.splitlines():
        line = _ANSI.sub("", line)
        if line.startswith(_NOISE_PREFIXES) or any(word in line for word in _NOISE_WORDS):
            continue
        lines.append(line if len(line) <= _MAX_LINE else line[:_MAX_LINE] + " ...")
    return "\n".join(lines)


@dataclass
class ToolRun:
    stdout: str
    log: str  # stdout and stderr, cleaned

    def last_json(self, what: str) -> Any:
        """The JSON object the tool printed last on stdout (how edgekit's own helper scripts answer)."""
        for line in reversed(self.stdout.strip().splitlines()):
            try:
                return json.loads(line)
            except ValueError:
                continue
        raise StageError(f"{what}: the tool printed no JSON result. Output tail:\n{tail(self.log, 10)}")


def run_tool(argv: list[str], cwd: Path, *, stage: str, tool: str, log_name: str, hint: str | None = None,
             timeout: float | None = None, env: dict[str, str] | None = None) -> ToolRun:
    """Run ``argv`` in ``cwd``; write its log to ``cwd/log_name``; on failure raise a StageError with the log's tail."""
    limit = timeout if timeout is not None else CONVERT_TIMEOUT_S
    try:
        completed = subprocess.run(argv, cwd=cwd, env=env or tool_env(), capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise StageError(f"{stage}: {tool} did not finish within {limit:.0f} s", hint="set EDGEKIT_CONVERT_TIMEOUT to allow longer") from None
    log = clean_log(completed.stdout + completed.stderr)
    (cwd / log_name).write_text(log)
    if completed.returncode != 0:
        how = f"was killed by signal {-completed.returncode}" if completed.returncode < 0 else f"failed (exit {completed.returncode})"
        raise StageError(f"{stage}: {tool} {how}. Log tail:\n{tail(log, 20)}",
                         hint=hint or f"rerun with --keep-work to keep {log_name} and the intermediate files")
    return ToolRun(completed.stdout, log)
