"""Everything the CLI prints for people (rich tables, progress, errors). Commands decide what to show; this
module decides how it looks. Machine-readable output (--json) bypasses it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATUS_COLOURS = {"passed": "green", "failed": "red", "skipped": "yellow"}
EMULATED_SPEED = " (emulated, not device speed)"


def console(stderr: bool = True) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def print_error(exc: Any) -> None:
    from rich.markup import escape

    err = console()
    err.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
    if exc.hint:
        err.print(f"[yellow]hint:[/] {escape(exc.hint)}", soft_wrap=True)


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _table(*columns: str, title: str, right: tuple[str, ...] = ()) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left")
    return table


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then deliver it. rich's live display is not safe to interrupt
    half-way: a Ctrl-C inside its start leaves it half set up, and stopping it then fails with an IndexError
    that hides the clean "interrupted" exit. (Masking the signal would not do: another thread, rich's own
    refresh thread among them, would take it and Python would still raise in the main thread.)"""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets Python's signals
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


class RichProgress:
    """Stage-by-stage progress on stderr: a spinner while a stage runs, a line when it ends."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.console = console()
        self.status = None

    def stage_started(self, name: str, description: str) -> None:
        if self.quiet:
            return
        self._stop()
        with ctrl_c_held():
            self.status = self.console.status(f"[bold]{name}[/]: {description}...")
            self.status.start()

    def stage_finished(self, record: Any) -> None:
        if self.quiet:
            return
        self._stop()
        tool = f" [dim]({record.tool}{' ' + record.tool_version if record.tool_version else ''})[/]" if record.tool else ""
        status = record.detail.get("status")
        mark = {"failed": "[red]✗[/]", "skipped": "[yellow]-[/]"}.get(status, "[green]✓[/]")
        self.console.print(f"{mark} {record.name:<9} {record.seconds:7.2f} s{tool}")

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"  [dim]{text}[/]")

    def _stop(self) -> None:
        if self.status is not None:
            with ctrl_c_held():
                self.status.stop()
                self.status = None

    def close(self) -> None:
        self._stop()


class PrefixedProgress:
    """One line per finished stage, prefixed with the target; safe with builds in parallel."""

    def __init__(self, target: str, quiet: bool) -> None:
        self.target, self.quiet, self.console = target, quiet, console()

    def stage_started(self, name: str, description: str) -> None:
        pass

    def stage_finished(self, record: Any) -> None:
        if not self.quiet:
            self.console.print(f"[cyan]{self.target:<14}[/] {record.name:<9} {record.seconds:7.2f} s")

    def message(self, text: str) -> None:
        pass


def print_summary(report: dict[str, Any], report_path: Path | None) -> None:
    from rich.markup import escape

    out = console(stderr=False)
    verification = report["verification"]
    table = _table("output", "max abs err", "mean abs err", "cosine", "SQNR dB", "gain", "result",
                   title=f"{Path(report['source_model']).name} → {report['target']} ({report['backend']}, {report['precision']})",
                   right=("max abs err", "mean abs err", "cosine", "SQNR dB", "gain"))
    for output in verification["outputs"]:
        result = "[green]pass[/]" if output["passed"] else "[red]FAIL[/]"
        gain = fmt(output["gain"], 4) if output.get("gain") is not None else "-"
        table.add_row(output["name"], fmt(output["max_abs_error"]), fmt(output["mean_abs_error"]), fmt(output["cosine"], 6), fmt(output["sqnr_db"]), gain, result)
    if verification["outputs"]:
        out.print(table)
    if verification.get("samples"):
        calibrated = verification.get("calibration_samples") or 0
        out.print(f"samples      {verification['samples']} from {escape(str(verification.get('input_source')))}"
                  + (f" (calibrated on {calibrated} others)" if calibrated else ""), soft_wrap=True)
    for check in verification.get("checks") or []:
        value = "n/a" if check["value"] is None else f"{check['value']:.4f}"
        out.print(f"check        {escape(check['output'])} {check['metric']} agreement {value} (min {check['min']}): "
                  + ("[green]pass[/]" if check["passed"] else "[red]FAIL[/]"))
    status = verification["status"]
    out.print(f"artifact     {report['artifact']}  ({report['artifact_bytes'] / 1024:.1f} KiB)")
    out.print(f"verification [{STATUS_COLOURS[status]}]{status}[/] on {place_label(verification)}"
              + (f" with {verification['runtime']}" if verification.get("runtime") else ""))
    places = report.get("verifications") or []
    if places:
        out.print(places_table(places))
    if any(p["where"] == "emulated" and (p.get("latency_ms") or {}).get("p50") for p in places):
        out.print("* p50 on an emulated CPU" + EMULATED_SPEED)
    if len([p for p in places if p["outputs"]]) > 1:
        out.print(sqnr_comparison(places))
    if verification.get("reason") and not places:  # with places, the reasons are in their table
        out.print(f"             {escape(verification['reason'])}", soft_wrap=True)
    for line in debug_lines(report):
        out.print(line, soft_wrap=True)
    latency = verification.get("latency_ms")
    if latency:
        out.print(f"latency      p50 {latency['p50']:.3f} ms  p90 {latency['p90']:.3f} ms  p99 {latency['p99']:.3f} ms  ({latency['runs']} runs)"
                  + (EMULATED_SPEED if latency.get("emulated") else ""))
    cached = report.get("cache") or {}
    if cached.get("hit"):
        out.print(f"cache        hit ({cached['key'][:12]}): restored, nothing rebuilt; --no-cache forces a rebuild")
    if cached.get("dropped"):
        out.print(f"cache        {escape(cached['dropped'])}; built again", soft_wrap=True)
    if cached.get("not_written"):
        out.print(f"cache        not written: {escape(cached['not_written'])} (the build itself is complete)", soft_wrap=True)
    if report_path:
        out.print(f"report       {report_path}")


def places_table(places: list[dict[str, Any]]) -> Any:
    """One row per place verified on (devices of a fleet): its outcome, or its fault and exit code, and why."""
    from rich.markup import escape

    table = _table("place", "outcome", "p50 ms", "reason", title="verified on", right=("p50 ms",))
    for entry in places:
        fault = entry.get("fault")
        outcome = f"{fault['kind']} (exit {fault['exit_code']})" if fault else entry["status"]
        p50 = (entry.get("latency_ms") or {}).get("p50")
        speed = f"{p50:.3f}" + ("*" if entry["where"] == "emulated" else "") if p50 else "-"
        reason = entry.get("reason") or ""
        if (entry.get("environment") or {}).get("rebooted_since_last_run"):
            reason = "rebooted since the last run" + (f"; {reason}" if reason else "")
        colour = "red" if fault else STATUS_COLOURS[entry["status"]]
        table.add_row(escape(place_label(entry)), f"[{colour}]{escape(outcome)}[/]", speed, escape(reason))
    return table


def place_label(verification: dict[str, Any]) -> str:
    """'pi5', 'host', or 'emu:aarch64 (emulated cortex-a76)'."""
    label = verification.get("device") or verification["where"]
    return f"{label} (emulated {verification['cpu']})" if verification["where"] == "emulated" and verification.get("cpu") else label


def _with_deltas(values: list[Any]) -> list[str]:
    """SQNR values at each place, then each place's difference from the first."""
    deltas = [v - values[0] if isinstance(v, float) and isinstance(values[0], float) else None for v in values[1:]]
    return [fmt(v) if v is not None else "-" for v in values + deltas]


