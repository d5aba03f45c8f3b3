"""OUT/report.html: a self-contained page (inline CSS and SVG, no scripts, nothing fetched)
rendered from the report dict, so it shows exactly what edgekit-report.json says."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from edgekit.fsutil import atomic_write_text
from edgekit.metrics import HISTOGRAM_EDGES

STATUS_COLOURS = {"passed": "#1a7f37", "failed": "#cf222e", "skipped": "#9a6700"}

CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1040px;color:#1f2328;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.sub{color:#59636e}.badge{display:inline-block;color:#fff;border-radius:12px;padding:2px 10px;font-weight:600}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:10px;margin-top:14px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:10px 12px}.card b{display:block;font-size:12px;color:#59636e;font-weight:500}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{border-bottom:1px solid #eaeef2;padding:5px 8px;text-align:left;vertical-align:top}
th{font-weight:600;background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}
.fail{color:#cf222e}.pass{color:#1a7f37}.charts{display:flex;flex-wrap:wrap;gap:18px}figure{margin:0}figcaption{font-size:12px;color:#59636e}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return _e(value) if value is not None else "–"


def _bars_svg(values: list[float], labels: list[str], title: str, colour: str = "#0969da", width: int = 460, height: int = 170,
              markers: dict[str, float] | None = None, marker_scale: tuple[float, float] | None = None) -> str:
    """A small vertical bar chart; ``markers`` draws labelled vertical lines at positions within ``marker_scale``."""
    count = max(len(values), 1)
    top = max(values) if values and max(values) > 0 else 1.0
    plot_h, left, bottom = height - 40, 36, height - 22
    bar_w = (width - left - 8) / count
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_e(title)}">',
             f'<line x1="{left}" y1="{bottom}" x2="{width - 4}" y2="{bottom}" stroke="#8c959f"/>',
             f'<text x="2" y="14" font-size="11" fill="#59636e">{_e(int(top) if top == int(top) else round(top, 3))}</text>']
    for i, value in enumerate(values):
        h = plot_h * value / top
        x = left + i * bar_w
        parts.append(f'<rect x="{x + 1:.1f}" y="{bottom - h:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" fill="{colour}">'
                     f"<title>{_e(labels[i])}: {_e(value)}</title></rect>")
    step = max(1, count // 6)
    for i in range(0, count, step):
        parts.append(f'<text x="{left + i * bar_w:.1f}" y="{height - 6}" font-size="10" fill="#59636e">{_e(labels[i])}</text>')
    if markers and marker_scale:
        low, high = marker_scale
        for index, (name, position) in enumerate(markers.items()):
            if high > low:
                x = left + (position - low) / (high - low) * (width - left - 8)
                parts.append(f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{bottom}" stroke="#cf222e" stroke-dasharray="3,2"/>'
                             f'<text x="{x + 2:.1f}" y="{26 + 11 * index}" font-size="10" fill="#cf222e">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _error_histogram(output: dict[str, Any]) -> str:
    counts = output.get("error_histogram") or []
    if not counts:
        return ""
    labels = [f"<{HISTOGRAM_EDGES[0]:.0e}"] + [f"{e:.0e}" for e in HISTOGRAM_EDGES[:-1]] + [f"≥{HISTOGRAM_EDGES[-1]:.0e}"]
    labels = labels[: len(counts)]
    svg = _bars_svg([float(c) for c in counts], labels, f"absolute error histogram of {output['name']}", colour="#8250df")
    return f"<figure>{svg}<figcaption>|error| of <code>{_e(output['name'])}</code> per element, log-spaced bins (all samples)</figcaption></figure>"


def _latency_histogram(latency: dict[str, Any]) -> str:
    times = [float(t) for t in latency.get("times_ms") or []]
    if not times:
        return ""
    low, high = min(times), max(times)
    bins = 20
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for t in times:
        counts[min(int((t - low) / width), bins - 1)] += 1
    labels = [f"{low + i * width:.3g}" for i in range(bins)]
    markers = {k: float(latency[k]) for k in ("p50", "p90", "p99") if isinstance(latency.get(k), (int, float))}
    svg = _bars_svg([float(c) for c in counts], labels, "latency distribution", markers=markers, marker_scale=(low, low + bins * width))
    return f"<figure>{svg}<figcaption>latency of {len(times)} timed runs (ms), after {latency.get('warmup', '?')} warm-up runs</figcaption></figure>"


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    return {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}.get(value) if isinstance(value, str) else None


def _layers_svg(verification: dict[str, Any], width: int = 960, height: int = 240) -> str:
    """The per-layer SQNR curve (topological order), the tolerance, and the first divergent layer."""
    layers = verification.get("layers") or []
    if not layers:
        return ""
    values = [_number_or_none(layer.get("sqnr_db")) for layer in layers]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    tolerance = _number_or_none((verification.get("tolerances") or {}).get("min_sqnr_db"))
    top = max([*finite, tolerance or 0.0, 10.0]) * 1.08
    left, bottom, plot_h = 40, height - 26, height - 46
    step = (width - left - 10) / max(len(values), 1)

    def y(value: float) -> float:
        return bottom - plot_h * min(max(value, 0.0), top) / top

    first = (verification.get("first_divergence") or {}).get("output")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="SQNR per layer">',
             f'<line x1="{left}" y1="{bottom}" x2="{width - 4}" y2="{bottom}" stroke="#8c959f"/>',
             f'<text x="2" y="{y(top / 1.08) + 4:.1f}" font-size="11" fill="#59636e">{top / 1.08:.0f} dB</text>',
             f'<text x="2" y="{bottom}" font-size="11" fill="#59636e">0 dB</text>']
    if tolerance is not None:
        parts.append(f'<line x1="{left}" y1="{y(tolerance):.1f}" x2="{width - 4}" y2="{y(tolerance):.1f}" stroke="#9a6700" stroke-dasharray="4,3"/>'
                     f'<text x="{width - 120}" y="{y(tolerance) - 4:.1f}" font-size="10" fill="#9a6700">tolerance {tolerance:g} dB</text>')
    points = []
    for i, (layer, value) in enumerate(zip(layers, values, strict=True)):
        x = left + (i + 0.5) * step
        broken = value is None or not math.isfinite(value) and value != math.inf
        shown = 0.0 if broken else (top if value == math.inf else value)
        colour = "#cf222e" if broken or (tolerance is not None and shown < tolerance) else "#0969da"
        points.append(f"{x:.1f},{y(shown):.1f}")
        parts.append(f'<circle cx="{x:.1f}" cy="{y(shown):.1f}" r="3" fill="{colour}"><title>{_e(layer["node"])} ({_e(layer.get("op"))}): '
                     f'{_e(layer.get("sqnr_db"))} dB, input {_e(layer.get("input_sqnr_db"))} dB</title></circle>')
        if layer.get("output") == first:
            parts.append(f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{bottom}" stroke="#cf222e" stroke-dasharray="3,2"/>'
                         f'<text x="{min(x + 3, width - 200):.1f}" y="14" font-size="11" fill="#cf222e">first divergence: {_e(layer["node"])}</text>')
    parts.insert(4, f'<polyline points="{" ".join(points)}" fill="none" stroke="#0969da" stroke-width="1"/>')
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="10" fill="#59636e">layers in topological order ({len(layers)})</text></svg>')
    return "".join(parts)


def _debugging(report: dict[str, Any]) -> str:
    """Where the artifact leaves onnxruntime, and what per-layer fallback kept in float."""
    v = report["verification"]
    located = v.get("locate") or {}
    first = v.get("first_divergence")
    body = []
    if located:
        summary = (f"first divergence: <code>{_e(first['node'])}</code> ({_e(first['op'])}), {_e(first.get('input_sqnr_db'))} dB in → "
                   f"{_e(first['sqnr_db'])} dB out (tensor <code>{_e(first['output'])}</code>)" if first else
                   f"locate {_e(located.get('status'))}" + (f": {_e(located.get('reason'))}" if located.get("reason") else ""))
        method = {"named": "reading the artifact's tensors by name", "reconvert": "converting again with extra outputs",
                  "onnx": "running both ONNX models"}.get(located.get("method"), located.get("method"))
        body.append(f"<p>{summary}</p><div class=sub>{_e(located.get('compared_tensors'))} layers compared by {_e(method)} "
                    f"on {_e(located.get('samples'))} samples in {_e(located.get('seconds'))} s; {_e(located.get('unmapped_tensors'))} ONNX tensors "
                    f"not mapped (fused or not exposed). {_e(' '.join(located.get('notes') or []))}</div>")
        body.append(f"<figure>{_layers_svg(v)}<figcaption>SQNR of each layer's output against onnxruntime (worst sample); "
                    "red: below the tolerance or not finite</figcaption></figure>" if v.get("layers") else "")
    quantization = report.get("quantization") or {}
    floats = quantization.get("float_layers") or []
    if floats:
        rows = "".join(f"<tr><td><code>{_e(f['node'])}</code></td><td>{_e(f.get('op') or '')}</td><td>{_e(f['reason'])}</td>"
                       f"<td class=n>{_num(f.get('sqnr_gain_db'))}</td></tr>" for f in floats)
        body.append(f"<p>{_e(quantization['requested'])} requested, {_e(quantization['applied'])} built: {len(floats)} layers kept float, "
                    f"size cost {int(quantization.get('size_cost_bytes') or 0):+,} bytes</p>"
                    f"<table><tr><th>node</th><th>op</th><th>why</th><th>SQNR gain dB</th></tr>{rows}</table>")
    rounds = quantization.get("rounds") or []
    if rounds:
        rows = "".join(f"<tr><td class=n>{r['round']}</td><td>{_e(', '.join(r.get('added') or []))}</td><td class=n>{r['float_layers']}</td>"
                       f"<td>{_e(r['status'])}</td><td class=n>{_num(r.get('min_sqnr_db'))}</td><td class=n>{r['artifact_bytes']:,}</td>"
                       f"<td>{_e((r.get('first_divergence') or {}).get('node') or '')}</td></tr>" for r in rounds)
        body.append(f"<p>per-layer fallback: {len(rounds) - 1} rounds, stopped: {_e(quantization.get('stopped'))}</p>"
                    "<table><tr><th>round</th><th>added</th><th>float nodes</th><th>verification</th><th>min SQNR dB</th><th>bytes</th>"
                    f"<th>first divergence</th></tr>{rows}</table>")
    return f"<h2>Layers</h2>{''.join(body)}" if body else ""


def _stages(stages: list[dict[str, Any]]) -> str:
    longest = max((s["seconds"] for s in stages), default=0) or 1
    rows = []
    for stage in stages:
        bar = f'<svg width="160" height="10"><rect width="{160 * stage["seconds"] / longest:.1f}" height="10" fill="#0969da"/></svg>'
        tool = " ".join(str(x) for x in (stage.get("tool"), stage.get("tool_version")) if x)
        rows.append(f"<tr><td>{_e(stage['name'])}</td><td class=n>{stage['seconds']:.2f} s</td><td>{bar}</td><td>{_e(tool)}</td></tr>")
    return "<table><tr><th>stage</th><th>time</th><th></th><th>tool</th></tr>" + "".join(rows) + "</table>"


def _verification_table(verification: dict[str, Any]) -> str:
    rows = []
    for o in verification.get("outputs", []):
        mark = '<span class="pass">pass</span>' if o.get("passed") else f'<span class="fail">FAIL</span> {_e("; ".join(o.get("failures", [])))}'
        rows.append(f"<tr><td><code>{_e(o['name'])}</code></td><td class=n>{_num(o['max_abs_error'])}</td><td class=n>{_num(o['mean_abs_error'])}</td>"
                    f"<td class=n>{_num(o.get('max_rel_error'))}</td><td class=n>{_num(o['cosine'], 7)}</td><td class=n>{_num(o['sqnr_db'])}</td>"
                    f"<td class=n>{_num(o.get('gain'))}</td><td class=n>{_num(o.get('top1_agreement'))}</td><td>{mark}</td></tr>")
    if not rows:
        return ""
    return ("<table><tr><th>output</th><th>max abs err</th><th>mean abs err</th><th>max rel err</th><th>cosine</th><th>SQNR dB</th><th>gain</th>"
            "<th>top-1 agreement</th><th>result</th></tr>"
            + "".join(rows) + "</table>")


def _devices(report: dict[str, Any]) -> str:
    runs = report.get("verifications") or [report["verification"]]
    rows = []
    for v in runs:
        env = v.get("environment") or {}
        latency = v.get("latency_ms") or {}
        colour = STATUS_COLOURS.get(v["status"], "#59636e")
        where = f"emulated ({v['cpu']}, qemu {(v.get('emulator') or {}).get('qemu', '?')})" if v["where"] == "emulated" else v["where"]
        speed = _num(latency.get("p50")) + (" <small>(emulated, not device speed)</small>" if latency.get("emulated") else "")
        rows.append(f"<tr><td>{_e(v.get('device') or 'this host')}</td><td>{_e(where)}</td><td>{_e(v.get('runtime') or '–')}</td>"
                    f"<td>{_e(' '.join(str(env.get(k)) for k in ('system', 'machine') if env.get(k)) or '–')}</td>"
                    f"<td>{_e(env.get('python') or '–')}</td><td class=n>{speed}</td>"
                    f"<td style='color:{colour}'>{_e(v['status'])}</td><td>{_e(v.get('reason') or '')}</td></tr>")
    return ("<table><tr><th>device</th><th>where</th><th>runtime</th><th>system</th><th>python</th><th>p50 ms</th><th>status</th><th>reason</th></tr>"
            + "".join(rows) + "</table>" + _side_by_side(runs))


EMULATED_LATENCY_NOTE = " <small>(emulated under qemu: the translator's speed, not the device's)</small>"


def _side_by_side(runs: list[dict[str, Any]]) -> str:
    """Worst SQNR per output at each place, and each place's difference from the first."""
    runs = [v for v in runs if v.get("outputs")]
    if len(runs) < 2:
        return ""
    labels = [v.get("device") or v["where"] for v in runs]
    sqnr = [{o["name"]: o["sqnr_db"] for o in v["outputs"]} for v in runs]
    head = "".join(f"<th>{_e(label)} SQNR dB</th>" for label in labels) + "".join(f"<th>Δ {_e(label)} − {_e(labels[0])}</th>" for label in labels[1:])
    rows = []
    for name in dict.fromkeys(n for here in sqnr for n in here):
        values = [here.get(name) for here in sqnr]
        deltas = [v - values[0] if isinstance(v, float) and isinstance(values[0], float) else None for v in values[1:]]
        rows.append(f"<tr><td><code>{_e(name)}</code></td>" + "".join(f"<td class=n>{_num(x)}</td>" for x in values + deltas) + "</tr>")
    return f"<h3>Side by side</h3><table><tr><th>output</th>{head}</tr>{''.join(rows)}</table>"


