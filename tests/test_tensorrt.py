"""TensorRT backend: everything that needs no GPU runs here (profiles, options, shapes, the builder script,
trtexec command lines, the no-GPU and no-TensorRT error paths, the runner's checks); engine build and
inference are marked ``gpu`` and skipped without one."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.backends import get_backend
from edgekit.backends.tensorrt import TrtOptions
from edgekit.backends.tensorrt.build import build_engine, builder_args, host_build_problem, shape_args, trtexec_command
from edgekit.errors import BackendUnavailable, OptionsError, ProfileError
from edgekit.modelio import parse_input_shapes
from edgekit.profiles import parse_profile, resolve_target
from edgekit.remote import rt_tensorrt, runner
from edgekit.remote import trt_builder as builder
from edgekit.remote.protocol import ERROR_MARKER, PROTOCOL_VERSION
from edgekit.transport.local import LocalTransport
from tests.conftest import calibration_for, remote_command

HOST_PROBLEM = host_build_problem()
needs_gpu = pytest.mark.skipif(HOST_PROBLEM is not None, reason=f"needs an NVIDIA GPU with TensorRT: {HOST_PROBLEM}")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "COLUMNS": "400"})


# --- profiles ---------------------------------------------------------------------------------


def test_jetson_is_an_alias_of_the_orin_nano():
    assert resolve_target("jetson").name == "jetson-orin-nano"
    assert not (Path(__file__).parents[1] / "targets" / "jetson.toml").exists()


@pytest.mark.parametrize(("name", "cc", "dla", "trt"), [("jetson-orin-nano", "8.7", 0, "10.3"), ("jetson-agx-orin", "8.7", 2, "10.3"),
                                                         ("jetson-xavier-nx", "7.2", 2, "8.5.2")])
def test_jetson_profiles(name, cc, dla, trt):
    profile = resolve_target(name)
    assert profile.backend == "tensorrt" and profile.default_precision == "fp16"
    assert profile.hardware["compute_capability"] == cc and profile.hardware["dla_cores"] == dla
    assert profile.hardware["tensorrt"] == trt and {"jetpack", "memory_gb", "cuda"} <= set(profile.hardware)
    options = TrtOptions.from_profile(profile)
    assert options.workspace_mib and options.timing_cache and options.dla_core is None
    assert get_backend(profile.backend, profile).name == "tensorrt"


def _profile(tmp_path, **backend_options):
    data = {"name": "t", "backend": "tensorrt", "backend_options": backend_options, "hardware": {"dla_cores": 2}}
    return parse_profile(data, tmp_path / "t.toml")


@pytest.mark.parametrize(("options", "message"), [
    ({"workspace": 10}, "key 'backend_options.workspace': unknown TensorRT option"),
    ({"dla_core": 2}, "is 2, but [hardware] dla_cores says this device has 2"),
    ({"workspace_mib": 0}, "backend_options.workspace_mib': must be an integer"),
    ({"builder": "magic"}, "must be one of auto, python, trtexec"),
    ({"calibration_method": "avg"}, "must be one of minmax, entropy, percentile"),
    ({"timing_cache": "yes"}, "must be true or false"),
    ({"int8_op_types": []}, "must name at least one op type"),
    ({"builder_optimization_level": 9}, "builder_optimization_level': must be an integer in [0, 5]"),
])
def test_bad_backend_options_name_file_and_key(tmp_path, options, message):
    with pytest.raises(ProfileError) as caught:
        TrtOptions.from_profile(_profile(tmp_path, **options))
    assert message in caught.value.message and "t.toml" in caught.value.message


def test_dla_options_reach_the_builder(tmp_path):
    options = TrtOptions.from_profile(_profile(tmp_path, dla_core=1, gpu_fallback=True, workspace_mib=512, builder="trtexec"))
    args = builder_args("int8", options, ["x=1x3:2x3:4x3"], "~/.cache/edgekit/trt-timing")
    assert args[:9] == ["trt-build", "--onnx", "model.onnx", "--engine", "model.engine", "--meta", "build.json", "--precision", "int8"]
    joined = " ".join(args)
    assert "--workspace-mib 512" in joined and "--dla-core 1 --gpu-fallback" in joined and "--trtexec only" in joined
    assert "--shape x=1x3:2x3:4x3" in joined and "--timing-cache-dir ~/.cache/edgekit/trt-timing" in joined
    assert runner.make_parser().parse_args(args).dla_core == 1  # the script accepts what the backend sends


# --- shapes -------------------------------------------------------------------------------------


def test_parse_input_shapes_fixed_range_and_legacy_forms():
    shapes, ranges = parse_input_shapes(["a=1x3x8x8", "b:1,4", "c=1x3:2x3:4x3"])
    assert shapes == {"a": (1, 3, 8, 8), "b": (1, 4), "c": (2, 3)}
    assert ranges == {"c": ((1, 3), (2, 3), (4, 3))}


@pytest.mark.parametrize(("text", "message"), [
    ("c=4x3:2x3:1x3", "MIN <= OPT <= MAX"),
    ("c=1x3:2x3", "exactly three shapes"),
    ("c=1x3:2x3x1:4x3", "same rank"),
    ("c=1x3:2xq:4x3", "integers"),
])
def test_bad_ranges(text, message):
    with pytest.raises(OptionsError, match=message):
        parse_input_shapes([text])


def test_shape_args_match_the_models_dynamic_inputs():
    dynamic = {"image": ["N", 3, 64, 64]}
    assert shape_args({"image": ((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))}, dynamic) == ["image=1x3x64x64:2x3x64x64:4x3x64x64"]
    with pytest.raises(OptionsError, match="dim 1 is fixed to 3"):
        shape_args({"image": ((1, 1, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))}, dynamic)
    with pytest.raises(OptionsError, match="are dynamic in the model; a dynamic TensorRT engine needs a range"):
        shape_args({}, dynamic)
    with pytest.raises(OptionsError, match="has fixed dims in the model"):
        shape_args({"image": ((1,), (1,), (1,))}, {})


# --- trtexec command lines ---------------------------------------------------------------------

HOSTILE = ["my model $(touch pwned) `touch pwned2`.onnx", "it's; rm -rf ~.onnx", "-starts-with-dash.onnx", "new\nline.onnx"]


@pytest.mark.parametrize("onnx_name", HOSTILE)
def test_trtexec_command_is_shell_safe(onnx_name, tmp_path):
    shapes = [builder.parse_shape_spec("in:0,x=1x3x8x8:2x3x8x8:4x3x8x8")]
    argv = builder.trtexec_argv("trtexec", onnx_name, "out $x.engine", "int8", 1024, shapes, "/tmp/cache dir/t.cache", 0, True, 3)
    assert argv[1] == "--onnx=" + onnx_name and argv[2] == "--saveEngine=out $x.engine"
    assert "--fp16" in argv and "--int8" in argv and "--memPoolSize=workspace:1024M" in argv
    assert "--minShapes='in:0,x':1x3x8x8" in argv and "--maxShapes='in:0,x':4x3x8x8" in argv  # trtexec's own quoting of names
    assert "--useDLACore=0" in argv and "--allowGPUFallback" in argv and "--skipInference" in argv
    # through a real shell, every argument arrives intact and nothing runs
    line = shlex.join([sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *argv[1:]])
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert json.loads(out) == argv[1:]
    assert not list(tmp_path.iterdir())


def test_trtexec_command_for_users_and_older_trtexec():
    command = trtexec_command("it's.onnx", "m.engine", "fp16", TrtOptions(workspace_mib=256), [])
    assert shlex.split(command) == ["trtexec", "--onnx=it's.onnx", "--saveEngine=m.engine", "--fp16",
                                    "--memPoolSize=workspace:256M", "--skipInference"]
    old = builder.trtexec_argv("trtexec", "m.onnx", "m.engine", "fp32", 256, skip_flag="--buildOnly", pool_flag=False)
    assert "--workspace=256" in old and "--buildOnly" in old and "--fp16" not in old


def test_trtexec_log_parsing():
    log = "[I] === Device Information ===\n[I] Selected Device: Orin\n[I] Compute Capability: 8.7\n[I] TensorRT version: 10.3.0\n"
    assert builder.parse_trtexec_log(log) == {"gpu": "Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0"}


# --- the builder script ---------------------------------------------------------------------------


def _builder(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*remote_command(cwd), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _error(stderr: str) -> dict:
    line = next(line for line in stderr.splitlines() if line.startswith(ERROR_MARKER + " "))
    return json.loads(line.split(" ", 1)[1])


def test_builder_script_usage_errors(cnn, tmp_path):
    base = ["trt-build", "--onnx", str(cnn), "--engine", "e", "--meta", "m.json", "--precision", "fp16"]
    bad_shape = _builder(*base, "--shape", "x=4x3:1x3:2x3", cwd=tmp_path)
    assert bad_shape.returncode == 2 and "MIN <= OPT <= MAX" in _error(bad_shape.stderr)["message"]
    missing = _builder("trt-build", "--onnx", "nope.onnx", "--engine", "e", "--meta", "m", "--precision", "fp16", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.onnx not found" in _error(missing.stderr)["message"]
    assert _builder(*base[:-1], "int4", cwd=tmp_path).returncode == 2
    assert _builder(*base, "--opt-level", "9", cwd=tmp_path).returncode == 2
    assert _builder(cwd=tmp_path).returncode == 2


@pytest.mark.skipif(HOST_PROBLEM is None, reason="this host has TensorRT and a GPU")
def test_builder_script_without_tensorrt_or_trtexec(cnn, tmp_path):
    result = _builder("trt-build", "--onnx", str(cnn), "--engine", "e", "--meta", "m.json", "--precision", "fp16", cwd=tmp_path)
    assert result.returncode == 3
    error = _error(result.stderr)
    assert error["kind"] == "trt_missing" and "nor trtexec are available" in error["message"]
    probe = json.loads(_builder("trt-probe", cwd=tmp_path).stdout)
    assert probe["tensorrt"] is None and probe["builder_version"] == PROTOCOL_VERSION


@pytest.mark.skipif(HOST_PROBLEM is None, reason="this host has TensorRT and a GPU")
def test_build_on_this_host_without_tensorrt_is_a_clear_error(cnn, tmp_path):
    # The device side of this path runs through the real test sshd in tests/test_ssh.py.
    with pytest.raises(BackendUnavailable, match="on this host"):
        build_engine(LocalTransport(), cnn, "fp16", TrtOptions(), [], tmp_path, "m.engine", str(tmp_path / "cache"))


# --- through the CLI ------------------------------------------------------------------------------


@pytest.mark.skipif(HOST_PROBLEM is None, reason="this host has TensorRT and a GPU")
def test_cli_fp16_without_gpu_fails_clearly(superres, tmp_path):
    result = run_cli("build", str(superres), "--target", "jetson", "-o", "out", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "must be built on the GPU that will run it" in result.stderr and "No engine was built" in result.stderr
    assert "--device NAME" in result.stderr and "trtexec --onnx=super_resolution.onnx" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "edgekit-report.json").exists()
    assert not list((tmp_path / "out").glob("*.engine"))


@pytest.mark.skipif(HOST_PROBLEM is None, reason="this host has TensorRT and a GPU")
def test_cli_int8_without_gpu_still_makes_and_checks_the_qdq_model(cnn, tmp_path):
    calib = calibration_for(cnn, tmp_path)
    result = run_cli("build", str(cnn), "--target", "jetson-agx-orin", "--precision", "int8", "--calib", str(calib), "-o", "out", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "The int8 QDQ model passed its onnxruntime check (min SQNR" in result.stderr
    kept = tmp_path / "out" / "tiny_cnn_int8.qdq.onnx"
    assert kept.is_file() and any(n.op_type == "DequantizeLinear" for n in onnx.load(str(kept)).graph.node)
    assert "trtexec --onnx=tiny_cnn_int8.qdq.onnx" in result.stderr and "--int8" in result.stderr


def test_cli_int8_failing_qdq_check_exits_1_and_builds_nothing(superres, tmp_path):
    """Calibration with a handful of near-constant samples: the QDQ model cannot follow the real data."""
    rng = np.random.default_rng(2)
    # the outlier first: int8 calibrates on the first 80% (the last 20% are held out for verification)
    calib = np.concatenate([rng.standard_normal((1, 1, 32, 32)).astype(np.float32) * 40, np.full((15, 1, 32, 32), 0.001, np.float32)])
    np.save(tmp_path / "odd.npy", calib)
    result = run_cli("build", str(superres), "--target", "jetson", "--precision", "int8", "--calib", "odd.npy", "-o", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "the int8 QDQ model fails its onnxruntime check against the float model" in result.stderr
    assert "no engine was built" in result.stderr and "calibration_method" in result.stderr
    assert not list((tmp_path / "out").glob("*.engine"))


def _dynamic_cnn(cnn: Path, folder: Path) -> Path:
    model = onnx.load(str(cnn))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = "N"
    path = folder / "dyn_cnn.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.skipif(HOST_PROBLEM is None, reason="this host has TensorRT and a GPU")
def test_cli_shape_range_goes_to_the_engine_and_opt_to_verification(cnn, tmp_path):
    model = _dynamic_cnn(cnn, tmp_path)
    result = run_cli("build", str(model), "--target", "jetson", "--precision", "fp16",
                     "--input-shape", "image=1x3x64x64:2x3x64x64:4x3x64x64", "-o", "out", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "--minShapes=image:1x3x64x64" in result.stderr and "--optShapes=image:2x3x64x64" in result.stderr
    assert "--maxShapes=image:4x3x64x64" in result.stderr
    static = run_cli("build", str(cnn), "--target", "jetson", "--input-shape", "image=1x3x64x64:1x3x64x64:2x3x64x64", "-o", "o2", cwd=tmp_path)
    assert static.returncode == 3 and "range for image, but that input has fixed dims in the model" in static.stderr
    tflite = run_cli("build", str(model), "--target", "arm", "--precision", "fp32", "--input-shape", "image=1x3x64x64:2x3x64x64:4x3x64x64",
                     "-o", "o3", cwd=tmp_path)
    assert tflite.returncode == 3 and "MIN:OPT:MAX ranges are for TensorRT targets" in tflite.stderr


# --- the device runner ------------------------------------------------------------------------------


def test_runner_explains_engine_device_mismatch():
    built = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "gpu": "Orin"}
    assert rt_tensorrt.engine_mismatch(built, "10.3.0", {"compute_capability": "8.7", "name": "Orin"}) is None
    message = rt_tensorrt.engine_mismatch(built, "8.5.2.2", {"compute_capability": "7.2", "name": "Xavier"})
    assert "built with TensorRT 10.3.0 and this device has TensorRT 8.5.2.2" in message
    assert "compute capability 8.7 (Orin) and this GPU is 7.2 (Xavier)" in message and "rebuild it on this device" in message
    assert rt_tensorrt.engine_mismatch({}, "10.3.0", {}) is None  # trtexec builds may not know: TensorRT's own check then decides
    assert "tensorrt" in runner.RUNTIMES


@pytest.mark.skipif(HOST_PROBLEM is None, reason="this host has TensorRT and a GPU")
def test_runner_without_tensorrt_is_runtime_missing(tmp_path):
    (tmp_path / "io.json").write_text(json.dumps({"runtime": "tensorrt", "inputs": ["x"], "outputs": ["y"]}))
    (tmp_path / "m.engine").write_bytes(b"not an engine")
    result = subprocess.run([*remote_command(tmp_path), "run", "--artifact", "m.engine", "--io", "io.json", "--inputs", "i.npz",
                             "--outputs", "o.npz", "--timings", "t.json"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 3
    error = json.loads(result.stderr.strip().splitlines()[-1].split(" ", 1)[1])
    assert error["kind"] == "runtime_missing" and "TensorRT's Python bindings could not be imported" in error["message"]


# --- on a GPU ---------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("name", ["cnn", "superres", "transformer"])
def test_engine_build_and_inference_on_this_gpu(name, precision, request, tmp_path):
    model = request.getfixturevalue(name)
    args = ["build", str(model), "--target", "jetson", "--precision", precision, "-o", "out", "--json", "--runs", "20", "--allow-foreign-gpu"]
    if precision == "int8":
        args += ["--calib", str(calibration_for(model, tmp_path, count=32))]
    # built and run on this host's GPU (--allow-foreign-gpu unless it is an Orin): the Jetson profile's options apply
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verification"]["status"] == "passed" and report["verification"]["runtime"].startswith("tensorrt")
    engine = next(s for s in report["stages"] if s["name"] == "engine")
    assert engine["detail"]["gpu"] and engine["detail"]["compute_capability"] and engine["tool_version"]
    assert report["verification"]["environment"]["timer"] == "cuda_events"


@pytest.mark.gpu
@needs_gpu
def test_dynamic_engine_runs_at_several_batch_sizes(cnn, tmp_path):
    model = _dynamic_cnn(cnn, tmp_path)
    result = run_cli("build", str(model), "--target", "jetson", "--precision", "fp16", "--input-shape",
                     "image=1x3x64x64:2x3x64x64:4x3x64x64", "-o", "out", "--json", "--allow-foreign-gpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verification"]["status"] == "passed"
