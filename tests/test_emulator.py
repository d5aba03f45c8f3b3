"""The emulated aarch64 device: a real sysroot (Debian arm64 packages + aarch64 wheels, downloaded once per
test session) run under a real qemu-user. Nothing here is mocked: the runner really executes ARM code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.emulator import MANIFEST, SPECS, find_emulator
from edgekit.errors import DeviceError, MissingDependency
from tests.conftest import calibration_for

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]
# Everything that needs the sysroot downloads it once per session (~40 MB from deb.debian.org and PyPI).
needs_qemu = pytest.mark.skipif(shutil.which("qemu-aarch64-static") is None,
                                reason="qemu-aarch64-static is not installed (Debian: apt-get install qemu-user-static; .ci/run does)")


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEKIT, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def emulator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One setup per test run, from a clean folder (or the finished one $EDGEKIT_EMULATOR_DIR names)."""
    from edgekit.emulator.sysroot import setup

    if shutil.which("qemu-aarch64-static") is None:
        pytest.skip("qemu-aarch64-static is not installed (Debian: apt-get install qemu-user-static; .ci/run does)")

    given = os.environ.get("EDGEKIT_EMULATOR_DIR")
    root = Path(given) if given else tmp_path_factory.mktemp("emulator")
    started = time.perf_counter()
    _, built = setup("aarch64", root=root)
    if built:
        print(f"\nemulator setup: {time.perf_counter() - started:.1f} s into {root}")
    return root


