"""What edgekit rewrites in a model before any converter sees it: names, frozen inputs, onnxruntime-only ops."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgekit.errors import ModelError, OptionsError
from edgekit.fix_inputs import apply_fixed_inputs, parse_fix_input
from edgekit.metrics import compare
from edgekit.modelio import load_model
from edgekit.names import sanitize
from edgekit.ortops import dequantize, ort_only_nodes, refuse
from edgekit.profiles import DEFAULT_TOLERANCES
from edgekit.reference import session_for
from edgekit.simplify import simplify
from tests import planted


def test_names_become_valid_unique_and_map_back(tmp_path):
    model = load_model(planted.bad_names(tmp_path / "m.onnx")).proto
    renamed, names = sanitize(model)
    node_names = [n.name for n in renamed.graph.node]
    assert node_names[:2] == ["Conv_0", "Relu_1"] and len(set(node_names)) == len(node_names)  # "Conv@0", "" -> valid, unique
    tensors = {t for n in renamed.graph.node for t in [*n.input, *n.output]}
    assert all(t[0].isalpha() and t.replace("_", "").isalnum() for t in tensors)
    assert names.tensor("input:0") == "input_0" and names.original("prob_out_0") == "prob/out:0"
    assert names.node("Softmax@0") == "Softmax_0" and names.node("already_fine") == "already_fine"
    assert names.report(load_model(tmp_path / "m.onnx").inputs, []) ["io"] == {"input:0": "input_0"}
    onnx.checker.check_model(renamed, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    before = session_for(model).run(None, {"input:0": x})[0]
    after = session_for(renamed).run(None, {"input_0": x})[0]
    np.testing.assert_array_equal(before, after)
    assert sanitize(renamed)[1].tensors == {} and sanitize(renamed)[0] is renamed  # stable: valid names stay


def test_names_inside_subgraphs_and_collisions(tmp_path):
    model = load_model(planted.sample_rate_if(tmp_path / "if.onnx")).proto
    renamed, names = sanitize(model)
    assert names.unnamed_nodes == len(model.graph.node) + 4  # 8 top-level nodes and one in each of 4 branches, all unnamed
    assert len({n.name for n in renamed.graph.node}) == len(renamed.graph.node)
    onnx.checker.check_model(renamed, full_check=True)


def test_fix_input_folds_the_if_away(tmp_path):
    loaded = load_model(planted.sample_rate_if(tmp_path / "if.onnx"))
    assert parse_fix_input("sr=16000") == ("sr", 16000) and parse_fix_input("mask=1,0,1") == ("mask", [1, 0, 1])
    fixed, frozen = apply_fixed_inputs(loaded, {"sr": 16000})
    assert [s.name for s in fixed.inputs] == ["audio"] and frozen[0].to_dict() == {"dtype": "int64", "shape": [], "given": "16000", "value": 16000}
    from edgekit.calibration import random_samples

    samples = random_samples(fixed.inputs, 2, seed=0)
    simplified = simplify(fixed.proto, samples).model
    assert "If" not in {n.op_type for n in simplified.graph.node}
    with pytest.raises(OptionsError, match="names 'rate'"):
        apply_fixed_inputs(load_model(tmp_path / "if.onnx"), {"rate": 1})
    with pytest.raises(OptionsError, match="not integral"):
        apply_fixed_inputs(load_model(tmp_path / "if.onnx"), {"sr": 16000.5})
    with pytest.raises(OptionsError, match=r"shape \[3\] does not fit"):
        apply_fixed_inputs(load_model(tmp_path / "if.onnx"), {"sr": [1, 2, 3]})


def test_onnxruntime_quantized_ops_are_refused_by_name(tmp_path):
    quantized = planted.ort_quantized(planted.float_conv_lstm(tmp_path / "f.onnx"), tmp_path / "q.onnx")
    found = ort_only_nodes(load_model(quantized).proto)
    assert set(found) == {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "com.microsoft::DynamicQuantizeLSTM"}
    with pytest.raises(ModelError) as caught:
        refuse(load_model(quantized).proto, quantized)
    assert "ConvInteger (1 node" in caught.value.message and "--dequantize" in caught.value.hint
    from edgekit.inspect import inspect_model

    assert set(inspect_model(quantized)["onnxruntime_only_ops"]) == set(found)  # edgekit inspect lists them too
    with pytest.raises(ModelError, match=r"com.microsoft::Gelu \(1 node: gelu_fused\)") as caught:
        refuse(load_model(planted.microsoft_op(tmp_path / "ms.onnx")).proto, "ms.onnx")
    assert "cannot rewrite com.microsoft::Gelu" in caught.value.hint


def test_dequantize_gives_the_float_model_back(tmp_path):
    float_model = planted.float_conv_lstm(tmp_path / "f.onnx")
    quantized = load_model(planted.ort_quantized(float_model, tmp_path / "q.onnx"))
    rewritten, ops = dequantize(quantized.proto)
    assert ops == {"ConvInteger": 1, "MatMulInteger": 1, "com.microsoft::DynamicQuantizeLSTM": 1, "DynamicQuantizeLinear": 2}
    assert {n.op_type for n in rewritten.graph.node} == {"Conv", "Relu", "Transpose", "Reshape", "LSTM", "Squeeze", "MatMul"}
    assert [o.domain for o in rewritten.opset_import] == [""]
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.random.default_rng(0).standard_normal((4, 1, 1, 4, 8)).astype(np.float32)
    tolerance = DEFAULT_TOLERANCES["int8"]
    ort_quantized, floating, rewrite = (session_for(m) for m in (quantized.proto, load_model(float_model).proto, rewritten))
    for sample in x:
        expected = ort_quantized.run(None, {"image": sample})[0]
        got = rewrite.run(None, {"image": sample})[0]
        assert compare("logits", expected, got, tolerance).passed  # as close as the original's own quantization noise
        # dequantized weights (w - zero) * scale: the rewrite is the float model up to weight rounding
        assert compare("logits", floating.run(None, {"image": sample})[0], got, DEFAULT_TOLERANCES["fp16"]).sqnr_db > 30


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward-Y_h", "bidirectional"])
def test_recurrent_nodes_rewritten_for_pnnx_compute_the_same(tmp_path, bidirectional):
    from edgekit.backends.ncnn.onnx_fixes import pnnx_ready_recurrent

    model = load_model(planted.lstm_as_exported(tmp_path / "lstm.onnx", bidirectional)).proto
    rewritten, changed = pnnx_ready_recurrent(model)
    lstm = next(n for n in rewritten.graph.node if n.op_type == "LSTM")
    assert changed == ["LSTM"] and list(lstm.input) == ["seq", "W", "R", "B"] and list(lstm.output) == ["Y"]  # states and Y_h/Y_c gone
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 12, 10)).astype(np.float32)
    np.testing.assert_array_equal(session_for(model).run(None, {"mels": x})[0], session_for(rewritten).run(None, {"mels": x})[0])


def test_padded_and_ceil_mode_max_pools_read_edges_exactly(tmp_path):
    from edgekit.backends.tflite.onnx_fixes import max_pool_edges

    model = load_model(planted.ceil_mode_pool(tmp_path / "pool.onnx")).proto
    rewritten, changed = max_pool_edges(model)
    assert len(changed) == 2
    assert all(not [a for a in n.attribute if a.name in ("pads", "ceil_mode")] for n in rewritten.graph.node if n.op_type == "MaxPool")
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 24, 24)).astype(np.float32) * 5
    np.testing.assert_array_equal(session_for(model).run(None, {"image": x})[0], session_for(rewritten).run(None, {"image": x})[0])


def _gather_of_concat(thickness: int, gather_axis: int, index: int) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    parts = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [thickness, 1, 4]) for k in range(3)]
    nodes = [helper.make_node("Concat", ["x0", "x1", "x2"], ["stack"], axis=0),
             helper.make_node("Constant", [], ["index"], value=numpy_helper.from_array(np.array(index, np.int64))),
             helper.make_node("Gather", ["stack", "index"], ["picked"], axis=gather_axis, name="pick")]
    shape = [1, 4] if (thickness, gather_axis) == (1, 0) else None
    graph = helper.make_graph(nodes, "g", parts, [helper.make_tensor_value_info("picked", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("index", [-1, 0, 2])
def test_gather_of_one_concatenated_input_reads_it_directly(index):
    from edgekit.backends.tflite.onnx_fixes import gathers_from_concats

    model = _gather_of_concat(1, 0, index)
    rewritten, changed = gathers_from_concats(model)
    assert changed == ["pick"] and [n.op_type for n in rewritten.graph.node if n.name == "pick"] == ["Squeeze"]
    onnx.checker.check_model(rewritten, full_check=True)
    rng = np.random.default_rng(0)
    feeds = {f"x{k}": rng.standard_normal((1, 1, 4)).astype(np.float32) for k in range(3)}
    np.testing.assert_array_equal(session_for(model).run(None, feeds)[0], session_for(rewritten).run(None, feeds)[0])


@pytest.mark.parametrize(("thickness", "axis"), [(2, 0), (1, 1)], ids=["inputs-two-thick", "other-axis"])
def test_gathers_that_are_not_one_input_are_left_alone(thickness, axis):
    from edgekit.backends.tflite.onnx_fixes import gathers_from_concats

    model = _gather_of_concat(thickness, axis, 0)
    rewritten, changed = gathers_from_concats(model)
    assert changed == [] and rewritten is model
