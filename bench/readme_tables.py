#!/usr/bin/env python3
"""Write the README's benchmark tables from bench/results/*.json (between the bench markers); never by hand.

A build table is written only from rows that were built for real: each must record ``cache.hit`` false.

    python bench/readme_tables.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "bench"))

from build_bench import markdown  # noqa: E402

BUILD_TABLES = ("android", "arm-ncnn")


def build_table(target: str) -> str:
    data = json.loads((RESULTS / f"{target}.json").read_text())
    cached = [f"{r['model']} {r['precision']}" for r in data["rows"] if (r.get("cache") or {}).get("hit") is not False]
    if cached:
        raise SystemExit(f"bench/results/{target}.json: rows {', '.join(cached)} do not record cache.hit false; "
                         f"re-run python bench/build_bench.py --target {target}")
    return markdown(data["rows"])


def cache_table() -> str:
    data = json.loads((RESULTS / "cache.json").read_text())
    lines = ["| model | target | precision | cold build s (cache miss) | cached rebuild s (median of hits) | speedup |",
             "|---|---|---|---:|---:|---:|"]
    for row in data["rows"]:
        lines.append(f"| {row['model']} | {row['target']} | {row['precision']} | {row['cold_seconds']:.2f} | "
                     f"{row['cached_seconds_median']:.2f} | {row['speedup']:.0f}x |")
    return "\n".join(lines)


def replace_block(text: str, name: str, table: str) -> str:
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    if start not in text:
        raise SystemExit(f"README.md has no {start} marker")
    return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n{table}\n{end}", text, flags=re.S)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for target in BUILD_TABLES:
        text = replace_block(text, target, build_table(target))
    text = replace_block(text, "cache", cache_table())
    readme.write_text(text)
    print(f"wrote the {', '.join(BUILD_TABLES)} and cache tables into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
