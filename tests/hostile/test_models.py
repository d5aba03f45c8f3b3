"""Hostile and broken model files: each ends in a ModelError that says what is wrong, before any library loads it."""

import os
import re
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import ModelError
from edgekit.modelio import load_model
from tests.test_modelio import save_external, tiny_model


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(os.urandom(64) + b"\xff" * 64), "not a valid ONNX model"),
    ],
    ids=["missing", "directory", "empty", "random-bytes"],
)
def test_unreadable_files(tmp_path, setup, expected):
    path = tmp_path / "bad.onnx"
    setup(path)
    with pytest.raises(ModelError, match=expected):
        load_model(path)


def test_truncated_protobuf(tmp_path, superres):
    data = superres.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated|not a valid ONNX|raw data"):
        load_model(path)


def test_zip_renamed_onnx(tmp_path):
    path = tmp_path / "model.onnx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.onnx", b"x")
    with pytest.raises(ModelError, match="zip archive"):
        load_model(path)


TRAVERSAL = "external data must live inside the model's folder"


@pytest.mark.parametrize("outside_exists", [True, False], ids=["outside-file-exists", "outside-file-missing"])
@pytest.mark.parametrize(("location", "why"), [("../weights.bin", "contains '..'"), ("sub/../../weights.bin", "contains '..'"),
                                               ("/etc/passwd", "is an absolute path")], ids=["parent", "nested-parent", "absolute"])
def test_external_data_outside_folder_is_refused(tmp_path, location, why, outside_exists):
    """Refused for being outside, whether or not the file is there: never a "file not found" that invites a retry."""
    path = save_external(tmp_path / "m", location)
    if outside_exists:
        (tmp_path / "weights.bin").write_bytes(b"\0" * 48)
    with pytest.raises(ModelError) as refused:
        load_model(path)
    assert f"{why}; {TRAVERSAL}" in refused.value.message
    assert "not found" not in refused.value.message


def test_external_data_symlink_is_refused(tmp_path):
    path = save_external(tmp_path / "m")
    outside = tmp_path / "outside.bin"
    os.replace(tmp_path / "m" / "weights.bin", outside)
    os.symlink(outside, tmp_path / "m" / "weights.bin")
    with pytest.raises(ModelError, match="is a symbolic link or resolves outside the model's folder"):
        load_model(path)


def test_external_data_under_a_symlinked_directory_is_refused(tmp_path):
    """sub/weights.bin where sub is a link to a folder outside: the file itself is no link."""
    path = save_external(tmp_path / "m", "sub/weights.bin")
    (tmp_path / "outside").mkdir()
    os.replace(tmp_path / "m" / "weights.bin", tmp_path / "outside" / "weights.bin")
    os.symlink(tmp_path / "outside", tmp_path / "m" / "sub")
    with pytest.raises(ModelError) as refused:
        load_model(path)
    assert "resolves outside the model's folder" in refused.value.message and str(tmp_path / "outside") in refused.value.message


@pytest.mark.timeout(60)  # a FIFO opened for reading would block forever
@pytest.mark.parametrize(("make", "expected"), [
    (os.mkfifo, "is not a regular file"),
    (os.mkdir, "is not a regular file"),
    (lambda p: p.write_bytes(b""), "runs past the end of the file (0 bytes)"),
], ids=["fifo", "directory", "empty-file"])
def test_external_data_that_is_not_a_data_file(tmp_path, make, expected):
    path = save_external(tmp_path / "m")
    (tmp_path / "m" / "weights.bin").unlink()
    make(tmp_path / "m" / "weights.bin")
    with pytest.raises(ModelError, match=re.escape(expected)):
        load_model(path)
    import edgekit

    with pytest.raises(ModelError, match=re.escape(expected)):  # the whole build refuses it before reading it, the cache key included
        edgekit.build(path, "arm-ncnn", precision="fp32", out_dir=tmp_path / "out")


def _external(tensor, location: str):
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _constant(name: str, location: str):
    return helper.make_node("Constant", [], [name], value=_external(numpy_helper.from_array(np.ones(4, np.float32), name + "_value"), location))