@pytest.fixture
def emulated(emulator_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEKIT_EMULATOR_DIR", str(emulator_dir))
    return emulator_dir


@pytest.mark.slow
def test_setup_builds_a_working_sysroot_that_matches_its_lock(emulated):
    emulator = find_emulator("aarch64")
    lock, manifest = SPECS["aarch64"].lock(), emulator.manifest
    assert [(p["name"], p["version"], p["sha256"]) for p in manifest["debian"]["packages"]] == \
        [(p["name"], p["version"], p["sha256"]) for p in lock["debian"]["packages"]]
    assert sorted(w["sha256"] for w in manifest["wheels"]) == sorted(w["sha256"] for w in lock["wheels"])
    assert manifest["runtimes"] == {"ai_edge_litert": "2.1.0", "ncnn": "1.0.20261020"} and manifest["numpy"] == "1.26.4"
    assert not list(emulated.glob(".aarch64.*.partial")), "no half-built folder may be left"

    code = "import platform, numpy, ncnn; from ai_edge_litert.interpreter import Interpreter; print(platform.machine(), ncnn.cpu_support_arm_asimdhp())"
    for cpu, fp16 in (("cortex-a76", True), ("cortex-a53", False)):
        ran = subprocess.run([*emulator.command(cpu), "-c", code], capture_output=True, text=True, timeout=300, env=emulator.environment())
        assert ran.returncode == 0, ran.stderr
        machine, asimdhp = ran.stdout.split()
        assert machine == "aarch64" and (int(asimdhp) != 0) == fp16, f"{cpu}: {ran.stdout}"

    again = cli("emulator", "setup", "aarch64")
    assert again.returncode == 0 and "already set up (reused" in again.stdout, again.stderr
    info = json.loads(cli("emulator", "info", "--json").stdout)["emulators"]["aarch64"]
    assert info["ready"] and info["python"].startswith("3.11") and "cortex-a76" in info["cpu_models"]
    doctor = cli("doctor")
    assert "emulator aarch64  ready" in doctor.stdout


def test_setup_without_qemu_names_the_package(tmp_path, monkeypatch):
    from edgekit.emulator.sysroot import setup

    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no qemu on it
    with pytest.raises(MissingDependency) as caught:
        setup("aarch64", root=tmp_path / "emu")
    assert "qemu-aarch64-static is not installed" in caught.value.message and "apt-get install qemu-user-static" in caught.value.hint
    assert not (tmp_path / "emu").exists(), "nothing is downloaded or created before the host tools are checked"


def test_not_set_up_is_a_clear_error(tmp_path, monkeypatch, cnn):
    monkeypatch.setenv("EDGEKIT_EMULATOR_DIR", str(tmp_path / "none"))
    with pytest.raises(DeviceError, match="the aarch64 emulator is not set up"):
        find_emulator("aarch64")
    result = cli("build", str(cnn), "--target", "arm-ncnn", "--device", "emu:aarch64", "-o", str(tmp_path / "out"))
    assert result.returncode == 6 and "edgekit emulator setup aarch64" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@needs_qemu
def test_killed_setup_is_never_used_and_is_swept(tmp_path):
    root = tmp_path / "emu"
    env = {**os.environ, "EDGEKIT_EMULATOR_DIR": str(root)}
    process = subprocess.Popen([*EDGEKIT, "emulator", "setup", "aarch64"], stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert process.stderr is not None
    for line in process.stderr:  # kill it while it downloads
        if "[3/" in line:
            break
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert list(root.glob(".aarch64.*.partial")) and not (root / "aarch64").exists()
    with pytest.raises(DeviceError, match="not set up"):
        find_emulator("aarch64", root)
    finished = subprocess.run([*EDGEKIT, "emulator", "setup", "aarch64", "-q"], capture_output=True, text=True, env=env, timeout=900)
    assert finished.returncode == 0, finished.stderr
    assert (root / "aarch64" / MANIFEST).is_file() and not list(root.glob(".aarch64.*.partial"))


@pytest.mark.slow
def test_unknown_cpu_model_lists_the_known_ones(emulated, cnn, tmp_path):
    result = cli("build", str(cnn), "--target", "arm-ncnn", "--device", "emu:aarch64:cortex-a55", "-o", str(tmp_path / "out"))
    assert result.returncode == 3 and "no CPU model 'cortex-a55'" in result.stderr and "cortex-a76" in result.stderr


@pytest.mark.slow
def test_tflite_int8_build_verifies_on_emulated_aarch64(emulated, cnn, tmp_path):
    calib = calibration_for(cnn, tmp_path, count=24)
    out = tmp_path / "out"
    result = cli("build", str(cnn), "--target", "arm", "--precision", "int8", "--calib", str(calib), "--device", "emu:aarch64", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    verification = json.loads(result.stdout)["verification"]
    assert verification["status"] == "passed" and verification["where"] == "emulated" and verification["device"] == "emu:aarch64"
    assert verification["cpu"] == "cortex-a76" and verification["emulator"]["arch"] == "aarch64"
    assert verification["environment"]["machine"] == "aarch64" and verification["runtime"] == "ai_edge_litert 2.1.0"
    latency = verification["latency_ms"]
    assert latency["emulated"] is True and latency["runs"] == 5 and latency["warmup"] == 1  # few runs: emulated timings
    assert "emulated, not device speed" in (out / "report.html").read_text()


@pytest.mark.slow
def test_ncnn_fp16_arithmetic_really_runs_on_emulated_armv82(emulated, superres, tmp_path, monkeypatch):
    """ncnn uses fp16 arithmetic only on ARMv8.2+: on the emulated Cortex-A76 the same fp16 artifact loses
    ~36 dB of SQNR against the host (x86 has no fp16 arithmetic path), and on an emulated Cortex-A72
    (ARMv8.0) it matches the host again, so the difference is the ARM fp16 kernels, not emulation."""
    out = tmp_path / "out"
    result = cli("build", str(superres), "--target", "arm-ncnn", "--precision", "fp16", "--device", "host", "--device", "emu:aarch64", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "worst SQNR dB per output, side by side" in result.stdout and "Δ emu:aarch64 − host" in result.stdout
    assert "(emulated, not device speed)" in result.stdout
    host, armv82 = json.loads((out / "edgekit-report.json").read_text())["verifications"]
    assert (host["where"], armv82["where"], armv82["cpu"]) == ("host", "emulated", "cortex-a76")
    assert host["status"] == armv82["status"] == "passed"
    assert armv82["environment"]["machine"] == "aarch64" and armv82["environment"]["ncnn_options"]["use_fp16_arithmetic"] is True
    assert armv82["environment"]["cpu_fp16_arithmetic"] is True and host["environment"]["cpu_fp16_arithmetic"] is False
    host_sqnr, armv82_sqnr = host["outputs"][0]["sqnr_db"], armv82["outputs"][0]["sqnr_db"]
    assert host_sqnr - armv82_sqnr > 20, (host_sqnr, armv82_sqnr)  # measured here: 70.8 vs 35.0 dB
    assert armv82["outputs"][0]["max_abs_error"] > 20 * host["outputs"][0]["max_abs_error"]

    book = tmp_path / "devices.toml"
    book.write_text('[devices.pi4-emulated]\nemulator = "aarch64"\ncpu = "cortex-a72"\ntarget = "arm-ncnn"\n')
    monkeypatch.setenv("EDGEKIT_DEVICES", str(book))
    control = cli("verify", str(out), "--device", "pi4-emulated", "--json")
    assert control.returncode == 0, control.stderr
    armv80 = json.loads(control.stdout)["verification"]
    assert armv80["cpu"] == "cortex-a72" and armv80["environment"]["cpu_fp16_arithmetic"] is False
    assert abs(armv80["outputs"][0]["sqnr_db"] - host_sqnr) < 1.0, (armv80["outputs"][0]["sqnr_db"], host_sqnr)


@pytest.mark.slow
def test_fp32_ncnn_reverified_on_armv82_keeps_fp32_arithmetic(emulated, superres, tmp_path):
    """`edgekit verify` rebuilds the runner options from the report: an fp32 build must not pick up ncnn's
    default fp16 arithmetic on an ARMv8.2 CPU (it did: 35 dB instead of 113 dB)."""
    out = tmp_path / "out"
    assert cli("build", str(superres), "--target", "arm-ncnn", "--precision", "fp32", "-o", str(out), "-q").returncode == 0
    result = cli("verify", str(out), "--device", "emu:aarch64", "--json")
    assert result.returncode == 0, result.stderr
    verification = json.loads(result.stdout)["verification"]
    assert verification["environment"]["machine"] == "aarch64" and verification["environment"]["cpu_fp16_arithmetic"] is True
    assert verification["environment"]["ncnn_options"]["use_fp16_arithmetic"] is False
    assert verification["outputs"][0]["sqnr_db"] > 90


@pytest.mark.slow
def test_hung_run_is_killed_with_its_qemu_process(emulated, tmp_path):
    from edgekit.transport.emulated import EmulatedTransport

    script = tmp_path / "hang.py"
    script.write_text("import platform, time\nopen('started', 'w').write(platform.machine())\ntime.sleep(600)\n")
    transport = EmulatedTransport("aarch64")
    with transport:
        transport.upload(script, "hang.py")
        started = time.perf_counter()
        result = transport.run_python("hang.py", [], timeout=5)
        work_dir = str(transport.work_dir)
        started_on = (transport.work_dir / "started").read_text()
    assert started_on == "aarch64", "the script must have run under qemu before it was killed"
    assert result.signal == "ALRM" and time.perf_counter() - started < 60
    survivors = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "hang.py" in command and "qemu" in command:
            survivors.append(command)
    assert not survivors, f"qemu outlived the timeout: {survivors} (work dir {work_dir})"


def test_devices_toml_emulator_entries_are_checked(tmp_path):
    from edgekit.devices import load_book, resolve_devices
    from edgekit.errors import InputError

    good = tmp_path / "good.toml"
    good.write_text('[devices.phone-little]\nemulator = "aarch64"\ncpu = "cortex-a53"\ntarget = "android"\nrun_timeout = 900\n')
    (device,) = resolve_devices(["phone-little"], load_book(good))
    assert (device.emulator, device.cpu, device.target, device.run_timeout) == ("aarch64", "cortex-a53", "android", 900.0)
    (spec,) = resolve_devices(["emu:aarch64:cortex-a72"], load_book(good))
    assert (spec.emulator, spec.cpu) == ("aarch64", "cortex-a72")
    for body, problem in (('emulator = "aarch64"\nhost = "pi"\n', "takes only"), ('emulator = "riscv64"\n', "unknown architecture"),
                          ('host = "pi"\ncpu = "cortex-a76"\n', "only emulated devices take a cpu")):
        bad = tmp_path / "bad.toml"
        bad.write_text("[devices.x]\n" + body)
        with pytest.raises(InputError, match=problem):
            load_book(bad)
    with pytest.raises(DeviceError, match="no emulator for 'armv9'"):
        resolve_devices(["emu:armv9"], load_book(good))
