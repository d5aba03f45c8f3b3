"""Calibration and verification inputs: user data (.npy/.npz/folders/images) or seeded random data.

A *sample set* holds, per input name, an array of shape ``[N, *input_shape]``: axis 0 indexes samples and
the remaining axes are the input's FULL shape, whatever the model's own batch axis is (a scalar input is
``[N]``, an RNN state ``[layers, batch, hidden]`` is ``[N, layers, batch, hidden]``). One sample feeds one
run. :meth:`SampleSet.sample` is the one accessor every consumer uses (reference runs, calibration for
every backend, verification inputs). The accepted file layouts and how ambiguity is resolved are in
``docs/verification.md`` ("Sample files"); :func:`fit_samples` implements them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import CalibrationError
from edgekit.profiles import Preprocessing
from edgekit.types import TensorSpec

# Generated verification inputs larger than this are refused (a hostile model can declare huge dims).
MAX_INPUT_BYTES = 1 << 30
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
#: int8 verification never reuses calibration samples: this fraction (at least one sample) is held out
HELD_OUT_FRACTION = 0.2


@dataclass
class SampleSet:
    """Per input name an array ``[N, *input_shape]``; ``sample(i)`` is the feed of one run."""

    arrays: dict[str, np.ndarray]
    source: str  # "random(seed=N)", "calibration:PATH", "held-out:PATH[a:b]", "verify-data:PATH"

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """The inputs of run ``index``, each in the input's full shape."""
        return {name: array[index, ...] for name, array in self.arrays.items()}  # "..." keeps a scalar a 0-d array

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of one sample of each input."""
        return {name: tuple(int(d) for d in array.shape[1:]) for name, array in self.arrays.items()}

    def select(self, start: int, stop: int, source: str | None = None) -> SampleSet:
        return SampleSet({k: v[start:stop] for k, v in self.arrays.items()}, source or self.source)

    def head(self, count: int) -> SampleSet:
        return self.select(0, count)

    def without(self, names: set[str] | frozenset[str]) -> SampleSet:
        """The same samples minus some inputs (inputs frozen with --fix-input)."""
        return SampleSet({k: v for k, v in self.arrays.items() if k not in names}, self.source)

    def with_aliases(self, mapping: dict[str, str]) -> SampleSet:
        """The same samples reachable under their names and under ``mapping``'s new names too."""
        return SampleSet({**self.arrays, **{mapping[k]: v for k, v in self.arrays.items() if k in mapping}}, self.source)

    def renamed(self, mapping: dict[str, str]) -> SampleSet:
        """The same samples keyed by other input names (the sanitized names a backend sees)."""
        return SampleSet({mapping.get(k, k): v for k, v in self.arrays.items()}, self.source)


def held_out_split(count: int, origin: str) -> int:
    """Index where the held-out verification samples start: the last 20% (at least one) of ``count``."""
    held = max(1, math.ceil(count * HELD_OUT_FRACTION))
    if count - held < 1:
        raise CalibrationError(
            f"{origin}: {count} sample(s) cannot be split into calibration and held-out verification samples; "
            "int8 is never verified on the samples it was calibrated on",
            hint="give at least 2 samples (edgekit holds out the last 20%, at least 1, for verification; "
            "100+ are recommended), or pass --verify-data PATH with separate verification samples")
    return count - held


def _concrete(spec: TensorSpec) -> tuple[int, ...]:
    if not spec.is_static:
        raise CalibrationError(f"input '{spec.name}' has dynamic dims {list(spec.shape)}; edgekit cannot generate random inputs for it",
                               hint=f"fix them with --input-shape {spec.name}=..., or pass sample data (--calib/--verify-data) to take them from")
    return tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]


