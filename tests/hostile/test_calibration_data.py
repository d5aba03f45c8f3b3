"""Hostile and broken calibration data: wrong shape or dtype, NaN/Inf, pickles, empty folders, corrupt images."""

import numpy as np
import pytest
from PIL import Image

from edgekit.calibration import load_samples
from edgekit.errors import CalibrationError
from tests.test_calibration import IMAGE, PRE


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: np.save(d / "c.npy", np.zeros((4, 3, 9, 9), np.float32)), "wants \\[1, 3, 8, 8\\]"),
        (lambda d: np.save(d / "c.npy", np.full((4, 3, 8, 8), np.nan, np.float32)), "NaN/Inf"),
        (lambda d: np.save(d / "c.npy", np.full((2, 3, 8, 8), "a")), "dtype"),
        (lambda d: np.save(d / "c.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True), "pickled arrays are refused|Python objects"),
        (lambda d: np.savez(d / "c.npz", other=np.zeros((2, 3, 8, 8), np.float32), more=np.zeros(1)), "no samples for input"),
        (lambda d: (d / "c.txt").write_text("x"), "unsupported calibration file type"),
    ],
    ids=["wrong-shape", "nan", "wrong-dtype", "pickle", "wrong-keys", "wrong-type"],
)
def test_bad_calibration_files(tmp_path, make, message):
    make(tmp_path)
    target = next(tmp_path.iterdir())
    with pytest.raises(CalibrationError, match=message):
        load_samples(target, IMAGE, PRE)


def test_empty_folder_and_corrupt_image(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="no .npy/.npz files and no images"):
        load_samples(empty, IMAGE, PRE)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "good.png")
    (images / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(CalibrationError, match="bad.jpg: cannot decode image"):
        load_samples(images, IMAGE, PRE)


def test_missing_path(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        load_samples(tmp_path / "nope", IMAGE, PRE)
