"""Build one model for several targets (in parallel where the machine allows) and compare them."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.types import BuildReport


@dataclass
class MatrixResult:
    target: str
    out_dir: Path
    report: BuildReport | None = None
    error: EdgekitError | None = None

    def row(self) -> dict[str, Any]:
        if self.report is None:
            return {"target": self.target, "error": str(self.error).splitlines()[0] if self.error else "unknown", "exit_code": getattr(self.error, "exit_code", 4)}
        verification = self.report.verification
        outputs = verification.outputs
        return {
            "target": self.target,
            "backend": self.report.backend,
            "precision": self.report.precision,
            "artifact": str(self.out_dir / self.report.artifact),
            "artifact_bytes": self.report.artifact_bytes,
            "status": verification.status,
            "reason": verification.reason,
            "min_sqnr_db": min((o.sqnr_db for o in outputs), default=None),
            "min_cosine": min((o.cosine for o in outputs), default=None),
            "max_abs_error": max((o.max_abs_error for o in outputs), default=None),
            "latency_p50_ms": verification.latency_ms.p50 if verification.latency_ms else None,
            "cache_hit": bool(self.report.cache and self.report.cache.get("hit")),
            # with --device host --device emu:aarch64: each place's worst SQNR, side by side
            "places": [{"place": v.device or v.where, "where": v.where, "status": v.status,
                        "min_sqnr_db": min((o.sqnr_db for o in v.outputs), default=None),
                        "latency_p50_ms": v.latency_ms.p50 if v.latency_ms else None} for v in self.report.verifications],
        }


def default_workers(count: int) -> int:
    """Conversions are CPU-heavy subprocesses: one build per two cores, at least one."""
    return max(1, min(count, (os.cpu_count() or 2) // 2))


def build_matrix(model: str | Path, targets: list[str], out_dir: str | Path, workers: int | None = None,
                 progress_for: Any = None, options_factory: Any = None, transports_factory: Any = None,
                 **build_kwargs: Any) -> list[MatrixResult]:
    """Build ``model`` for each target into ``out_dir/<target>/``; errors are collected, not raised.

    ``transports_factory`` gives each build its own places to verify on (this host, emulators).
    """
    from edgekit.pipeline import build

    out_dir = Path(out_dir)

    def one(target: str) -> MatrixResult:
        target_dir = out_dir / Path(target).stem
        result = MatrixResult(Path(target).stem, target_dir)
        try:
            progress = progress_for(result.target) if progress_for else None
            build_kwargs_here = dict(build_kwargs)
            if options_factory is not None:
                build_kwargs_here["options"] = options_factory()
            if transports_factory is not None:
                build_kwargs_here["transports"] = transports_factory()
            result.report = build(model, target, out_dir=target_dir, progress=progress, **build_kwargs_here)
        except EdgekitError as exc:
            result.error = exc
        return result

    with ThreadPoolExecutor(max_workers=workers or default_workers(len(targets))) as pool:
        return list(pool.map(one, targets))


def exit_code(results: list[MatrixResult]) -> int:
    errors = [r.error for r in results if r.error is not None]
    if errors:
        return errors[0].exit_code
    return 1 if any(r.report and r.report.verification.status == "failed" for r in results) else 0