def render(report: dict[str, Any]) -> str:
    v = report["verification"]
    colour = STATUS_COLOURS.get(v["status"], "#59636e")
    latency = v.get("latency_ms") or {}
    model = Path(report["source_model"]).name
    tensors = "".join(f"<tr><td>{kind}</td><td><code>{_e(t['name'])}</code></td><td>{_e(t['shape'])}</td><td>{_e(t['dtype'])}</td></tr>"
                      for kind in ("inputs", "outputs") for t in report.get(kind, []))
    cards = [
        ("artifact", f"<code>{_e(report['artifact'])}</code><br>{report['artifact_bytes'] / 1024:.1f} KiB"),
        ("artifact sha256", f"<code>{_e(report['artifact_sha256'][:16])}…</code>"),
        ("source model", f"<code>{_e(model)}</code><br><code>{_e(report['source_model_sha256'][:16])}…</code>"),
        ("verification", f"{_e(v['status'])} on {_e(v.get('device') or v['where'])}"
                         + (f" (emulated {_e(v.get('cpu'))})" if v["where"] == "emulated" else "") + f"<br>{_e(v.get('runtime') or '')}"),
        ("latency p50 / p90 / p99" + (" — emulated, not device speed" if latency.get("emulated") else ""),
         " / ".join(_num(latency.get(k)) for k in ("p50", "p90", "p99")) + " ms" if latency else "not measured"),
        ("inputs used", f"{_e(v.get('samples'))} samples, {_e(v.get('input_source'))}"),
    ]
    cache = report.get("cache") or {}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgekit: {_e(model)} → {_e(report['target'])}</title><style>{CSS}</style></head>
