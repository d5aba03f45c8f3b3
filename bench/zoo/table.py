"""The zoo's Markdown table: a row per model, a column per target x precision."""

from __future__ import annotations

from bench.zoo.cells import CRASH, FAILED, PASS, REFUSED, SKIPPED, TIMEOUT, TOOL, UNVERIFIED, Cell, sqnr_value

MAX_REASON = 70


def _short(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def cell_text(row: dict) -> str:
    status = row["status"]
    sqnr = sqnr_value(row["worst_sqnr_db"]) if row.get("worst_sqnr_db") is not None else None
    if status == PASS:
        return f"pass {sqnr:.1f} dB"
    if status == FAILED:
        where = f"{row['worst_output']}: SQNR {sqnr:.1f} dB" if sqnr is not None else _short(row["detail"])
        return f"**failed** {_short(where)}"
    if status in (REFUSED, TOOL, SKIPPED, UNVERIFIED, TIMEOUT):
        return f"{status}: {_short(row['detail'])}"
    if status == CRASH:
        return f"**crash**: {_short(row['detail'])}"
    return f"{status}: {_short(row.get('detail', ''))}"


def markdown(rows: list[dict], cells: list[Cell], models: list[str]) -> str:
    by_key = {(r["model"], r["target"], r["precision"]): r for r in rows}
    lines = ["| model | " + " | ".join(c.label for c in cells) + " |", "|---|" + "---|" * len(cells)]
    for model in models:
        texts = [cell_text(by_key[(model, c.target, c.precision)]) if (model, c.target, c.precision) in by_key else "" for c in cells]
        lines.append(f"| {model} | " + " | ".join(texts) + " |")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines.append("")
    lines.append("Cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1])) + f" (of {len(rows)}).")
    return "\n".join(lines)
