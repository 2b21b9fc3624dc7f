"""Server memory under hostile uploads: peak RSS of `dermxai serve`'s app per file kind, alone and three at a time.

Run: python benchmarks/bench_hostile_rss.py [--model BUNDLE]
Starts the API (uvicorn, 1 worker, 127.0.0.1), warms it with one /predict and one /explain of a real JPEG, then
for each small file of ``tests/hostile_files.py`` (a 60 MP float TIFF, PNGs, a 60 MP JPEG, the largest accepted
images) and each endpoint sends it once, then three copies at once. Before each case the server's peak RSS
(VmHWM) is reset through /proc/PID/clear_refs, so the figure is that case's own peak above the warmed RSS.
The issue's bar is +500 MB. Prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from bench_api import FIXTURE_IMAGE, free_port, start_server
from timing import machine

from dermxai.models.bundle import is_bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hostile_files import CASES  # noqa: E402  (the test's files, one definition)

BAR_MB = 500


def status_mb(pid: int, field: str) -> float:
    """``field`` (VmRSS, VmHWM) of /proc/PID/status in MB."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) * 1024 / 1e6


def send(url: str, data: bytes, copies: int) -> list[int]:
    """Status codes of ``copies`` concurrent POSTs of ``data``."""

    def one(_: int) -> int:
        with httpx.Client(timeout=300) as http:
            return http.post(url, files={"file": ("upload.bin", data, "application/octet-stream")}).status_code

    with ThreadPoolExecutor(copies) as pool:
        return list(pool.map(one, range(copies)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, default=Path("src/dermxai/assets/default_model"), help="bundle folder to serve"
    )
    args = parser.parse_args()
    if not is_bundle(args.model):
        parser.error(f"--model {args.model}: not a model bundle (needs config.json and model.safetensors)")
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = start_server(args.model, port, log, timeout=180)
    base = f"http://127.0.0.1:{port}"
    worst = 0.0
    try:
        for endpoint in ("/predict", "/explain"):
            send(base + endpoint, FIXTURE_IMAGE.read_bytes(), 1)  # warm: model, heatmap model, allocator
        print(
            f"Machine: {machine()}. Model: {args.model}; uvicorn, 1 worker. Warmed RSS "
            f"{status_mb(server.pid, 'VmRSS'):.0f} MB.\n\n"
            "| file | size KB | endpoint | copies | answers | peak RSS above warmed, MB |\n|---|---|---|---|---|---|"
        )
        for name, (make, _) in CASES.items():
            data = make()
            for endpoint in ("/predict", "/explain"):
                for copies in (1, 3):
                    before = status_mb(server.pid, "VmRSS")
                    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
                    codes = send(base + endpoint, data, copies)
                    rise = status_mb(server.pid, "VmHWM") - before
                    worst = max(worst, rise)
                    answers = ", ".join(f"{codes.count(c)}x {c}" for c in sorted(set(codes)))
                    print(f"| {name} | {len(data) / 1024:.0f} | {endpoint} | {copies} | {answers} | {rise:.0f} |")
        after = status_mb(server.pid, "VmRSS")
    finally:
        server.terminate()
        server.wait(timeout=30)
    verdict = "within" if worst <= BAR_MB else "ABOVE"
    print(f"\nWorst case: +{worst:.0f} MB ({verdict} the {BAR_MB} MB bar); RSS after all cases {after:.0f} MB.")
    print(f"Server log: {log}")


if __name__ == "__main__":
    main()