<body>
<h1>{_e(model)} → {_e(report['target'])} <span class="badge" style="background:{colour}">{_e(v['status'])}</span></h1>
<div class="sub">{_e(report['backend'])}, {_e(report['precision'])} · edgekit {_e(report['edgekit_version'])} · {_e(report.get('created_at', ''))}{' · restored from the build cache' if cache.get('hit') else ''}</div>
{f'<p class="fail">{_e(v["reason"])}</p>' if v.get('reason') else ''}
<div class="cards">{''.join(f'<div class="card"><b>{_e(title)}</b>{body}</div>' for title, body in cards)}</div>
<h2>Model</h2><table><tr><th></th><th>name</th><th>shape</th><th>dtype</th></tr>{tensors}</table>
<h2>Stages</h2>{_stages(report.get('stages', []))}
<h2>Accuracy against onnxruntime</h2>
<div class="sub">tolerances: {_e(', '.join(f'{k} {val}' for k, val in (v.get('tolerances') or {}).items()))}</div>
{_verification_table(v) or '<p>No outputs were compared: ' + _e(v.get('reason') or 'verification did not run') + '</p>'}
<div class="charts">{''.join(_error_histogram(o) for o in v.get('outputs', []))}</div>
{_debugging(report)}
<h2>Latency{EMULATED_LATENCY_NOTE if latency.get('emulated') else ''}</h2><div class="charts">{_latency_histogram(latency) or '<p>not measured</p>'}</div>
<h2>Where it ran</h2>{_devices(report)}
</body></html>
"""


def write_html(report: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "report.html"
    atomic_write_text(path, render(report))
    return path
