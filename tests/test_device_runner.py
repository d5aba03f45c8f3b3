"""The device runner is uploaded to devices: it must parse on Python 3.8 and import nothing from edgekit."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from edgekit.verify import RUNNER_SCRIPT


def test_runner_is_python38_syntax_and_self_contained():
    source = Path(RUNNER_SCRIPT).read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "edgekit" not in imported
    assert not any(isinstance(node, ast.Call) and any(k.arg == "strict" for k in node.keywords) for node in ast.walk(tree)), \
        "zip(strict=...) needs Python 3.10"


def test_probe_reports_runtimes(tmp_path):
    result = subprocess.run([sys.executable, str(RUNNER_SCRIPT), "probe", "--path", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["python_ok"] and probe["runtimes"]["onnxruntime"] and probe["runtimes"]["ai_edge_litert"]
    assert probe["free_disk_bytes"] > 0


def test_unknown_runtime_and_usage(tmp_path):
    (tmp_path / "io.json").write_text(json.dumps({"runtime": "quantum", "inputs": [], "outputs": []}))
    result = subprocess.run([sys.executable, str(RUNNER_SCRIPT), "run", "--artifact", "x", "--io", str(tmp_path / "io.json"),
                             "--inputs", "i.npz", "--outputs", "o.npz", "--timings", "t.json"], capture_output=True, text=True)
    assert result.returncode == 3 and "EDGEKIT_RUNNER_ERROR" in result.stderr and "quantum" in result.stderr
    assert subprocess.run([sys.executable, str(RUNNER_SCRIPT)], capture_output=True).returncode == 2


def test_guard_is_python38_and_kills_what_it_started(tmp_path):
    from edgekit.transport.base import GUARD, CommandResult, guarded, interpret_guard

    ast.parse(GUARD, feature_version=(3, 8))
    script = tmp_path / "spawn.py"
    script.write_text("import subprocess, time\nsubprocess.Popen(['sleep', '987'])\ntime.sleep(60)\n")
    result = subprocess.run(guarded(sys.executable, str(tmp_path / "lock"), 5, 1, str(script), []), capture_output=True, text=True, timeout=60)
    assert interpret_guard(CommandResult(result.returncode, result.stdout, result.stderr), "here").signal == "ALRM"
    assert subprocess.run(["pgrep", "-f", "sleep 987"], capture_output=True).stdout == b""
