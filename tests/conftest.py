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


MARKED_OUT = ("slow", "deploy")  # what `make test` leaves to `make test-slow`
DESELECTED = pytest.StashKey[int]()


def pytest_deselected(items) -> None:
    """Count the slow or deploy tests the marker expression left out (in each xdist worker, or alone)."""
    config = items[0].config if items else None
    if config is not None:
        marked = sum(any(item.get_closest_marker(m) for m in MARKED_OUT) for item in items)
        config.stash[DESELECTED] = config.stash.get(DESELECTED, 0) + marked


def pytest_sessionfinish(session) -> None:
    """An xdist worker hands its count to the controller."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["deselected_slow"] = session.config.stash.get(DESELECTED, 0)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """The controller keeps the workers' count (each worker collects every test)."""
    count = getattr(node, "workeroutput", {}).get("deselected_slow", 0)
    node.config.stash[DESELECTED] = max(node.config.stash.get(DESELECTED, 0), count)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say in one line how to run the tests that `make test` leaves out."""
    deselected = config.stash.get(DESELECTED, 0)
    if deselected:
        terminalreporter.write_line(f"{deselected} slow or deploy test(s) deselected: `make test-slow` runs them")