def subgraph_model(location: str):
    """The external tensor sits in an If branch."""
    branch = lambda name: helper.make_graph([_constant(name, location)], name, [],  # noqa: E731
                                             [helper.make_tensor_value_info(name, TensorProto.FLOAT, [4])])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch("a"), else_branch=branch("b"))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def function_model(location: str):
    """The external tensor sits in a model-local function's body (onnx's loader fills those too)."""
    body = [_constant("c", location), helper.make_node("Add", ["x", "c"], ["y"])]
    function = helper.make_function("local", "AddWeights", ["x"], ["y"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("AddWeights", ["x"], ["y"], domain="local")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    return helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])


@pytest.mark.parametrize("make", [subgraph_model, function_model], ids=["subgraph", "function"])
def test_external_data_in_subgraphs_and_functions_is_checked(tmp_path, make):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.full(4, 2.0, np.float32).tobytes())
    (tmp_path / "secret.bin").write_bytes(b"\xff" * 16)
    good = folder / "good.onnx"
    onnx.save(make("w.bin"), str(good))
    assert load_model(good).outputs[0].name == "y"  # the model itself is fine: only where its data lives is wrong below
    bad = folder / "bad.onnx"
    onnx.save(make("../secret.bin"), str(bad))
    with pytest.raises(ModelError) as refused:
        load_model(bad)
    assert f"contains '..'; {TRAVERSAL}" in refused.value.message


def test_external_data_hardlink_is_refused(tmp_path):
    path = save_external(tmp_path / "m")
    os.link(tmp_path / "m" / "weights.bin", tmp_path / "elsewhere.bin")
    with pytest.raises(ModelError, match="hard link"):
        load_model(path)


def test_external_data_missing_or_short(tmp_path):
    path = save_external(tmp_path / "missing")
    (tmp_path / "missing" / "weights.bin").unlink()
    with pytest.raises(ModelError, match="file not found"):
        load_model(path)
    path = save_external(tmp_path / "short")
    data_file = tmp_path / "short" / "weights.bin"
    data_file.write_bytes(data_file.read_bytes()[:20])
    with pytest.raises(ModelError, match="runs past the end|needs"):
        load_model(path)


def test_raw_data_length_must_match_dims(tmp_path):
    model = tiny_model()
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="raw data but its dims"):
        load_model(path)


def test_checker_failure_is_reported(tmp_path):
    model = tiny_model()
    model.graph.node[0].input[1] = "does_not_exist"
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="checker|shape inference"):
        load_model(path)


def test_terabyte_dims_refused_before_allocating(tmp_path):
    model = tiny_model()
    huge = helper.make_tensor("huge", TensorProto.FLOAT, [1_000_000, 1_000_000], vals=[])
    huge.ClearField("float_data")
    model.graph.initializer.append(huge)
    path = tmp_path / "huge.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="refusing to load it") as info:
        load_model(path)
    assert "huge" in str(info.value)


def test_over_2gb_external_data_refused_without_reading_it(tmp_path):
    """A sparse 3 GiB data file: declared sizes are checked before a byte of it is read."""
    folder = tmp_path / "big"
    folder.mkdir()
    elements = 3 * 1024**3 // 4
    with open(folder / "weights.bin", "wb") as handle:
        handle.truncate(elements * 4)  # sparse: no real disk or memory used
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [elements], vals=[])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(elements * 4))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [elements])], [tensor])
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match="more than 2.0 GiB"):
        load_model(path)


def test_newer_opset_than_installed_onnx(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "future.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)]), str(path))
    with pytest.raises(ModelError, match="uses opset 99, newer than this onnx"):
        load_model(path)


def test_graph_with_a_cycle(tmp_path):
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    path = tmp_path / "cycle.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match="topologically sorted"):
        load_model(path)


def test_protobuf_that_is_not_a_model(tmp_path):
    """Valid protobuf bytes of another message (a TensorProto) parse as an empty ModelProto."""
    path = tmp_path / "tensor.onnx"
    path.write_bytes(helper.make_tensor("t", TensorProto.FLOAT, [2], [1.0, 2.0]).SerializeToString())
    with pytest.raises(ModelError, match="holds no ONNX graph|not a valid ONNX"):
        load_model(path)


def test_hostile_input_dims_are_not_allocated(tmp_path):
    """A model declaring a terabyte-sized input must not make edgekit allocate random inputs for it."""
    from edgekit.calibration import random_samples
    from edgekit.errors import CalibrationError

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 100_000, 100_000, 100])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 100_000, 100_000, 100])])
    path = tmp_path / "wide.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    loaded = load_model(path)
    with pytest.raises(CalibrationError, match="refusing to allocate"):
        random_samples(loaded.inputs, 8, seed=0)
