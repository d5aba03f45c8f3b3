#!/usr/bin/env python3
"""What the real-model zoo measures, per precision: the data behind edgekit's default tolerances.

    python bench/tolerances.py                       # reads bench/results/zoo.json, writes bench/results/tolerances.json
    python bench/tolerances.py --docs                # also puts the table into docs/verification.md
    python bench/tolerances.py --results other.json

Reads the per-output metrics of every verified zoo cell (``python bench/zoo.py`` writes them) and, per precision,
the spread of SQNR, cosine and |gain - 1| over the outputs that pass and over those that fail, next to the defaults
in ``edgekit.profiles.DEFAULT_TOLERANCES``. Light models with constant weights (``light_*``) give bit-identical
outputs on both sides and say nothing about numerics: they are counted but left out of the spread.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekit.profiles import DEFAULT_TOLERANCES  # noqa: E402
from edgekit.report import _finite_or_text  # noqa: E402  (JSON has no NaN/inf: written as strings, as in reports)

MARKERS = ("<!-- tolerances-table:start -->", "<!-- tolerances-table:end -->")


def _number(value) -> float:
    if value is None:
        return math.nan
    return float(value)  # the report writes "inf"/"-inf"/"nan" as strings


def outputs(result: dict) -> list[dict]:
    """One row per verified output: model, cell, metrics, whether the output passed."""
    rows = []
    for cell in result["rows"]:
        for output in cell.get("outputs") or []:
            rows.append({"model": cell["model"], "target": cell["target"], "precision": cell["precision"], "output": output["name"],
                         "sqnr_db": _number(output.get("sqnr_db")), "cosine": _number(output.get("cosine")),
                         "gain_error": abs(_number(output.get("gain")) - 1.0), "top1": output.get("top1_agreement"),
                         "passed": bool(output.get("passed")), "constant_weights": cell["model"].startswith("light_")})
    return rows


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def summarize(rows: list[dict]) -> dict:
    """Per precision: counts, and the extremes of the informative (non-constant-weight) outputs, passing and failing."""
    summary = {}
    for precision in sorted({r["precision"] for r in rows}):
        mine = [r for r in rows if r["precision"] == precision]
        real = [r for r in mine if not r["constant_weights"]]
        good, bad = [r for r in real if r["passed"]], [r for r in real if not r["passed"]]
        tolerance = DEFAULT_TOLERANCES[precision]
        summary[precision] = {
            "outputs": len(mine), "real_outputs": len(real), "passed": len(good), "failed": len(bad),
            "passing_min_sqnr_db": min(_finite([r["sqnr_db"] for r in good]), default=None),
            "passing_min_cosine": min(_finite([r["cosine"] for r in good]), default=None),
            "passing_max_gain_error": max(_finite([r["gain_error"] for r in good]), default=None),
            "all_max_gain_error": max(_finite([r["gain_error"] for r in real]), default=None),
            "failing": [{k: r[k] for k in ("model", "target", "output", "sqnr_db", "cosine", "gain_error")} for r in bad],
            "defaults": tolerance.to_dict(),
            # the scale error a pure gain mistake may have and still clear the SQNR floor: SQNR = -20 log10 |g - 1|
            "gain_error_sqnr_floor_allows": round(10 ** (-tolerance.min_sqnr_db / 20), 4),
        }
    return summary


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(summary: dict, source: str) -> str:
    lines = [f"Measured on the real-model zoo (`{source}`; light_* models with constant weights left out of the spread):", "",
             "| precision | min cosine | min SQNR dB | max \\|gain−1\\| | (SQNR floor lets through) | real outputs passed / failed | "
             "passing: min SQNR dB | min cosine | max \\|gain−1\\| | any verified output: max \\|gain−1\\| |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for precision, s in summary.items():
        d = s["defaults"]
        lines.append(f"| {precision} | {d['min_cosine']} | {d['min_sqnr_db']} | {d.get('max_gain_error', '–')} | {s['gain_error_sqnr_floor_allows']} | "
                     f"{s['passed']} / {s['failed']} | {_fmt(s['passing_min_sqnr_db'], '.1f')} | {_fmt(s['passing_min_cosine'], '.5f')} | "
                     f"{_fmt(s['passing_max_gain_error'], '.4f')} | {_fmt(s['all_max_gain_error'], '.4f')} |")
    failing = [f"{f['model']} {f['target']} {p} `{f['output']}` ({f['sqnr_db']:.1f} dB, cosine {f['cosine']:.4f}, |gain−1| {f['gain_error']:.3f})"
               for p, s in summary.items() for f in s["failing"] if math.isfinite(f["sqnr_db"])]
    if failing:
        lines += ["", "Real outputs that fail (they stay failures; the next issue locates their cause):", ""] + [f"- {line}" for line in failing]
    return "\n".join(lines)


def update_docs(path: Path, table: str) -> None:
    text = path.read_text()
    start, end = (text.index(m) for m in MARKERS)
    path.write_text(text[: start + len(MARKERS[0])] + "\n" + table + "\n" + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "zoo.json")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tolerances.json")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/verification.md")
    args = parser.parse_args()
    result = json.loads(args.results.read_text())
    rows = outputs(result)
    summary = summarize(rows)
    source = args.results.resolve().relative_to(ROOT).as_posix() if args.results.resolve().is_relative_to(ROOT) else args.results.name
    data = {"source": source, "edgekit_version": result.get("edgekit_version"), "created_at": result.get("created_at"),
            "summary": summary, "outputs": rows}
    args.out.write_text(json.dumps(_finite_or_text(data), indent=2, allow_nan=False) + "\n")
    table = markdown(summary, source)
    print(table)
    if args.docs:
        update_docs(ROOT / "docs" / "verification.md", re.sub(r"\n{3,}", "\n\n", table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
