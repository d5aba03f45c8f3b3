"""JUnit XML for CI: device smoke tests shown like unit tests in GitLab, Jenkins and GitHub test reports.

One ``<testsuite>`` per build (``edgekit.<target>.<artifact>``), one ``<testcase>`` per device x output
(classname ``edgekit.<target>.<device>``, name = the ONNX output), so CI test views group results by target
and device. A device where the artifact could not run gets one testcase named ``run``: ``<error>`` for a
device fault, ``<skipped>`` when the runtime is missing there or verification was disabled, ``<failure>``
when the runtime failed on the artifact. Times have at most 3 decimals (the Jenkins/Surefire schema's
``SUREFIRE_TIME``). Written with the standard library, atomically.
"""

from __future__ import annotations

import datetime as _dt
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.fsutil import atomic_write_bytes
from edgekit.verify import COULD_NOT_RUN


@dataclass
class Case:
    classname: str
    name: str
    seconds: float = 0.0
    failure: str | None = None  # message: which metric failed, by how much
    error: str | None = None
    skipped: str | None = None
    output: str | None = None  # system-out: the metrics, for people reading the CI log


@dataclass
class Suite:
    name: str
    cases: list[Case] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)


def _seconds(verification: dict[str, Any]) -> float:
    """The device run's wall time (the runner records epoch seconds at start and end)."""
    env = verification.get("environment") or {}
    started, finished = env.get("started_at"), env.get("finished_at")
    if isinstance(started, (int, float)) and isinstance(finished, (int, float)):
        return max(float(finished) - float(started), 0.0)
    return 0.0


def verification_cases(report: dict[str, Any]) -> list[Case]:
    """Testcases for every verification in a report (one per device, or the host's)."""
    cases = []
    for verification in report.get("verifications") or [report["verification"]]:
        place = verification.get("device") or verification.get("where") or "host"
        classname = f"edgekit.{report['target']}.{place}"
        outputs = verification.get("outputs") or []
        status, reason = verification["status"], verification.get("reason") or ""
        if not outputs:
            case = Case(classname, "run", _seconds(verification))
            if status == "skipped" and reason.startswith(COULD_NOT_RUN):  # a device fault, not a verdict on the artifact
                case.error = reason
            elif status == "skipped":
                case.skipped = reason or "skipped"
            elif status == "failed":
                case.failure = reason or "failed"
            cases.append(case)
            continue
        share = _seconds(verification) / len(outputs)
        latency = verification.get("latency_ms") or {}
        for output in outputs:
            metrics = (f"max_abs_error={output['max_abs_error']} mean_abs_error={output['mean_abs_error']} cosine={output['cosine']} "
                       f"sqnr_db={output['sqnr_db']} runtime={verification.get('runtime')}"
                       + (f" latency_p50_ms={latency.get('p50')}" if latency else ""))
            case = Case(classname, output["name"], share, output=metrics)
            if not output.get("passed"):
                case.failure = f"{output['name']} on {place}: " + "; ".join(output.get("failures") or ["failed"])
            cases.append(case)
    return cases


def report_suite(report: dict[str, Any]) -> Suite:
    props = {key: str(report.get(key)) for key in ("target", "backend", "precision", "artifact", "artifact_sha256", "source_model",
                                                    "edgekit_version") if report.get(key) is not None}
    return Suite(f"edgekit.{report['target']}.{report['artifact']}", verification_cases(report), props)


def error_suite(target: str, what: str, message: str) -> Suite:
    """A build or verification that stopped with an error before any result: one testcase in error."""
    return Suite(f"edgekit.{target}", [Case(f"edgekit.{target}", what, error=message)])


def build_suites(out_dir: Path, target: str, error: Exception | None, what: str = "build") -> list[Suite]:
    """Suites for one `edgekit build`/`verify`: from the report it wrote (also after a device fault, which still
    writes one), else one error testcase naming what stopped it."""
    from edgekit.errors import DeviceError
    from edgekit.report import load_report

    report_path = Path(out_dir) / "edgekit-report.json"
    message = getattr(error, "message", None) or (str(error) if error else None)
    # a device fault (exit 6-11) still wrote the report, with each device's outcome in it
    if report_path.is_file() and (error is None or isinstance(error, DeviceError)):
        return [report_suite(load_report(report_path))]
    return [error_suite(target, what, message or "no report was written")]


def to_xml(suites: list[Suite], name: str = "edgekit") -> bytes:
    root = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    stamp = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
    for suite in suites:
        counts = {"tests": len(suite.cases), "failures": sum(c.failure is not None for c in suite.cases),
                  "errors": sum(c.error is not None for c in suite.cases), "skipped": sum(c.skipped is not None for c in suite.cases)}
        seconds = sum(c.seconds for c in suite.cases)
        node = ET.SubElement(root, "testsuite", name=suite.name, **{k: str(v) for k, v in counts.items()},
                             time=f"{seconds:.3f}", timestamp=stamp, hostname=socket.gethostname())
        if suite.properties:
            props = ET.SubElement(node, "properties")
            for key, value in suite.properties.items():
                ET.SubElement(props, "property", name=key, value=value)
        for case in suite.cases:
            _case(node, case)
        for key in totals:
            totals[key] += counts[key]
        total_time += seconds
    root.set("time", f"{total_time:.3f}")
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _case(parent: ET.Element, case: Case) -> None:
    node = ET.SubElement(parent, "testcase", classname=case.classname, name=case.name, time=f"{case.seconds:.3f}")
    for tag, text, kind in (("failure", case.failure, "NumericsMismatch"), ("error", case.error, "DeviceError"),
                            ("skipped", case.skipped, None)):
        if text is not None:
            child = ET.SubElement(node, tag, message=_one_line(text), **({"type": kind} if kind else {}))
            child.text = text
    if case.output:
        ET.SubElement(node, "system-out").text = case.output


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def write(path: Path, suites: list[Suite]) -> Path:
    atomic_write_bytes(Path(path), to_xml(suites))
    return Path(path)
