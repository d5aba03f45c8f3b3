"""Hostile and broken model files: each ends in a ModelError that says what is wrong, before any library loads it."""

import os
import zipfile

import onnx
import pytest
from onnx import TensorProto, helper

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


@pytest.mark.parametrize("location", ["../weights.bin", "sub/../../weights.bin", "/etc/passwd"])
def test_external_data_outside_folder_is_refused(tmp_path, location):
    path = save_external(tmp_path / "m", location)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 48)
    with pytest.raises(ModelError, match=r"\.\.|absolute path"):
        load_model(path)


def test_external_data_symlink_is_refused(tmp_path):
    path = save_external(tmp_path / "m")
    outside = tmp_path / "outside.bin"
    os.replace(tmp_path / "m" / "weights.bin", outside)
    os.symlink(outside, tmp_path / "m" / "weights.bin")
    with pytest.raises(ModelError, match="symbolic link|outside"):
        load_model(path)


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
