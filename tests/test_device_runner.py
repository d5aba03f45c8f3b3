"""What runs on devices (edgekit/remote/) travels as one zipapp: it must parse on Python 3.8, import nothing from
edgekit or beyond the stdlib, numpy and the runtimes, and run from that single file."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from edgekit.remote import bundle
from edgekit.remote.protocol import ERROR_MARKER
from tests.conftest import remote_command

REMOTE = Path(bundle.__file__).resolve().parent
ALLOWED_IMPORTS = {
    "argparse", "ctypes", "importlib", "io", "json", "os", "platform", "re", "resource", "shutil", "subprocess", "sys", "time",
    "zipfile", "pathlib",
    "numpy", "PIL",  # numpy everywhere; PIL for Core ML image inputs on a Mac
    "ai_edge_litert", "tflite_runtime", "tensorflow", "ncnn", "onnxruntime", "tensorrt", "coremltools", "cuda", "torch", "polygraphy",
}


def test_remote_package_is_python38_and_self_contained():
    for path in sorted(REMOTE.glob("*.py")):
        tree = ast.parse(path.read_text(), feature_version=(3, 8))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        assert imported <= ALLOWED_IMPORTS, f"{path.name} imports {sorted(imported - ALLOWED_IMPORTS)}"
        assert not any(isinstance(node, ast.Call) and any(k.arg == "strict" for k in node.keywords) for node in ast.walk(tree)), \
            f"{path.name}: zip(strict=...) needs Python 3.10"


def test_bundle_is_deterministic_and_holds_every_module(tmp_path):
    import zipfile

    assert bundle.bundle_bytes() == bundle.bundle_bytes()
    with zipfile.ZipFile(bundle.write_bundle(tmp_path)) as archive:
        names = set(archive.namelist())
    assert "__main__.py" in names
    assert {f"edgekit_remote/{p.name}" for p in REMOTE.glob("*.py") if p.name != "__main__.py"} <= names


def test_bundle_runs_without_edgekit_or_site_packages(tmp_path):
    # -I -S: no site-packages and no edgekit on the path: the single file is all there is (numpy is reported missing)
    result = subprocess.run([sys.executable, "-I", "-S", str(bundle.write_bundle(tmp_path)), "probe", "--path", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["python_ok"] and probe["numpy"] is None and all(v is None for v in probe["runtimes"].values())


def test_probe_reports_runtimes(tmp_path):
    result = subprocess.run([*remote_command(tmp_path), "probe", "--path", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["python_ok"] and probe["runtimes"]["onnxruntime"] and probe["runtimes"]["ai_edge_litert"]
    assert probe["free_disk_bytes"] > 0


def test_unknown_runtime_and_usage(tmp_path):
    (tmp_path / "io.json").write_text(json.dumps({"runtime": "quantum", "inputs": [], "outputs": []}))
    command = remote_command(tmp_path)
    result = subprocess.run([*command, "run", "--artifact", "x", "--io", str(tmp_path / "io.json"),
                             "--inputs", "i.npz", "--outputs", "o.npz", "--timings", "t.json"], capture_output=True, text=True)
    assert result.returncode == 3 and ERROR_MARKER in result.stderr and "quantum" in result.stderr
    assert subprocess.run(command, capture_output=True).returncode == 2


def test_guard_is_python38_and_kills_what_it_started(tmp_path):
    from edgekit.transport.base import GUARD, CommandResult, guarded, interpret_guard

    ast.parse(GUARD, feature_version=(3, 8))
    script = tmp_path / "spawn.py"
    script.write_text("import subprocess, time\nsubprocess.Popen(['sleep', '987'])\ntime.sleep(60)\n")
    result = subprocess.run(guarded(sys.executable, str(tmp_path / "lock"), 5, 1, str(script), []), capture_output=True, text=True, timeout=60)
    assert interpret_guard(CommandResult(result.returncode, result.stdout, result.stderr), "here").signal == "ALRM"
    assert subprocess.run(["pgrep", "-f", "sleep 987"], capture_output=True).stdout == b""
