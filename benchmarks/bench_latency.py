"""End-to-end latency of a prediction: upload -> JSON (POST /predict) and upload -> heatmap PNG (POST /explain).

Starts the real API (uvicorn on 127.0.0.1, a free port) in this process, posts the example images over HTTP
and reports the median and 90th percentile wall time per request, next to the Predictor called directly
(decode + preprocess + forward, no HTTP). Run: ``python benchmarks/bench_latency.py [--model BUNDLE]``.

``--compare A B ...`` instead times ``Predictor.predict`` of several bundles side by side in one run: in turns
(every bundle once per round, five rounds), so a change of load on the machine falls on all of them alike; the
table gives each one's median and p90 over all its runs and its median as a multiple of the first bundle's.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn

from dermxai.app.api import create_app
from dermxai.assets import example_images
from dermxai.inference.bundles import default_bundle
from dermxai.inference.predictor import Predictor

EXAMPLES = example_images()


def timings(call, runs: int) -> list[float]:
    call()  # warm-up
    times = []
    for n in range(runs):
        start = time.perf_counter()
        call(n)
        times.append(time.perf_counter() - start)
    return times


def summary(name: str, times: list[float]) -> str:
    q90 = statistics.quantiles(times, n=10)[-1]
    return f"| {name} | {len(times)} | {1000 * statistics.median(times):.0f} | {1000 * q90:.0f} |"


def compare(bundles: list[Path], runs: int, rounds: int = 5) -> None:
    """``Predictor.predict`` of each bundle, in turns, with the ratio of each median to the first bundle's."""
    predictors = {bundle: Predictor(bundle) for bundle in bundles}
    images = [p.read_bytes() for p in EXAMPLES]
    times: dict[Path, list[float]] = {bundle: [] for bundle in bundles}
    for _ in range(rounds):
        for bundle, predictor in predictors.items():
            times[bundle] += timings(lambda n=0, predict=predictor.predict: predict(images[n % len(images)]), runs)
    first = statistics.median(times[bundles[0]])
    print(f"Predictor.predict, {len(images)} example images, {rounds} rounds of {runs} runs each, in turns")
    print("| bundle | members | backend | runs | median ms | p90 ms | median / first |\n|---|---|---|---|---|---|---|")
    for bundle, predictor in predictors.items():
        members = len(predictor.config.members or []) or 1
        median, q90 = statistics.median(times[bundle]), statistics.quantiles(times[bundle], n=10)[-1]
        print(
            f"| {bundle} | {members} | {predictor.backend.name} | {len(times[bundle])} | {1000 * median:.1f} "
            f"| {1000 * q90:.1f} | {median / first:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: src/dermxai/assets/default_model)")
    parser.add_argument("--compare", type=Path, nargs="+", help="time Predictor.predict of these bundles side by side")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare:
        compare(args.compare, args.runs)
        return
    api = create_app(args.model or default_bundle())
    predictor = api.state.predictor
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    images = [p.read_bytes() for p in EXAMPLES]
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=300) as client:

        def post(endpoint: str):
            def call(n: int = 0) -> None:
                client.post(url + endpoint, files={"file": ("x.jpg", images[n % len(images)])}).raise_for_status()

            return call

        def direct(method):
            return lambda n=0: method(images[n % len(images)])

        rows = [
            summary("Predictor.predict (no HTTP)", timings(direct(predictor.predict), args.runs)),
            summary("POST /predict", timings(post("/predict"), args.runs)),
            summary(
                f"Predictor.explain {predictor.config.cam_method} (no HTTP)",
                timings(direct(predictor.explain), args.runs),
            ),
            summary(f"POST /explain {predictor.config.cam_method} (PNG overlay)", timings(post("/explain"), args.runs)),
        ]
    server.should_exit = True
    c = predictor.config
    print(
        f"model {predictor.model_id} ({c.arch}, input {c.height}x{c.width}), torch threads "
        f"{torch.get_num_threads()}, {len(images)} example images (200x150 JPEG)"
    )
    print("| path | runs | median ms | p90 ms |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
