"""The HTML report opened in headless Chromium: every row and every plot point rendered, no console errors."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from results.store import Store
from results.synthetic import START, Quantization, failure_row, write_grid
from sweep.cli import app

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0")
NF4 = Quantization("bnb-nf4", "bnb", "nf4", 4, 0.1, 1.0, 0.3)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is needed to test the HTML report: run `apt-get install chromium`")
    return path


def open_in_chromium(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM after the page's scripts ran, and Chromium's log (console messages are logged as CONSOLE)."""
    done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_report_renders_every_row_and_point_without_errors(tmp_path: Path) -> None:
    results = tmp_path / "results"
    store = Store(str(results))
    written = write_grid(store, "s", ["tiny", "base"], ["x86-cpu", "cuda"], ["clean", "other"], utterances=30)
    store.write_trial("s", "nf4", failure_row("s", "nf4", "tiny", "x86-cpu", "clean", NF4,
                                              "unsupported", "needs CUDA", None, START), [])
    out = tmp_path / "site" / "report.html"
    done = CliRunner().invoke(app, ["report", "--results", str(results), "--out", str(out)])
    assert done.exit_code == 0, done.output

    page = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # self-contained: nothing fetched
    dom, log = open_in_chromium(out, tmp_path / "profile")
    body = dict(re.findall(r'data-([a-z-]+)="(\d+)"', re.search(r"<body[^>]*>", dom).group(0)))
    assert body["errors"] == "0", re.search(r'<pre id="errors">(.*?)</pre>', dom, re.S)
    assert [line for line in log.splitlines() if ":CONSOLE" in line] == []
    assert int(body["rows-rendered"]) == int(body["rows-expected"]) > len(written)
    # every ok trial has its leaderboard row and a point in both plots of its class and dataset
    rows = set(re.findall(r'<tr data-trial="([^"]+)"', dom))
    assert rows == {f"s/{trial_id}" for trial_id, _ in written}
    points = re.findall(r'<circle [^>]*data-trial="([^"]+)"', dom)
    assert len(points) == int(body["points-drawn"]) == int(body["points-expected"]) == 2 * len(written)
    assert "unsupported (needs CUDA)" in dom  # the support matrix
    assert "x86-cpu-host" in dom  # the hardware list
    pngs = sorted(out.parent.glob("report-*.png"))
    assert len(pngs) == 4  # one per hardware class and dataset
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in pngs)
