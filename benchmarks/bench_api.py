"""HTTP API under load: 1, 4 and 16 concurrent clients against `dermxai serve`'s app on 127.0.0.1.

Run: python benchmarks/bench_api.py [--model BUNDLE] [--quick]
Starts uvicorn on `dermxai.app.api:create_app` (the app `dermxai serve` runs) in a separate process, waits for
GET /health, then drives POST /predict and POST /explain (multipart field `file`, a real fixture JPEG) from
client threads in this process, a bounded number of requests per level. Reports latency median (p5-p95),
requests/s (and its scaling against one client, measured in the same run), client errors and 5xx responses.
Prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from timing import machine, spread

from dermxai.models.bundle import is_bundle

FIXTURE_IMAGE = next((Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ham_mini").rglob("*.jpg"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, port: int, log: Path, timeout: float) -> subprocess.Popen:
    """uvicorn serving the bundle, output to ``log``; returns once GET /health answers (or raises with the log)."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "dermxai.app.api:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with log.open("w") as out:  # the child keeps its own copy of the handle
        server = subprocess.Popen(
            command, env={**os.environ, "DERMXAI_MODEL": str(model)}, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"the server did not answer GET /health within {timeout:.0f} s")


def load(url: str, payload: bytes, clients: int, requests: int, timeout: float) -> dict:
    """``requests`` POSTs shared by ``clients`` threads, each with its own connection."""
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(count: int) -> list[tuple[float, int]]:
        results = []
        with httpx.Client(timeout=timeout) as http:
            for _ in range(count):
                start = time.perf_counter()
                try:
                    status = http.post(url, files={"file": (FIXTURE_IMAGE.name, payload, "image/jpeg")}).status_code
                except httpx.HTTPError:
                    status = 0  # no response: connection error or timeout
                results.append((time.perf_counter() - start, status))
        return results

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for part in pool.map(client, per_client) for r in part]
    wall = time.perf_counter() - start
    times = np.array([t for t, status in results if status == 200])
    statuses = [status for _, status in results]
    return {
        "latency": times,
        "rate": len(results) / wall,
        "errors": sum(s == 0 for s in statuses),
        "server_errors": sum(s >= 500 for s in statuses),
        "other": sum(0 < s < 500 and s != 200 for s in statuses),
    }


def predict_beside_explain(port: int, payload: bytes, requests: int, timeout: float, explainers: int = 3) -> None:
    """/predict latency (1 client) alone, then while ``explainers`` clients keep /explain busy: its p50 and p99."""
    predict_url, explain_url = f"http://127.0.0.1:{port}/predict", f"http://127.0.0.1:{port}/explain"
    load(predict_url, payload, 1, 2, timeout)  # warm-up of both paths
    load(explain_url, payload, 1, 1, timeout)
    alone = load(predict_url, payload, 1, requests, timeout)["latency"]
    stop = threading.Event()

    def keep_explaining() -> None:
        with httpx.Client(timeout=timeout) as http:
            while not stop.is_set():
                http.post(explain_url, files={"file": (FIXTURE_IMAGE.name, payload, "image/jpeg")})

    threads = [threading.Thread(target=keep_explaining) for _ in range(explainers)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the explain requests are in flight
    try:
        beside = load(predict_url, payload, 1, requests, timeout)["latency"]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    p = {name: np.percentile(t, [50, 99]) * 1000 for name, t in (("alone", alone), ("beside", beside))}
    print(
        f"\n| POST /predict, 1 client | p50 ms | p99 ms |\n|---|---|---|\n"
        f"| alone | {p['alone'][0]:.0f} | {p['alone'][1]:.0f} |\n"
        f"| beside {explainers} /explain clients | {p['beside'][0]:.0f} | {p['beside'][1]:.0f} |\n"
        f"| ratio | {p['beside'][0] / p['alone'][0]:.2f}x | {p['beside'][1] / p['alone'][1]:.2f}x |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, default=Path("src/dermxai/assets/default_model"), help="bundle folder to serve"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--predict-requests", type=int, default=64, help="POST /predict requests per level")
    parser.add_argument("--explain-requests", type=int, default=32, help="POST /explain requests per level")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--quick", action="store_true", help="16 /predict and 16 /explain requests per level")
    parser.add_argument("--beside-only", action="store_true", help="only /predict alone and beside 3 /explain clients")
    args = parser.parse_args()
    if args.quick:
        args.predict_requests, args.explain_requests = 16, 16
    if not is_bundle(args.model):
        parser.error(f"--model {args.model}: not a model bundle (needs config.json and model.safetensors)")
    payload = FIXTURE_IMAGE.read_bytes()
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = start_server(args.model, port, log, timeout=180)
    try:
        print(
            f"Machine: {machine()} (server and clients share it). Model: {args.model}; payload: "
            f"{FIXTURE_IMAGE.name} ({len(payload):,} bytes); uvicorn, 1 worker, on 127.0.0.1.\n"
        )
        print(
            "| endpoint | clients | requests | latency ms, median (p5-p95) | requests/s | vs 1 client | "
            "errors | 5xx | other non-200 |\n|---|---|---|---|---|---|---|---|---|"
        )
        levels = () if args.beside_only else (("/predict", args.predict_requests), ("/explain", args.explain_requests))
        for endpoint, requests in levels:
            url = f"http://127.0.0.1:{port}{endpoint}"
            load(url, payload, 1, 2, args.timeout)  # warm-up
            single = None
            for clients in args.clients:
                r = load(url, payload, clients, max(requests, clients), args.timeout)
                single = single or r["rate"]
                latency = spread(r["latency"]) if len(r["latency"]) else "-"
                print(
                    f"| POST {endpoint} | {clients} | {max(requests, clients)} | {latency} | {r['rate']:.1f} | "
                    f"{r['rate'] / single:.2f}x | {r['errors']} | {r['server_errors']} | {r['other']} |",
                    flush=True,
                )
        predict_beside_explain(port, payload, args.predict_requests, args.timeout)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\nServer log: {log}")


if __name__ == "__main__":
    main()
