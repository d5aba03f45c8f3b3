"""The shipped example models are exactly what examples/make_models.py generates."""

import subprocess
import sys
from pathlib import Path

import onnx

from edgekit.samples import SAMPLES

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_committed_examples_match_the_generator(tmp_path):
    for name, factory in SAMPLES.items():
        committed = onnx.load(str(EXAMPLES / "models" / f"{name}.onnx"))
        assert committed.SerializeToString() == factory().SerializeToString(), f"examples/models/{name}.onnx is stale; rerun examples/make_models.py"


def test_generator_script_runs(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "make_models.py"), "nope"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown model" in result.stderr
