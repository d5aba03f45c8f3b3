"""Verify: run an artifact through the device runner (on this host or a device) and judge its
outputs against the onnxruntime reference on the same inputs."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.calibration import SampleSet
from edgekit.errors import DeviceError, DeviceStalled, script_error
from edgekit.metrics import apply_checks, compare, merge
from edgekit.profiles import Tolerance
from edgekit.remote.bundle import BUNDLE_NAME, write_bundle
from edgekit.remote.protocol import EXIT_MISSING
from edgekit.transport.base import Transport
from edgekit.types import Artifact, IOBinding, LatencyStats, VerificationResult

# how a device fault reads in a result's reason (JUnit output turns it into an <error>, not a failure)
COULD_NOT_RUN = "verification could not run"


def to_artifact_layout(array: np.ndarray, binding: IOBinding) -> np.ndarray:
    if binding.perm is not None:
        array = array.transpose(binding.perm)
    if binding.squeeze_batch:
        array = array[0]
    if binding.artifact_shape is not None and array.shape != binding.artifact_shape:
        array = array.reshape(binding.artifact_shape)  # sizes agree: only size-1 dims differ
    return np.ascontiguousarray(array)


def from_artifact_layout(array: np.ndarray, binding: IOBinding, reference_shape: tuple[int, ...]) -> np.ndarray:
    if binding.squeeze_batch:
        array = array[None]
    if binding.perm is not None and array.ndim == len(binding.perm):
        array = array.transpose(np.argsort(binding.perm))
    if array.shape != reference_shape and array.size == int(np.prod(reference_shape)):
        # Runtimes may drop or add size-1 dims (ncnn Mats); that never reorders data.
        if tuple(d for d in array.shape if d != 1) == tuple(d for d in reference_shape if d != 1):
            array = array.reshape(reference_shape)
    return array


def output_mismatch(model_outputs: list[str], bindings: list[IOBinding]) -> str | None:
    """Why the artifact's outputs do not match the model's one to one (a model output left unchecked, an output the
    model does not have, one output bound twice), or None."""
    bound = [b.onnx_name for b in bindings]
    missing = [name for name in model_outputs if name not in bound]
    extra = [name for name in bound if name not in model_outputs]
    twice = sorted({name for name in bound if bound.count(name) > 1})
    problems = []
    if missing:
        problems.append(f"the model's output(s) {', '.join(map(repr, missing))} have no counterpart in the artifact")
    if extra:
        problems.append(f"the artifact has output(s) {', '.join(map(repr, extra))} that the model does not have")
    if twice:
        problems.append(f"output(s) {', '.join(map(repr, twice))} are bound more than once")
    return "; ".join(problems) or None


@dataclass
class RunnerResult:
    """What the device runner returned: the artifact's raw outputs (``s{sample}_o{k}``) and its timings,
    or why it did not run (``exit_code`` non-zero, with the runner's error kind and message)."""

    produced: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    exit_code: int = 0
    error_kind: str = ""
    error: str = ""


def run_artifact(artifact: Artifact, samples: SampleSet, transport: Transport, *, warmup: int, runs: int,
                 options: dict | None = None) -> RunnerResult:
    """Upload artifact, inputs and runner; run every sample; bring the outputs (``artifact.outputs``, in the
    artifact's layout) back. A timeout or unreadable results raise DeviceError."""
    with tempfile.TemporaryDirectory(prefix="edgekit-verify-") as scratch_text:
        scratch = Path(scratch_text)
        io = {
            "runtime": artifact.runtime,
            "inputs": [b.artifact_name for b in artifact.inputs],
            "outputs": [b.artifact_name for b in artifact.outputs],
            "options": options or {},
            "samples": samples.count,
            "warmup": warmup,
            "runs": runs,
        }
        (scratch / "io.json").write_text(json.dumps(io))
        feed = {}
        for s in range(samples.count):
            sample = samples.sample(s)
            for k, binding in enumerate(artifact.inputs):
                feed[f"s{s}_i{k}"] = to_artifact_layout(sample[binding.onnx_name], binding)
        np.savez(scratch / "inputs.npz", **feed)

        with transport:
            transport.upload(write_bundle(scratch), BUNDLE_NAME)
            transport.upload(artifact.path, artifact.path.name)
            for extra in artifact.extra_files:
                transport.upload(extra, extra.name)
            transport.upload(scratch / "io.json", "io.json")
            transport.upload(scratch / "inputs.npz", "inputs.npz")
            result = transport.run_python(
                BUNDLE_NAME,
                ["run", "--artifact", artifact.path.name, "--io", "io.json", "--inputs", "inputs.npz",
                 "--outputs", "outputs.npz", "--timings", "timings.json"],
                timeout=transport.run_timeout,
            )
            if result.signal == "ALRM":
                raise DeviceError(f"the run did not finish within {transport.run_timeout:.0f} s and was killed {transport.place}",
                                  hint="raise run_timeout (devices.toml), or check the model for a hang")
            if result.exit_code != 0:
                kind, message = script_error(result.stderr)
                return RunnerResult(exit_code=result.exit_code, error_kind=kind, error=message)
            transport.download("outputs.npz", scratch / "outputs.npz")
            transport.download("timings.json", scratch / "timings.json")
        try:
            timings = json.loads((scratch / "timings.json").read_text())
            with np.load(scratch / "outputs.npz", allow_pickle=False) as archive:
                produced = {key: archive[key] for key in archive.files}
        except (ValueError, OSError) as exc:
            raise DeviceError(f"the runner's results could not be read back: {exc}") from None
    return RunnerResult(produced, timings)


def verify_artifact(
    artifact: Artifact,
    samples: SampleSet,
    references: list[dict[str, np.ndarray]],
    tolerance: Tolerance,
    transport: Transport,
    *,
    warmup: int,
    runs: int,
    options: dict | None = None,
    checks: dict[str, dict[str, float]] | None = None,
) -> VerificationResult:
    """Upload artifact, inputs and runner; run; compare. Runtime-missing becomes ``skipped``.
    ``checks``: declared top-k minima per output name ({"logits": {"top1": 0.99}})."""
    where = transport.where
    base = {"where": where, "device": transport.device_name, "samples": samples.count,
            "input_source": samples.source, "tolerances": tolerance.to_dict(), **transport.report_fields()}
    mismatch = output_mismatch(list(references[0]) if references else [], artifact.outputs)
    if mismatch:
        return VerificationResult(status="failed", reason=f"the artifact's outputs do not match the model's: {mismatch}",
                                  runtime=artifact.runtime, **base)
    warmup, runs = transport.latency_plan(warmup, runs)
    ran_artifact = run_artifact(artifact, samples, transport, warmup=warmup, runs=runs, options=options)
    if ran_artifact.exit_code == EXIT_MISSING:
        return VerificationResult.skipped(f"runtime '{artifact.runtime}' is not available {transport.place}: {ran_artifact.error}", **base)
    if ran_artifact.exit_code != 0:
        # The artifact would not load or run: a verdict on the artifact, not a transport fault.
        return VerificationResult(status="failed", runtime=artifact.runtime, **base,
                                  reason=f"the runtime failed {transport.place} ({ran_artifact.error_kind}, exit {ran_artifact.exit_code}): {ran_artifact.error}")
    produced, timings = ran_artifact.produced, ran_artifact.timings

    outputs, ran = [], []
    checks = checks or {}
    for k, binding in enumerate(artifact.outputs):
        per_sample = []
        declared = checks.get(binding.onnx_name)
        for s, reference in enumerate(references):
            expected = reference[binding.onnx_name]
            key = f"s{s}_o{k}"
            if key not in produced:
                raise DeviceError(f"the runner returned no value for output '{binding.onnx_name}' (sample {s})")
            got = from_artifact_layout(produced[key], binding, expected.shape)
            per_sample.append(compare(binding.onnx_name, expected, got, tolerance, class_scores=True if declared else None))
        outputs.append(merge(per_sample, tolerance))
        if declared:
            ran += apply_checks(outputs[-1], declared)
    status = "passed" if outputs and all(o.passed for o in outputs) else "failed"  # nothing compared is never a pass
    reason = None if status == "passed" else ("; ".join(f"{o.name}: {', '.join(o.failures)}" for o in outputs if not o.passed)
                                              or "no outputs were compared")
    latency = LatencyStats(p50=timings["p50"], p90=timings["p90"], p99=timings["p99"], mean=timings["mean"],
                           runs=timings["runs"], warmup=timings["warmup"],
                           times_ms=[round(t, 4) for t in timings.get("times_ms", [])], emulated=where == "emulated") if timings.get("runs") else None
    runtime_label = timings.get("runtime") or artifact.runtime
    if timings.get("runtime_version"):
        runtime_label = f"{runtime_label} {timings['runtime_version']}"
    environment = {k: timings.get(k) for k in ("python", "machine", "system", "numpy", "peak_rss_kb", "runner_version",
                                                "started_at", "finished_at")}
    environment.update(timings.get("environment_extra") or {})  # e.g. TensorRT: GPU, memory, timer used
    environment.update(transport.facts)  # e.g. a device's boot id, whether it rebooted, how files travelled
    return VerificationResult(status=status, runtime=runtime_label, reason=reason, outputs=outputs,
                              latency_ms=latency, environment=environment, checks=ran, **base)


def verify_everywhere(
    artifact: Artifact,
    samples: SampleSet,
    references: list[dict[str, np.ndarray]],
    tolerance: Tolerance,
    transports: list[Transport],
    *,
    warmup: int,
    runs: int,
    options: dict | None = None,
    checks: dict[str, dict[str, float]] | None = None,
) -> tuple[list[VerificationResult], DeviceError | None]:
    """Verify on each transport, devices concurrently; one result per transport, in order.

    A transport fault becomes a ``skipped`` result carrying the reason and the fault; one error for all
    faults (edgekit.fleet.fleet_error) is returned so the caller can exit non-zero after writing the report.
    """
    from concurrent.futures import ThreadPoolExecutor

    from edgekit.fleet import fault_of, fleet_error

    def one(transport: Transport) -> tuple[VerificationResult, DeviceError | None]:
        try:
            return verify_artifact(artifact, samples, references, tolerance, transport, warmup=warmup, runs=runs, options=options,
                                   checks=checks), None
        except DeviceError as exc:
            skipped = VerificationResult.skipped(f"{COULD_NOT_RUN}: {exc.message}", where=transport.where,
                                                 device=transport.device_name, samples=samples.count, input_source=samples.source,
                                                 environment=dict(transport.facts), fault=fault_of(exc), **transport.report_fields())
            return skipped, exc

    if len(transports) == 1:
        outcomes = [one(transports[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(transports)) as pool:
            outcomes = list(pool.map(one, transports))
    failures = [(str(result.device or result.where), error) for result, error in outcomes if error is not None]
    return [result for result, _ in outcomes], fleet_error(failures, len(transports))


def probe(transport: Transport, path: str = ".", timeout: float = 300.0) -> dict:
    """What the machine behind ``transport`` has (OS, arch, python, runtimes, free disk), from the remote probe,
    and what the transport learnt on the way (``connection``: boot id, file transfer used)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-probe-") as scratch, transport:
        transport.upload(write_bundle(Path(scratch)), BUNDLE_NAME)
        result = transport.run_python(BUNDLE_NAME, ["probe", "--path", path], timeout=timeout)
    place = "this host" if transport.where == "host" else f"device '{transport.device_name}'"
    if result.signal == "ALRM":
        raise DeviceStalled(f"{place}: the probe did not finish within {timeout:g} s and was killed {transport.place}",
                            hint="an import of a runtime may hang there; raise run_timeout in devices.toml if the device is just slow")
    if result.exit_code != 0:
        raise DeviceError(f"{place}: the probe failed: {result.stderr.strip()[-800:]}")
    try:
        return {**json.loads(result.stdout.strip().splitlines()[-1]), "connection": dict(transport.facts)}
    except (ValueError, IndexError):
        raise DeviceError(f"{place}: the probe printed no JSON: {result.stdout.strip()[-300:]!r}") from None
