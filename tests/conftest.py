"""Shared fixtures: the committed HAM10000 subset and the real dataset when present."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "ham_mini"
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    """The committed subset of HAM10000 (CC BY-NC 4.0, Tschandl et al. 2018)."""
    return FIXTURE


@pytest.fixture(scope="session")
def fixture_table(fixture_dir):
    from dermxai.data import load_dataset

    return load_dataset(fixture_dir)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The full HAM10000 copy at ../shared/data/ham10000; tests using it skip when it is absent."""
    if not (REAL_DATA / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 data not found: place the copy at {REAL_DATA} to run this test")
    return REAL_DATA


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say in one line how to run the tests that `make test` leaves out."""
    marked = ("slow", "deploy")
    deselected = sum(
        any(item.get_closest_marker(m) for m in marked) for item in terminalreporter.stats.get("deselected", [])
    )
    if deselected:
        terminalreporter.write_line(f"{deselected} slow or deploy test(s) deselected: `make test-slow` runs them")