def random_samples(inputs: list[TensorSpec], count: int, seed: int) -> SampleSet:
    """Seeded inputs in each input's dtype: standard normal floats, small non-negative ints (valid as indices
    and lengths), random bools; scalar inputs get one value per sample."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = (count, *_concrete(spec))
        dtype = np.dtype(spec.dtype) if not spec.dtype.startswith("onnx:") else np.dtype("V1")
        needed = int(np.prod(shape, dtype=np.float64)) * max(dtype.itemsize, 1)
        if needed > MAX_INPUT_BYTES:
            raise CalibrationError(f"input '{spec.name}' {list(spec.shape)} would need {needed / 1024**3:.1f} GiB for {count} verification samples; refusing to allocate it",
                                   hint="check the model's input shape, fix it with --input-shape, or lower --samples")
        if dtype.kind == "f":
            arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            arrays[spec.name] = rng.integers(0, 16, size=shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec.name] = rng.random(shape) > 0.5
        else:
            raise CalibrationError(f"input '{spec.name}' has dtype {spec.dtype}; edgekit cannot generate inputs of that type", hint="pass --calib with real samples")
    return SampleSet(arrays, f"random(seed={seed})")


def _fits(shape: tuple[int, ...], declared: tuple) -> bool:
    """Whether a concrete shape fits declared dims (a symbolic or unknown dim takes any size)."""
    return len(shape) == len(declared) and all(not isinstance(d, int) or d == s for s, d in zip(shape, declared, strict=True))


def _batch_one(declared: tuple) -> bool:
    """Axis 0 is a batch of one, or a dynamic dim that the legacy layout fixes to one."""
    return bool(declared) and (declared[0] == 1 or not isinstance(declared[0], int))


def _as_samples(array: np.ndarray, declared: tuple) -> np.ndarray | None:
    """``array`` as ``[N, *shape]``, or None when no accepted layout fits (see docs/verification.md):

    * ``[N, *shape]`` (one more axis than the input): N samples, always;
    * ``[N, *shape[1:]]`` (the input's rank) when axis 0 is 1 or dynamic: N samples of batch one (this wins
      over reading the array as one sample whose dynamic axis 0 is N: datasets are stored that way);
    * ``[*shape]`` exactly: one sample (inputs whose axis 0 is a fixed size other than 1);
    * ``[*shape[1:]]`` when axis 0 is 1 or dynamic: one sample of batch one.
    """
    rank = len(declared)
    if array.ndim == rank + 1 and _fits(array.shape[1:], declared):
        return array
    if array.ndim == rank and rank and _batch_one(declared) and _fits(array.shape[1:], declared[1:]):
        return array[:, None]
    if array.ndim == rank and _fits(array.shape, declared):
        return array[None]
    if array.ndim == rank - 1 and _batch_one(declared) and _fits(array.shape, declared[1:]):
        return array[None, None]
    return None


def _dims_text(declared: tuple) -> str:
    return ", ".join(str(d) if isinstance(d, int) else (str(d) if d else "?") for d in declared)


def _cast(name: str, array: np.ndarray, want: np.dtype, origin: str) -> np.ndarray:
    if array.dtype == want:
        return array
    if want.kind == "f" and array.dtype.kind in "fiu":
        return array.astype(want)
    if want.kind in "iu" and array.dtype.kind in "iu":
        info = np.iinfo(want)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise CalibrationError(f"{origin}: samples for '{name}' hold values outside the range of {want}")
        return array.astype(want)
    if want.kind == "b" and array.dtype.kind in "iu" and np.isin(array, (0, 1)).all():
        return array.astype(bool)
    raise CalibrationError(f"{origin}: samples for '{name}' have dtype {array.dtype}, the model wants {want}")


def fit_samples(name: str, array: np.ndarray, spec: TensorSpec, origin: str) -> np.ndarray:
    """Read one input's array as ``[N, *shape]`` (dynamic dims take the data's size); check dtype and values."""
    if array.dtype == object:
        raise CalibrationError(f"{origin}: '{name}' holds Python objects; only numeric arrays are accepted")
    declared = tuple(spec.shape)
    fitted = _as_samples(array, declared)
    if fitted is None:
        per_sample = f"[{_dims_text(declared)}]"
        raise CalibrationError(
            f"{origin}: samples for input '{name}' have shape {list(array.shape)}, but the model wants {per_sample} per sample",
            hint=f"store an array of shape [N, {_dims_text(declared)}]: axis 0 counts the samples, the rest is the input's full shape"
            + (" (a scalar input: shape [N])" if not declared else ""),
        )
    if spec.dtype.startswith("onnx:"):
        raise CalibrationError(f"{origin}: input '{name}' has ONNX type {spec.dtype}, which edgekit cannot feed")
    fitted = _cast(name, fitted, np.dtype(spec.dtype), origin)
    if fitted.dtype.kind == "f" and not np.isfinite(fitted).all():
        bad = int((~np.isfinite(fitted)).sum())
        raise CalibrationError(f"{origin}: samples for '{name}' contain {bad} NaN/Inf values", hint="clean the calibration data; NaN/Inf would corrupt the quantization ranges")
    if fitted.shape[0] == 0:
        raise CalibrationError(f"{origin}: no samples for '{name}'")
    return np.ascontiguousarray(fitted)


def check_against(samples: SampleSet, inputs: list[TensorSpec]) -> None:
    """After input shapes were fixed: every input has samples, and they have its (now static) shape."""
    for spec in inputs:
        if spec.name not in samples.arrays:
            raise CalibrationError(f"{samples.source}: no samples for input '{spec.name}'")
        shape = samples.shapes()[spec.name]
        if not _fits(shape, tuple(spec.shape)):
            raise CalibrationError(f"{samples.source}: samples for input '{spec.name}' have shape {list(shape)}, "
                                   f"but the model (with the shapes you fixed) wants {list(spec.shape)}",
                                   hint="make --input-shape agree with the sample data, or leave the dim to be taken from the data")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise CalibrationError(f"{path}: cannot read .npy ({exc}); object/pickled arrays are refused") from None
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read .npy: {exc}") from None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as exc:
        raise CalibrationError(f"{path}: cannot read .npz: {exc}") from None
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise CalibrationError(f"{path}: not a valid .npz archive: {exc}") from None


def _arrays_for_inputs(found: dict[str, np.ndarray], inputs: list[TensorSpec], origin: str) -> dict[str, np.ndarray]:
    if len(inputs) == 1 and len(found) == 1:
        only = next(iter(found.values()))
        return {inputs[0].name: fit_samples(inputs[0].name, only, inputs[0], origin)}
    missing = [s.name for s in inputs if s.name not in found]
    if missing:
        raise CalibrationError(f"{origin}: no samples for input(s) {', '.join(missing)} (found keys: {', '.join(found) or 'none'})", hint="name the arrays after the model's inputs")
    return {s.name: fit_samples(s.name, found[s.name], s, origin) for s in inputs}


def _image_geometry(spec: TensorSpec, pre: Preprocessing) -> tuple[bool, int, int, int]:
    """(channels_first, channels, height, width) for image samples of a 4-D input."""
    shape = spec.shape
    if len(shape) != 4 or not _batch_one(tuple(shape)):
        raise CalibrationError(f"image calibration needs a 4-D image input of batch 1; '{spec.name}' has shape {list(shape)}", hint="pass .npy/.npz samples instead")
    channels_first = pre.layout == "NCHW"
    channels = shape[1] if channels_first else shape[3]
    spatial = (shape[2], shape[3]) if channels_first else (shape[1], shape[2])
    if not isinstance(channels, int):
        raise CalibrationError(f"input '{spec.name}' {list(shape)} has a dynamic channel dim; image calibration cannot know how many channels to make",
                               hint="fix it with --input-shape, or check the profile's preprocessing.layout")
    if pre.size is None and not all(isinstance(d, int) for d in spatial):
        raise CalibrationError(f"input '{spec.name}' {list(shape)} has dynamic height/width and the profile sets no preprocessing.size",
                               hint="set [preprocessing] size = [H, W] in the profile, or fix the dims with --input-shape")
    height, width = pre.size or spatial
    return channels_first, int(channels), int(height), int(width)


def _load_image(path: Path, spec: TensorSpec, pre: Preprocessing) -> np.ndarray:
    """One preprocessed image as one sample in the input's full shape (batch one)."""
    from PIL import Image, UnidentifiedImageError

    channels_first, channels, height, width = _image_geometry(spec, pre)
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CalibrationError(f"{path}: cannot decode image: {exc}", hint="remove or replace the corrupt file") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pre.color == "BGR" and channels == 3:
        pixels = pixels[..., ::-1]
    mean = np.asarray(pre.mean[:channels] if len(pre.mean) >= channels else pre.mean[:1] * channels, np.float32)
    std = np.asarray(pre.std[:channels] if len(pre.std) >= channels else pre.std[:1] * channels, np.float32)
    pixels = (pixels * pre.scale - mean) / std
    if channels_first:
        pixels = pixels.transpose(2, 0, 1)
    if not _fits(pixels.shape, tuple(spec.shape[1:])):
        raise CalibrationError(f"{path}: preprocessed image has shape {list(pixels.shape)}, the model wants {list(spec.shape[1:])}", hint="check the profile's preprocessing.size/layout")
    return pixels[None].astype(np.dtype(spec.dtype))


