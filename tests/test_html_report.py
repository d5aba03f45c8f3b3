"""report.html is self-contained and renders in headless Chromium (screenshot taken)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import edgekit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, superres) -> Path:
    out = tmp_path_factory.mktemp("html")
    report = edgekit.build(superres, "arm", precision="fp16", out_dir=out)
    assert report.verification.status == "passed"
    return out


def test_html_is_self_contained(built):
    page = (built / "report.html").read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page must not fetch anything"
    for text in ("super_resolution.onnx", "arm", "passed", "high_res", "SQNR dB", "Latency", "absolute error histogram", "this host"):
        assert text in page


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium; .ci/run does)")
def test_renders_in_headless_chromium(built, tmp_path):
    page = (built / "report.html").resolve().as_uri()
    profile = tmp_path / "chromium-profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "high_res" in dom.stdout and "<svg" in dom.stdout
    shot = tmp_path / "report.png"
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--window-size=1100,1600", f"--screenshot={shot}", page],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a blank page compresses to a few KB
    shutil.copy(shot, built / "report.png")


def test_failed_and_skipped_reports_render(built):
    import json

    from edgekit.html_report import render

    data = json.loads((built / "edgekit-report.json").read_text())
    data["verification"].update(status="failed", reason="high_res: SQNR 3.1 dB < 25.0 dB <script>")
    page = render(data)
    assert "failed" in page and "&lt;script&gt;" in page and "<script>" not in page
    data["verification"].update(status="skipped", reason="runtime missing", outputs=[], latency_ms=None)
    page = render(data)
    assert "skipped" in page and "not measured" in page
