#!/usr/bin/env python3
"""Run the hostile-input and fault suites and write their outcome table into README.md
(between the security-table markers). The table is generated from the test run, never by hand.

    python tools/security_table.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- security-table:start -->", "<!-- security-table:end -->"


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        cases_file = Path(scratch) / "cases.json"
        env = {**os.environ, "EDGEKIT_CASES_JSON": str(cases_file)}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/hostile", "tests/faults"], cwd=ROOT, env=env, check=False)
        cases = json.loads(cases_file.read_text())
    groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for case in cases:
        module = case["nodeid"].split("::")[0]
        test = case["nodeid"].split("::")[1].split("[")[0]
        groups[f"{module}::{test}"][case["outcome"]] += 1
    lines = ["| suite | test | cases | passed | failed | skipped |", "|---|---|---:|---:|---:|---:|"]
    totals: dict[str, int] = defaultdict(int)
    for key in sorted(groups):
        module, test = key.split("::")
        counts = groups[key]
        total = sum(counts.values())
        for outcome, number in counts.items():
            totals[outcome] += number
        lines.append(f"| `{module.removeprefix('tests/')}` | `{test}` | {total} | {counts['passed']} | {counts['failed']} | {counts['skipped']} |")
    lines.append(f"| **all** | | **{sum(totals.values())}** | **{totals['passed']}** | **{totals['failed']}** | **{totals['skipped']}** |")
    table = "\n".join(lines)
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = f"{START}\n{table}\n{END}"
    if START in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text += f"\n{block}\n"
    readme.write_text(text)
    print(table)
    return 0 if totals["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