def _concatenate(name: str, parts: list[tuple[str, np.ndarray]]) -> np.ndarray:
    shapes = {part.shape[1:] for _, part in parts}
    if len(shapes) > 1:
        first, other = parts[0], next(p for p in parts if p[1].shape[1:] != parts[0][1].shape[1:])
        raise CalibrationError(f"samples disagree on the shape of input '{name}': {list(first[1].shape[1:])} in {first[0]}, "
                               f"{list(other[1].shape[1:])} in {other[0]}",
                               hint=f"one build has one input shape: give samples of one size, and fix it with --input-shape {name}=...")
    return np.concatenate([part for _, part in parts])


def load_samples(path: Path, inputs: list[TensorSpec], pre: Preprocessing, max_samples: int | None = None,
                 kind: str = "calibration") -> SampleSet:
    """Read samples from a .npy, a .npz, a folder of .npy/.npz files, or a folder of images.

    ``inputs`` may have dynamic dims: the samples then say their size (the pipeline fixes those dims from them).
    ``kind`` labels the source: "calibration" (--calib) or "verify-data" (--verify-data)."""
    path = Path(path)
    origin = str(path)
    what = "verification" if kind == "verify-data" else "calibration"
    if not path.exists():
        raise CalibrationError(f"{path}: {what} data not found")
    if path.is_file():
        if path.suffix == ".npy":
            if len(inputs) != 1:
                raise CalibrationError(f"{path}: a single .npy can only feed a one-input model; this model has {len(inputs)} inputs", hint="use a .npz with one array per input name")
            arrays = {inputs[0].name: fit_samples(inputs[0].name, _load_npy(path), inputs[0], origin)}
        elif path.suffix == ".npz":
            arrays = _arrays_for_inputs(_load_npz(path), inputs, origin)
        else:
            raise CalibrationError(f"{path}: unsupported {what} file type '{path.suffix}'", hint="use .npy, .npz, a folder of them, or a folder of images")
    else:
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        npys = [p for p in files if p.suffix in (".npy", ".npz")]
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if max_samples:
            npys, images = npys[:max_samples], images[:max_samples]
        if npys:
            per_input: dict[str, list[tuple[str, np.ndarray]]] = {s.name: [] for s in inputs}
            for file in npys:
                found = _load_npz(file) if file.suffix == ".npz" else ({inputs[0].name: _load_npy(file)} if len(inputs) == 1 else {})
                if not found:
                    raise CalibrationError(f"{file}: a bare .npy cannot feed a multi-input model", hint="use .npz files keyed by input name")
                for name, array in _arrays_for_inputs(found, inputs, str(file)).items():
                    per_input[name].append((file.name, array))
            arrays = {name: _concatenate(name, parts) for name, parts in per_input.items()}
        elif images:
            if len(inputs) != 1:
                raise CalibrationError(f"{path}: an image folder can only feed a one-input model")
            arrays = {inputs[0].name: np.stack([_load_image(p, inputs[0], pre) for p in images])}
        else:
            raise CalibrationError(f"{path}: folder holds no .npy/.npz files and no images", hint="put samples (100+ recommended for calibration) in the folder")
    if max_samples:
        arrays = {k: v[:max_samples] for k, v in arrays.items()}
    counts = {len(v) for v in arrays.values()}
    if len(counts) != 1:
        raise CalibrationError(f"{path}: inputs have different sample counts {sorted(counts)}", hint="store the same number of samples (axis 0) for every input")
    return SampleSet(arrays, f"{kind}:{path}")