def sqnr_comparison(places: list[dict[str, Any]]) -> Any:
    """Worst SQNR per output at each place side by side, and each place's difference from the first."""
    labels = [p.get("device") or p["where"] for p in places]
    table = _table("output", *labels, *[f"Δ {label} − {labels[0]}" for label in labels[1:]], title="worst SQNR dB per output, side by side",
                   right=(*labels, *[f"Δ {label} − {labels[0]}" for label in labels[1:]]))
    sqnr = [{o["name"]: o["sqnr_db"] for o in p["outputs"]} for p in places]
    for name in dict.fromkeys(n for here in sqnr for n in here):
        table.add_row(name, *_with_deltas([here.get(name) for here in sqnr]))
    return table


def _db(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.1f} dB"
    return f"{value} dB" if value is not None else "? dB"


def debug_lines(report: dict[str, Any]) -> list[str]:
    """One line for the first divergent layer, one for what fallback kept in float (rich markup escaped)."""
    from rich.markup import escape

    verification = report["verification"]
    lines = []
    first = verification.get("first_divergence")
    located = verification.get("locate") or {}
    rounds = (report.get("quantization") or {}).get("rounds") or []
    before = rounds[0].get("first_divergence") if rounds else None
    if first or before:
        shown = first or before
        lines.append(f"first divergence: node {escape(shown['node'])} ({shown['op']}), {_db(shown.get('input_sqnr_db'))} in → {_db(shown['sqnr_db'])} out"
                     + ("" if first else " (before fallback)"))
    elif located.get("status") == "skipped":
        lines.append(f"locate       skipped: {escape(str(located.get('reason')))}")
    elif located:
        lines.append(f"locate       no layer below {_db((verification.get('tolerances') or {}).get('min_sqnr_db'))} "
                     f"({located.get('compared_tensors', 0)} layers compared)")
    quantization = report.get("quantization") or {}
    floats = quantization.get("float_layers") or []
    if floats:
        names = ", ".join(escape(f"{layer['node']} ({layer['reason'].split(':')[0]})") for layer in floats[:4])
        more = f" and {len(floats) - 4} more" if len(floats) > 4 else ""
        cost = quantization.get("size_cost_bytes") or 0
        lines.append(f"kept float   {len(floats)} layer(s): {names}{more}; size cost {cost / 1024:+.1f} KiB")
    elif quantization.get("rounds"):
        lines.append(f"fallback     nothing kept in float ({escape(str(quantization.get('stopped')))})")
    return lines


