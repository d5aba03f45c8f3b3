from pathlib import Path

import pytest

from edgekit.backends import get_backend
from edgekit.errors import BackendUnavailable, ProfileError
from edgekit.profiles import available_profiles, load_profile_file, resolve_target


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_builtin_profiles_load_and_validate():
    profiles = available_profiles()
    assert {"android", "arm"} <= set(profiles)
    android = profiles["android"]
    assert android.backend == "tflite"
    assert android.default_precision == "int8"
    assert android.tolerance_for("fp32").min_sqnr_db >= 30


def test_alias_and_did_you_mean():
    assert resolve_target("rpi5").name == "arm"
    with pytest.raises(ProfileError, match=r"unknown target 'andriod'") as info:
        resolve_target("andriod")
    assert "did you mean 'android'" in str(info.value)


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, 'name = "x"\nbackend = "tflite"\n[tolerances.fp32]\nmin_cosin = 0.9\n')
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    message = str(info.value)
    assert str(path) in message and "tolerances.fp32.min_cosin" in message and "did you mean 'min_cosine'" in message


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ('name = "x"\nbackend = "tflite"\ndefault_precision = "int4"\n', "default_precision", "must be one of"),
        ('name = "x"\nbackend = 3\n', "backend", "expected a string"),
        ('name = "x"\n', "backend", "is required"),
        ('name = "x"\nbackend = "tflite"\n[preprocessing]\nlayout = "CHW"\n', "preprocessing.layout", "must be one of"),
        ('name = "x"\nbackend = "tflite"\n[preprocessing]\nstd = [0.5, 0.0, 1.0]\n', "preprocessing.std", "must be > 0"),
        ('name = "x"\nbackend = "tflite"\n[latency]\nruns = 0\n', "latency.runs", "must be > 0"),
        ('name = "x"\nbackend = "tflite"\nstatic_shapes = "yes"\n', "static_shapes", "expected true/false"),
    ],
)
def test_bad_values_are_named(tmp_path, body, key, problem):
    with pytest.raises(ProfileError) as info:
        load_profile_file(write(tmp_path, body))
    assert f"key '{key}'" in str(info.value) and problem in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile_file(write(tmp_path, "name = \n"))
    with pytest.raises(ProfileError, match="not found"):
        load_profile_file(tmp_path / "nope.toml")


def test_user_profile_by_path(tmp_path):
    path = write(tmp_path, 'name = "my-board"\nbackend = "tflite"\nprecisions = ["fp32"]\ndefault_precision = "fp32"\n')
    profile = resolve_target(str(path))
    assert profile.name == "my-board" and profile.precisions == ("fp32",)


def test_unavailable_backend_says_so(tmp_path):
    path = write(tmp_path, 'name = "future"\nbackend = "quantum"\nnote = "The quantum backend is not available yet."\n')
    profile = load_profile_file(path)
    with pytest.raises(BackendUnavailable, match="not available yet"):
        get_backend(profile.backend, profile)
