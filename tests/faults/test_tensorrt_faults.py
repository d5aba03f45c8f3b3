"""TensorRT when the build host is not what the target expects: a profile names the GPU it is for, a local build
on another compute capability is refused unless --allow-foreign-gpu (and then the report names both GPUs), and an
exception from a TensorRT API the builder was not written for becomes a clear error naming the TensorRT version.

This host has no GPU: the decision is tested with probe dicts as ``cuda_devices()`` returns them on real machines,
the CLI up to where a GPU is needed, and the GPU part is marked ``gpu``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from edgekit.backends.base import BuildHost, ConvertContext
from edgekit.backends.tensorrt import TensorRTBackend, TrtOptions
from edgekit.backends.tensorrt.build import builder_failure, foreign_gpu, host_build_problem
from edgekit.errors import OptionsError, ProfileError, ToolError
from edgekit.profiles import available_profiles, parse_profile, resolve_target
from edgekit.remote import cuda, runner, trt_builder
from edgekit.remote.protocol import TENSORRT_API_ERROR, RemoteError, report_error

ROOT = Path(__file__).resolve().parents[2]
# what edgekit.remote.cuda.cuda_devices() reports on these machines
ORIN = {"name": "Orin", "compute_capability": "8.7", "total_memory_bytes": 7_990_000_000}
XAVIER = {"name": "Xavier", "compute_capability": "7.2", "total_memory_bytes": 7_770_000_000}
H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "total_memory_bytes": 85_045_149_696}


def test_every_tensorrt_profile_names_its_gpu():
    shipped = [p for p in available_profiles().values() if p.backend == "tensorrt"]
    assert {p.name for p in shipped} >= {"jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx"}
    for profile in shipped:
        assert re.fullmatch(r"\d+\.\d+", profile.options.compute_capability) and profile.options.gpu, profile.name
    assert resolve_target("jetson-xavier-nx").options.compute_capability == "7.2"  # Volta
    assert resolve_target("jetson-orin-nano").options.compute_capability == "8.7"  # Ampere (Orin)


def test_bad_compute_capability_in_a_profile_is_refused(tmp_path):
    with pytest.raises(ProfileError, match=r"t.toml: key 'hardware.compute_capability': must be MAJOR.MINOR"):
        parse_profile({"name": "t", "backend": "tensorrt", "hardware": {"compute_capability": "sm_87"}}, tmp_path / "t.toml")


def test_foreign_gpu_decision_with_real_probe_dicts():
    orin, xavier = resolve_target("jetson-orin-nano").options, resolve_target("jetson-xavier-nx").options
    assert foreign_gpu(orin, ORIN) is None
    message = foreign_gpu(orin, H100)
    assert "Orin (nvgpu), 1024-core Ampere (compute capability 8.7)" in message and "NVIDIA H100 80GB HBM3 (compute capability 9.0)" in message
    assert "7.2" in foreign_gpu(xavier, ORIN) and "8.7" in foreign_gpu(xavier, ORIN)
    assert foreign_gpu(TrtOptions(), H100) is None  # a profile that names no GPU is for whatever GPU builds it
    assert foreign_gpu(orin, {}) is None  # no GPU here: the "cannot build on this host" error says so instead


def _context(tmp_path: Path, allow: bool) -> ConvertContext:
    profile = resolve_target("jetson-orin-nano")
    return ConvertContext(model_path=tmp_path / "m.onnx", model=None, inputs=[], outputs=[], profile=profile, precision="fp16",
                          calibration=None, work_dir=tmp_path, artifact_stem="m_fp16", options=profile.options,
                          build_host=BuildHost(allow_foreign_gpu=allow))


def test_foreign_gpu_is_refused_unless_allowed(tmp_path):
    ctx = _context(tmp_path, allow=False)
    with pytest.raises(OptionsError) as refused:
        TensorRTBackend.check_gpu(ctx, ctx.options, H100)
    assert refused.value.exit_code == 3 and "target 'jetson-orin-nano'" in refused.value.message
    assert "compute capability 8.7" in refused.value.message and "NVIDIA H100" in refused.value.message
    assert "--allow-foreign-gpu" in refused.value.hint
    assert TensorRTBackend.check_gpu(ctx, ctx.options, ORIN) is None
    allowed = _context(tmp_path, allow=True)
    assert "NVIDIA H100" in TensorRTBackend.check_gpu(allowed, allowed.options, H100)


@pytest.mark.skipif(host_build_problem() is None, reason="this host can build engines")
def test_allow_foreign_gpu_through_the_cli_up_to_the_missing_gpu(cnn, tmp_path):
    result = subprocess.run([sys.executable, "-m", "edgekit.cli", "build", str(cnn), "--target", "jetson", "--allow-foreign-gpu", "-o", "out"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600, env={**os.environ, "COLUMNS": "400"})
    assert result.returncode == 3, result.stderr  # the option is taken; what stops the build is the missing GPU
    assert "this host cannot build one" in result.stderr and "No engine was built" in result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(host_build_problem() is not None, reason=f"needs an NVIDIA GPU with TensorRT: {host_build_problem()}")
def test_foreign_gpu_refused_then_allowed_on_this_gpu(cnn, tmp_path):
    here = cuda.first_device()
    target = "jetson-xavier-nx" if here["compute_capability"] != "7.2" else "jetson-orin-nano"
    argv = [sys.executable, "-m", "edgekit.cli", "build", str(cnn), "--target", target, "--precision", "fp16", "-o", "out", "--json"]
    refused = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert refused.returncode == 3 and here["name"] in refused.stderr and "--allow-foreign-gpu" in refused.stderr
    assert not list((tmp_path / "out").glob("*.engine"))
    allowed = subprocess.run([*argv, "--allow-foreign-gpu"], capture_output=True, text=True, cwd=tmp_path, timeout=1200)
    assert allowed.returncode == 0, allowed.stderr
    engine = next(s for s in json.loads(allowed.stdout)["stages"] if s["name"] == "engine")["detail"]
    assert engine["gpu"] == here["name"] and engine["target_compute_capability"] == resolve_target(target).options.compute_capability
    assert engine["foreign_gpu"]


FAKE_TENSORRT = '''"""A stand-in for TensorRT's Python module as a later major version could look: it has a Builder, but not the
API calls edgekit's builder makes. Only edgekit's error path is under test here; the real API needs a GPU."""

__version__ = "11.0.0"


class Builder:
    def __init__(self, logger):
        raise AttributeError("'tensorrt.Builder' has no attribute 'create_network'")
'''


def test_unexpected_tensorrt_exception_names_the_version(cnn, tmp_path, monkeypatch, capsys):
    (tmp_path / "tensorrt.py").write_text(FAKE_TENSORRT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    trt, why = trt_builder.import_tensorrt()
    assert trt is not None, why
    args = runner.make_parser().parse_args(["trt-build", "--onnx", str(cnn), "--engine", str(tmp_path / "m.engine"),
                                            "--meta", str(tmp_path / "m.json"), "--precision", "fp16"])
    with pytest.raises(RemoteError) as raised:
        trt_builder.build_with_tensorrt(trt, args, [], ORIN)
    assert raised.value.kind == TENSORRT_API_ERROR and "TensorRT 11.0.0 raised AttributeError" in raised.value.message
    code = report_error(raised.value)  # what the builder prints and exits with on the build machine
    error = builder_failure(code, capsys.readouterr().err, "this host", "host")  # and what edgekit makes of it
    assert isinstance(error, ToolError) and error.exit_code == 4
    assert "TensorRT 11.0.0" in error.message and "tensorrt>=10,<11" in error.hint


def test_tensorrt_extra_is_pinned_below_the_next_major():
    from packaging.specifiers import SpecifierSet

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (requirement,) = extras["tensorrt"]
    allowed = SpecifierSet(requirement.removeprefix("tensorrt"))
    assert "10.3.0" in allowed and "10.13.3" in allowed and "11.0.0" not in allowed and "9.2.0" not in allowed
