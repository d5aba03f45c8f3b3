"""Issue 12: locate the first divergent layer, and keep sensitive layers in float until verification passes.

Every model here carries one planted problem (tests/planted_numeric.py) in a node whose name the tests assert:
``/mix/Conv`` reads a tensor with one channel 1000x the rest (int8), ``/big/Conv`` has weights past fp16's
65504 (fp16; on x86 ncnn and TFLite keep fp16 activations in fp32, so weights are what overflows here).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.types import BuildOptions
from tests import planted_numeric as planted

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    import onnx

    folder = tmp_path_factory.mktemp("planted")
    paths = {"outlier": folder / "outlier.onnx", "overflow": folder / "overflow.onnx", "calib": folder / "calib.npy"}
    onnx.save(planted.outlier_model(), str(paths["outlier"]))
    onnx.save(planted.overflow_model(weight_overflow=True), str(paths["overflow"]))
    np.save(paths["calib"], planted.calibration())
    return paths


def _build(model: Path, target: str, precision: str, out: Path, calib: Path | None = None, **options) -> edgekit.BuildReport:
    return edgekit.build(model, target, precision=precision, calib=calib, out_dir=out, options=BuildOptions(use_cache=False, **options))


def _nodes(report) -> list[str]:
    return [layer["node"] for layer in (report.quantization or {}).get("float_layers", [])]


# --- ncnn -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ncnn_int8_unfixed(models, tmp_path_factory):
    return _build(models["outlier"], "arm-ncnn", "int8", tmp_path_factory.mktemp("ncnn-int8-none"), models["calib"], fallback="none")


def test_ncnn_int8_first_divergence_names_the_planted_node(ncnn_int8_unfixed):
    report = ncnn_int8_unfixed
    verification = report.verification
    assert verification.status == "failed"
    first = verification.first_divergence
    assert first["node"] == "/mix/Conv" and first["op"] == "Conv"
    tolerance = verification.tolerances["min_sqnr_db"]
    assert first["sqnr_db"] < tolerance <= first["input_sqnr_db"]
    curve = [layer["node"] for layer in verification.layers]
    assert curve == ["/stem/Conv", "/block1/Conv", "/hot/Conv", "/mix/Conv", "/block2/Conv", "/head/Conv"]  # topological order
    assert verification.locate["method"] == "named" and verification.locate["compared_tensors"] == 6
    assert any(s.name == "locate" for s in report.stages)
    assert report.quantization["float_layers"] == [] and report.quantization["fallback"] == "none"


def test_ncnn_int8_fallback_keeps_the_planted_layer_float_and_passes(models, tmp_path):
    report = _build(models["outlier"], "arm-ncnn", "int8", tmp_path, models["calib"])  # --fallback auto: the profile's default
    assert report.verification.status == "passed", report.verification.reason
    quantization = report.quantization
    assert _nodes(report) == ["/mix/Conv"]
    assert quantization["applied"] == "mixed" and quantization["size_cost_bytes"] > 0
    rounds = quantization["rounds"]
    assert rounds[0]["status"] == "failed" and rounds[0]["first_divergence"]["node"] == "/mix/Conv"
    assert rounds[-1]["status"] == "passed" and rounds[-1]["added"] == ["/mix/Conv"]
    assert quantization["float_layers"][0]["sqnr_gain_db"] > 10
    param = (tmp_path / report.artifact).read_text()
    assert param.count(" 8=2") == 5  # six convolutions, one left out of the int8 rewrite
    assert report.artifact_bytes - quantization["size_cost_bytes"] == rounds[0]["artifact_bytes"]


def test_ncnn_fp16_overflow_is_located_and_kept_fp32(models, tmp_path):
    unfixed = _build(models["overflow"], "arm-ncnn", "fp16", tmp_path / "none", fallback="none")
    assert unfixed.verification.status == "failed"
    first = unfixed.verification.first_divergence
    assert first["node"] == "/big/Conv" and math.isnan(first["sqnr_db"]) and first["input_sqnr_db"] > 40

    fixed = _build(models["overflow"], "arm-ncnn", "fp16", tmp_path / "auto")
    assert fixed.verification.status == "passed", fixed.verification.reason
    assert _nodes(fixed) == ["/big/Conv"]
    from edgekit.backends.ncnn.format import read_param

    layers = read_param((tmp_path / "auto" / fixed.artifact).read_text())
    assert [layer.get_int(31) for layer in layers if layer.get_int(31)] == [3]  # one layer without fp16 storage/arithmetic


def test_ncnn_int8_attention_stays_float_instead_of_failing(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.attn, self.fc = torch.nn.LayerNorm(64), torch.nn.MultiheadAttention(64, 4, batch_first=True), torch.nn.Linear(64, 64)

        def forward(self, x):
            h = self.norm(x)
            return self.fc(x + self.attn(h, h, h, need_weights=False)[0])

    model = tmp_path / "attention.onnx"
    torch.onnx.export(Block().eval(), (torch.randn(1, 16, 64),), str(model), input_names=["tokens"], output_names=["features"],
                      opset_version=17, dynamo=False)
    calib = tmp_path / "tokens.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((32, 16, 64)).astype(np.float32))
    report = _build(model, "arm-ncnn", "int8", tmp_path / "out", calib)
    assert "MultiHeadAttention" in (tmp_path / "out" / report.artifact).read_text()
    assert report.verification.status == "passed", report.verification.reason
    (attention,) = [layer for layer in report.quantization["float_layers"] if "MultiHeadAttention" in layer["reason"]]
    assert attention["node"].startswith("/attn/")


def test_ncnn_int8_lstm_stays_float_instead_of_failing(tmp_path):
    import onnx

    model, calib = tmp_path / "lstm.onnx", tmp_path / "x.npy"
    onnx.save(planted.lstm_model(), str(model))
    np.save(calib, planted.sequence_calibration())
    report = _build(model, "arm-ncnn", "int8", tmp_path / "out", calib)
    assert "LSTM" in (tmp_path / "out" / report.artifact).read_text()
    assert report.verification.status == "passed", report.verification.reason
    reasons = {layer["node"]: layer["reason"] for layer in report.quantization["float_layers"]}
    assert reasons["/lstm/LSTM"].startswith("ncnn int8 has no LSTM kernel")


def test_fp16_weights_are_written_exactly_as_pnnx_writes_them(models, tmp_path):
    from edgekit.backends.ncnn import pnnx_executable
    from edgekit.backends.ncnn.format import TAGGED, read_param, split_weights, tagged_fp16

    if pnnx_executable() is None:
        pytest.skip("pnnx is not installed")
    for fp16 in (0, 1):
        folder = tmp_path / f"fp16-{fp16}"
        folder.mkdir()
        shutil.copy(models["overflow"], folder / "m.onnx")
        subprocess.run([str(pnnx_executable()), "m.onnx", "inputshape=[1,8,32,32]f32", f"fp16={fp16}"], cwd=folder, check=True, capture_output=True)
    layers = read_param((tmp_path / "fp16-0" / "m.ncnn.param").read_text())
    blobs = split_weights(layers, (tmp_path / "fp16-0" / "m.ncnn.bin").read_bytes())
    ours = b"".join(tagged_fp16(b.values) if b.kind == TAGGED else b.raw for layer in layers for b in blobs[layer.name])
    assert ours == (tmp_path / "fp16-1" / "m.ncnn.bin").read_bytes()  # rounding, overflow to inf, flushed subnormals


# --- TFLite ---------------------------------------------------------------------------------------


def test_tflite_int8_fallback_passes_and_names_the_planted_node(models, tmp_path):
    report = _build(models["outlier"], "android", "int8", tmp_path, models["calib"])
    rounds = report.quantization["rounds"]
    assert rounds[0]["status"] == "failed" and rounds[0]["first_divergence"]["node"] == "/mix/Conv"
    assert report.verification.status == "passed", report.verification.reason
    floats = {layer["node"]: layer["reason"] for layer in report.quantization["float_layers"]}
    assert "/mix/Conv" in floats and floats["/mix/Conv"].startswith("sensitive")
    assert "/hot/Conv" in floats  # TFLite rounds a tensor where it is written: the writer of /mix's input stays float too
    assert set(floats) <= {"/mix/Conv", "/hot/Conv", "/hot/Relu"}
    assert report.stages[-1].name == "fallback" and next(s for s in report.stages if s.name == "convert").detail.get("reused") is None


def test_tflite_fp16_overflow_is_located_without_per_layer_fallback(models, tmp_path):
    report = _build(models["overflow"], "android", "fp16", tmp_path)
    assert report.verification.status == "failed"
    assert report.verification.first_divergence["node"] == "/big/Conv"
    assert "no per-layer fallback for fp16" in report.quantization["fallback_skipped"]


# --- TensorRT (the QDQ model, checked with onnxruntime on this host) --------------------------------


def _trt_context(models, tmp_path, budget):
    from edgekit.backends import ConvertContext, get_backend
    from edgekit.calibration import SampleSet
    from edgekit.modelio import load_model
    from edgekit.profiles import resolve_target

    loaded = load_model(models["outlier"])
    profile = resolve_target("jetson")
    backend = get_backend("tensorrt", profile)
    return ConvertContext(model_path=models["outlier"], model=loaded.proto, inputs=loaded.inputs, outputs=loaded.outputs, profile=profile,
                          precision="int8", calibration=SampleSet({"x": np.load(models["calib"])[:, None]}, "calibration:test"), work_dir=tmp_path,
                          artifact_stem="outlier_int8", options=backend.options(profile), fallback_budget=budget)


def test_tensorrt_qdq_check_names_the_node_and_fallback_fixes_it(models, tmp_path):
    from edgekit.backends.tensorrt.int8 import quantize
    from edgekit.errors import VerificationFailed

    ctx = _trt_context(models, tmp_path / "none", None)
    (tmp_path / "none").mkdir()
    with pytest.raises(VerificationFailed, match="first divergent node: /mix/Conv"):
        quantize(ctx, ctx.model_path, ctx.options)

    (tmp_path / "auto").mkdir()
    ctx = _trt_context(models, tmp_path / "auto", 0.25)
    result = quantize(ctx, ctx.model_path, ctx.options)
    rounds = result.detail["fallback"]["rounds"]
    assert rounds[0]["first_divergence"]["node"] == "/mix/Conv" and rounds[-1]["status"] == "passed"
    assert "/mix/Conv" in result.float_layers and result.detail["check"]["passed"]
    import onnx

    qdq = onnx.load(str(result.path))
    inputs_of_mix = [n for n in qdq.graph.node if n.name == "/mix/Conv"][0].input
    assert not any("DequantizeLinear" in name for name in inputs_of_mix)  # nodes_to_exclude honoured


def test_tensorrt_build_without_gpu_keeps_the_fallback_qdq_model(models, tmp_path):
    result = subprocess.run([sys.executable, "-m", "edgekit.cli", "build", str(models["outlier"]), "--target", "jetson", "--precision", "int8",
                             "--calib", str(models["calib"]), "-o", str(tmp_path), "--no-cache"], capture_output=True, text=True, timeout=600)
    if result.returncode == 0:
        pytest.skip("this host builds TensorRT engines; see the gpu tests")
    assert result.returncode == 3, result.stderr
    assert "kept in float by per-layer fallback" in result.stderr and "/mix/Conv" in result.stderr
    assert list(tmp_path.glob("outlier_int8.qdq*.onnx"))


@pytest.mark.gpu
def test_tensorrt_engine_with_fallback_passes_on_this_gpu(models, tmp_path):
    from edgekit.backends.tensorrt.build import host_build_problem

    problem = host_build_problem()
    if problem is not None:
        pytest.skip(f"needs an NVIDIA GPU with TensorRT: {problem}")
    report = _build(models["outlier"], "jetson", "int8", tmp_path, models["calib"], locate=True)
    assert report.verification.status == "passed", report.verification.reason
    assert "/mix/Conv" in _nodes(report)
    assert report.verification.locate["method"] == "reconvert"


# --- Core ML (weights kept uncompressed; prediction needs macOS) -------------------------------------


def test_coreml_int8_keeps_the_named_layer_weights_uncompressed(models, tmp_path):
    pytest.importorskip("coremltools")
    from edgekit.backends import ConvertContext, get_backend
    from edgekit.backends.coreml.package import describe_package
    from edgekit.modelio import load_model
    from edgekit.profiles import resolve_target

    loaded = load_model(models["outlier"])
    profile = resolve_target("ios")
    backend = get_backend("coreml", profile)
    compressed = {}
    for name, floats in (("all", frozenset()), ("block1", frozenset({"/block1/Conv"}))):
        (tmp_path / name).mkdir()
        ctx = ConvertContext(model_path=models["outlier"], model=loaded.proto, inputs=loaded.inputs, outputs=loaded.outputs, profile=profile,
                             precision="int8", calibration=None, work_dir=tmp_path / name, artifact_stem="outlier_int8",
                             options=backend.options(profile), float_layers=floats)
        artifact = backend.convert(ctx)
        compressed[name] = describe_package(artifact.path)["op_counts"].get("constexpr_affine_dequantize", 0)
    assert compressed["block1"] == compressed["all"] - 1
    assert "block1_conv_weight" in artifact.details["float_layers"]["/block1/Conv"]


def test_coreml_locate_says_why_it_cannot_run_here(models, tmp_path):
    pytest.importorskip("coremltools")
    if sys.platform == "darwin":
        pytest.skip("on macOS Core ML runs and locate measures")
    report = _build(models["outlier"], "ios", "fp16", tmp_path, locate=True)
    assert report.verification.status == "skipped"
    assert report.verification.locate["status"] == "skipped" and "verification did not run" in report.verification.locate["reason"]


# --- any backend: reconverting with extra outputs ---------------------------------------------------


def test_reconvert_locate_on_a_backend_registered_from_outside(models, tmp_path):
    from edgekit.backends import _REGISTRY, register

    register("onnx-copy", "tests.fake_backend:OnnxCopyBackend")
    try:
        profile = tmp_path / "copy.toml"
        profile.write_text('name = "copy"\nbackend = "onnx-copy"\nprecisions = ["fp32"]\ndefault_precision = "fp32"\n')
        report = _build(models["outlier"], str(profile), "fp32", tmp_path / "out", locate=True)
    finally:
        _REGISTRY.pop("onnx-copy", None)
    located = report.verification.locate
    assert located["method"] == "reconvert" and located["status"] == "no_divergence"
    assert len(report.verification.layers) == 11  # six Conv and five Relu outputs: onnxruntime fuses nothing it must output
    assert all(layer["sqnr_db"] > 100 for layer in report.verification.layers)


# --- edgekit locate OUT, the CLI line, report.html ---------------------------------------------------


def test_cli_locate_on_an_existing_build(ncnn_int8_unfixed, tmp_path):
    out = tmp_path / "build"
    shutil.copytree(Path(ncnn_int8_unfixed.report_path).parent, out)
    data = json.loads((out / "edgekit-report.json").read_text())
    data["verification"].update(first_divergence=None, layers=[], locate=None)
    (out / "edgekit-report.json").write_text(json.dumps(data))
    result = subprocess.run([sys.executable, "-m", "edgekit.cli", "locate", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "first divergence: node /mix/Conv (Conv)" in result.stdout
    updated = json.loads((out / "edgekit-report.json").read_text())
    assert updated["verification"]["first_divergence"]["node"] == "/mix/Conv"
    assert "first divergence" in (out / "report.html").read_text()

    artifact = out / data["artifact"]
    artifact.write_text(artifact.read_text() + "\n")  # a changed artifact is refused, as by 'edgekit verify'
    refused = subprocess.run([sys.executable, "-m", "edgekit.cli", "locate", str(out)], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 3 and "changed since it was built" in refused.stderr


def test_build_cli_prints_one_line_each(models, tmp_path):
    result = subprocess.run([sys.executable, "-m", "edgekit.cli", "build", str(models["outlier"]), "--target", "arm-ncnn", "--precision", "int8",
                             "--calib", str(models["calib"]), "-o", str(tmp_path), "--no-cache"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "first divergence: node /mix/Conv (Conv)" in result.stdout and "(before fallback)" in result.stdout
    assert "kept float   1 layer(s): /mix/Conv (sensitive)" in result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium; .ci/run does)")
def test_report_html_plots_the_layers(ncnn_int8_unfixed, tmp_path):
    page = Path(ncnn_int8_unfixed.report_path).parent / "report.html"
    text = page.read_text()
    assert "<script" not in text.lower() and 'aria-label="SQNR per layer"' in text and "first divergence: /mix/Conv" in text
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update"]
    dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "SQNR per layer" in dom.stdout and "/mix/Conv" in dom.stdout


# --- pure parts -----------------------------------------------------------------------------------


def test_own_noise_ranks_the_layer_that_adds_it():
    from edgekit.debug.locate import LayerPoint, own_sqnr_db

    first = LayerPoint("a", "Conv", "a:0", 30.0, 1.0, math.inf)
    later = LayerPoint("b", "Conv", "b:0", 29.0, 1.0, 33.0)
    broken = LayerPoint("c", "Conv", "c:0", math.nan, math.nan, 40.0)
    inherited = LayerPoint("d", "Relu", "d:0", math.nan, math.nan, math.nan)
    assert own_sqnr_db(first) == pytest.approx(30.0)
    assert own_sqnr_db(later) == pytest.approx(-10 * math.log10(10 ** -2.9 - 10 ** -3.3), abs=1e-6)
    assert own_sqnr_db(broken) == -math.inf and own_sqnr_db(inherited) == math.inf


def test_tensors_are_matched_by_value_in_any_layout():
    from edgekit.debug.mapping import match_tensors

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1, 4, 3, 5)).astype(np.float32), rng.standard_normal((1, 16)).astype(np.float32)
    reference = [{"nchw": a, "flat": b, "zeros": np.zeros((1, 64), np.float32)}]
    twin = [{"nhwc": a.transpose(0, 2, 3, 1).copy(), "no_batch": b[0] + 1e-7, "other": rng.standard_normal((1, 64)).astype(np.float32)}]
    found = match_tensors(reference, twin, ["nhwc", "no_batch", "other"])
    assert found.matches["nchw"].artifact == "nhwc" and found.matches["nchw"].perm == (0, 2, 3, 1)
    assert found.matches["flat"].artifact == "no_batch" and found.matches["flat"].perm is None
    assert "constant" in found.unmapped["zeros"]


def test_profile_fallback_table_is_checked(tmp_path):
    from edgekit.errors import ProfileError
    from edgekit.profiles import load_profile_file, resolve_target

    assert resolve_target("android").fallback_precisions == ("int8", "fp16")
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\nbackend = "tflite"\n[fallback]\nprecisions = ["int4"]\n')
    with pytest.raises(ProfileError, match="fallback.precisions"):
        load_profile_file(path)
    path.write_text('name = "p"\nbackend = "tflite"\n[fallback]\nbudget = 1.5\n')
    with pytest.raises(ProfileError, match="fallback.budget"):
        load_profile_file(path)


def test_locate_works_when_the_input_name_is_renamed_for_the_converters(tmp_path):
    """An input named like a Caffe2 export's (``gpu_0/data_0``) is renamed in the converters' copy; locate must feed
    onnxruntime under that copy's names and still report the user's node names (the zoo's ResNet-50 hit this)."""
    import onnx

    model = planted.outlier_model()
    old = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = ["gpu_0/data_0" if name == old else name for name in node.input]
    model.graph.input[0].name = "gpu_0/data_0"
    path = tmp_path / "renamed.onnx"
    onnx.save(model, str(path))
    np.save(tmp_path / "calib.npy", planted.calibration())
    report = _build(path, "arm-ncnn", "int8", tmp_path / "out", tmp_path / "calib.npy", fallback="none")
    assert report.sanitized_names and "gpu_0/data_0" in report.sanitized_names["io"]
    assert report.verification.locate["status"] == "located", report.verification.locate
    assert report.verification.first_divergence["node"] == "/mix/Conv"
