"""A seconds-long run of the benchmark harness, so it keeps working. Figures from such short
runs mean nothing; what is checked is that the report is written, every request succeeded,
and its ratios and verdicts follow from its own figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.full

ROOT = Path(__file__).resolve().parent.parent
MEASURES = (
    "GET /me, requestSigning key",
    "GET /me, secretKey key",
    "POST /accounts/{id}/api-keys, one project",
    "POST /accounts/{id}/api-keys, one project, Idempotency-Key",
    "/verify, secretKey key",
    "/verify, signed GET forwarded",
)


def test_the_benchmark_writes_a_table_of_figures_for_the_backend(
    backend: str, tmp_path: Path
) -> None:
    report = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "bench", "--backends", backend, "--rounds", "1", "--duration", "1"),
            *("--warmup", "0", "--connections", "4", "--threads", "1"),
            *("--output", str(report), "--postgres-url", POSTGRES_ADMIN_URL),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    assert f"## {backend}" in text
    for measure in MEASURES:
        (row,) = [line for line in text.splitlines() if line.startswith(f"| {measure} |")]
        cells = [cell.strip() for cell in row.split("|")[2:-1]]
        service_rps, baseline_rps, rps_ratio = (float(cell) for cell in cells[:3])
        target = float(cells[5].removeprefix("≥ "))
        rps_met = cells[6].split("/")[0].strip()
        assert service_rps > 0 and baseline_rps > 0
        # The report's own arithmetic: the ratio and its verdict follow from the figures.
        assert rps_ratio == pytest.approx(service_rps / baseline_rps, abs=0.006)
        assert rps_met == ("yes" if rps_ratio >= target else "**no**")
        assert cells[-1] == "0", f"{measure}: requests failed under load"
    assert re.search(r"\| decrypt \+ HMAC \+ compare \(requestSigning\) \| [0-9.]+ µs", text)
    assert re.search(
        r"\| `require_key` on a cache hit \(Bearer, role and project\) \| [0-9.]+ µs", text
    )


def test_the_growth_benchmark_compares_two_tables_of_the_backend(
    backend: str, tmp_path: Path
) -> None:
    report = tmp_path / "GROWTH.md"
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "bench", "--growth", "--growth-sizes", "20,200", "--backends", backend),
            *("--rounds", "1", "--duration", "1", "--warmup", "0"),
            *("--connections", "4", "--threads", "1"),
            *("--output", str(report), "--postgres-url", POSTGRES_ADMIN_URL),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    assert f"## Growth, {backend}" in text
    for size in ("20", "200"):
        (row,) = [line for line in text.splitlines() if line.startswith(f"| {size} |")]
        authenticate_p50, authenticate_rps, create_p50, create_rps, rss = (
            float(cell) for cell in row.split("|")[2:7]
        )
        assert min(authenticate_p50, authenticate_rps, create_p50, create_rps, rss) > 0
    assert re.search(r"from 20 to 200 keys: authenticate [+-]\d+%, create [+-]\d+%", text)