def print_matrix(model: Path, results: list[Any]) -> None:
    # With several places (--device host --device emu:aarch64) each gets its worst-SQNR column, then the differences.
    places = list(dict.fromkeys(p["place"] for r in results if r.report for p in r.row()["places"]))
    quality = (*[f"SQNR dB {p}" for p in places], *[f"Δ {p}" for p in places[1:]]) if places else ("min SQNR dB", "min cosine")
    numbers = ("size KiB", "p50 ms", *quality)
    table = _table("target", "backend", "precision", *numbers, "verification", title=f"{model.name}: {len(results)} targets", right=numbers)
    for result in results:
        row = result.row()
        if "error" in row:
            table.add_row(row["target"], "", "", "", "", *[""] * len(quality), f"[red]error {row['exit_code']}[/]")
            continue
        sqnr = {p["place"]: p["min_sqnr_db"] for p in row["places"]}
        cells = _with_deltas([sqnr.get(p) for p in places]) if places else [
            fmt(row["min_sqnr_db"]) if row["min_sqnr_db"] is not None else "-", fmt(row["min_cosine"], 6) if row["min_cosine"] is not None else "-"]
        table.add_row(row["target"], row["backend"], row["precision"], f"{row['artifact_bytes'] / 1024:.1f}",
                      fmt(row["latency_p50_ms"]) if row["latency_p50_ms"] is not None else "-", *cells,
                      f"[{STATUS_COLOURS[row['status']]}]{row['status']}[/]" + (" (cached)" if row["cache_hit"] else ""))
    console(stderr=False).print(table)


def print_matrix_errors(results: list[Any]) -> None:
    from rich.markup import escape

    for result in results:
        if result.error is not None:
            console().print(f"[bold red]error[/] ({result.target}): {escape(str(result.error))}", soft_wrap=True)


def print_inspection(info: dict[str, Any], target: str | None) -> None:
    out = console(stderr=False)
    out.print(f"[bold]{info['path']}[/]  opset {info['opset']}  {info['bytes'] / 1024:.1f} KiB  {info['parameters']:,} parameters  {info['nodes']} nodes")
    io_table = _table("", "name", "shape", "dtype", title="tensors")
    for kind in ("inputs", "outputs"):
        for tensor in info[kind]:
            io_table.add_row(kind[:-1], tensor["name"], str(tensor["shape"]), tensor["dtype"])
    out.print(io_table)
    ops = _table("op", "count", title="ops")
    for op, count in info["ops"].items():
        ops.add_row(op, str(count))
    out.print(ops)
    for op, nodes in (info.get("onnxruntime_only_ops") or {}).items():  # every build refuses these (--dequantize rewrites some)
        out.print(f"[red]only onnxruntime runs[/] {op} ({len(nodes)} nodes: {', '.join(nodes[:4])}{', ...' if len(nodes) > 4 else ''})")
    if not target:
        return
    if info["unsupported"]:
        out.print(f"[red]ops the {info['backend']} backend ({info['target']}) cannot take:[/]")
        for line in info["unsupported"]:
            out.print(f"  {line}")
    elif info.get("backend_note"):
        out.print(f"[yellow]{info['backend_note']}[/]")
    else:
        out.print(f"[green]no ops known to block the {info['backend']} backend ({info['target']})[/]")


def print_probe(device_name: str, probe: dict[str, Any]) -> None:
    import click

    click.echo(f"{device_name}: {probe['system']} {probe['release']} {probe['machine']}, Python {probe['python']}, numpy {probe.get('numpy') or 'MISSING'}")
    free = probe.get("free_disk_bytes")
    click.echo(f"  free disk in work_dir: {free / 1024**3:.1f} GiB" if free is not None else "  free disk: unknown")
    for runtime, version in probe["runtimes"].items():
        click.echo(f"  {runtime:<16} {version or '-'}")
    if probe.get("trtexec"):
        click.echo(f"  trtexec          {probe['trtexec']}")
    facts = probe.get("connection") or {}
    if facts.get("file_transfer"):
        click.echo(f"  file transfer    {facts['file_transfer']}" + (f" ({facts['file_transfer_reason']})" if facts.get("file_transfer_reason") else ""))
    if "boot_id" in facts:
        click.echo(f"  boot id          {facts['boot_id'] or 'unknown'}" + (" (rebooted since the last run)" if facts.get("rebooted_since_last_run") else ""))


def print_smoke(result: Any) -> None:
    from rich.markup import escape

    out = console(stderr=False)
    colours = {"passed": "green", "failed": "red", "skipped": "yellow", "regression": "red"}
    out.print(f"smoke {result.at}: {result.report['artifact']} ({result.report['target']}), sha256 {result.report['artifact_sha256'][:12]}… checked")
    for device in result.devices:
        latency = f"p50 {device.p50_ms:.3f} ms" if device.p50_ms is not None else "no latency"
        base = f" (baseline {device.baseline_ms:.3f} ms)" if device.baseline_ms is not None else " (first passing run: baseline)"
        reason = f" — {escape(device.reason)}" if device.reason and device.verdict != "passed" else ""
        out.print(f"  {device.device:<16} [{colours[device.verdict]}]{device.verdict}[/] {latency}{base if device.p50_ms is not None else ''}{reason}",
                  soft_wrap=True)
    out.print(f"exit code {result.exit_code}")
