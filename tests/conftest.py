"""Shared fixtures: sample models generated locally (never downloaded) and CLI helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.samples import SAMPLES, write_sample


@pytest.fixture(scope="session", autouse=True)
def session_build_cache(tmp_path_factory: pytest.TempPathFactory):
    """Never touch the user's real cache, even from session/module-scoped fixtures."""
    previous = os.environ.get("EDGEKIT_CACHE_DIR")
    os.environ["EDGEKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-build-cache"))
    yield
    if previous is None:
        os.environ.pop("EDGEKIT_CACHE_DIR", None)
    else:
        os.environ["EDGEKIT_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def isolated_build_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets an empty build cache, so no test passes on another test's cached build."""
    folder = tmp_path_factory.mktemp("build-cache")
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("samples")
    for name in SAMPLES:
        write_sample(name, folder)
    return folder


@pytest.fixture(scope="session")
def cnn(sample_dir: Path) -> Path:
    return sample_dir / "tiny_cnn.onnx"


@pytest.fixture(scope="session")
def superres(sample_dir: Path) -> Path:
    return sample_dir / "super_resolution.onnx"


@pytest.fixture(scope="session")
def transformer(sample_dir: Path) -> Path:
    return sample_dir / "transformer_block.onnx"


def remote_command(folder: Path) -> list[str]:
    """The command that runs edgekit's remote zipapp (written into ``folder``) on this host, as a device would."""
    from edgekit.remote.bundle import write_bundle

    return [sys.executable, str(write_bundle(folder))]


def calibration_for(model: Path, folder: Path, count: int = 16, seed: int = 7) -> Path:
    """A .npz of ``count`` seeded samples for every input of ``model``."""
    from edgekit.modelio import load_model

    loaded = load_model(model)
    rng = np.random.default_rng(seed)
    arrays = {s.name: rng.standard_normal((count, *s.shape[1:])).astype(np.float32) for s in loaded.inputs}
    path = folder / f"{model.stem}_calib.npz"
    np.savez(path, **arrays)
    return path


# --- security table: outcomes of tests/hostile and tests/faults, for tools/security_table.py ----------

_CASES: list[dict] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not os.environ.get("EDGEKIT_CASES_JSON") or not ("tests/hostile/" in report.nodeid or "tests/faults/" in report.nodeid):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _CASES.append({"nodeid": report.nodeid, "outcome": report.outcome,
                       "doc": (getattr(report, "head_line", "") or "")})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("EDGEKIT_CASES_JSON")
    if target:
        import json

        Path(target).write_text(json.dumps(_CASES, indent=2))


# --- a real sshd on 127.0.0.1 ------------------------------------------------------------------

@pytest.fixture
def sshd(tmp_path: Path):
    from tests.sshd import SSHServer, have_sshd

    if not have_sshd():
        pytest.skip("OpenSSH server not installed (Debian: apt-get install openssh-server; .ci/run does)")
    server = SSHServer(tmp_path / "sshd").start()
    yield server
    server.stop()


@pytest.fixture
def device_book(sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """devices.toml naming the test sshd as 'localhost-ssh', found through $EDGEKIT_DEVICES."""
    path = sshd.write_devices(tmp_path / "devices.toml")
    monkeypatch.setenv("EDGEKIT_DEVICES", str(path))
    return path


@pytest.fixture(scope="session")
def built_superres(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """An fp32 TFLite build of the super-resolution net (output folder), made once per session."""
    import edgekit

    out = tmp_path_factory.mktemp("built-superres")
    report = edgekit.build(sample_dir / "super_resolution.onnx", "arm", precision="fp32", out_dir=out)
    assert report.verification.status == "passed"
    return out


def _servers(tmp_path: Path, server_class, installed: bool, missing: str):
    """A factory starting servers of ``server_class`` in ``tmp_path``; yields it, then stops them all."""
    if not installed:
        pytest.skip(missing)
    started = []

    def start(**options):
        server = server_class(tmp_path / str(len(started)), **options)
        started.append(server)
        try:
            return server.start()
        except RuntimeError as exc:
            pytest.skip(f"cannot start {server_class.__name__} here: {exc}")

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def ssh_server(tmp_path: Path):
    """A factory for more real sshds with options (``sftp=False``, ``extra_config=...``)."""
    from tests.sshd import SSHServer, have_sshd

    yield from _servers(tmp_path / "sshd-extra", SSHServer, have_sshd(),
                        "OpenSSH server not installed (Debian: apt-get install openssh-server; .ci/run does)")


@pytest.fixture
def dropbear_server(tmp_path: Path):
    """A factory for real Dropbear servers (``sftp=False``: without its sftp-server). Dropbear runs in a private
    mount namespace: where that is not permitted (needs root or user namespaces) the test is skipped."""
    from tests.sshd import DropbearServer, have_dropbear

    yield from _servers(tmp_path / "dropbear", DropbearServer, have_dropbear(),
                        "Dropbear not installed (Debian: apt-get install dropbear-bin; .ci/run does)")
