"""The HTTP API: answers, JSON errors with 4xx codes, upload limits, and concurrent requests on a real server."""

from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image
from test_inference import png_bomb

from dermxai.app.api import create_app
from dermxai.assets import DEFAULT_MODEL, example_images
from dermxai.inference.onnx_backend import int8_kernels_exact

EXAMPLES = example_images()
LIMIT = 200_000


@pytest.fixture(scope="module")
def api():
    return create_app(DEFAULT_MODEL, max_bytes=LIMIT)


@pytest.fixture(scope="module")
def client(api):
    with TestClient(api) as client:
        yield client


def upload(data: bytes, name: str = "image.jpg") -> dict:
    return {"file": (name, data, "application/octet-stream")}


def test_predict_returns_calibrated_probabilities(client, api):
    response = client.post("/predict", files=upload(EXAMPLES[0].read_bytes()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["probabilities"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-6)
    assert body["top_class"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["malignant"]["score"] == pytest.approx(sum(body["probabilities"][c] for c in ("akiec", "bcc", "mel")))
    assert body["model_id"] == api.state.predictor.model_id and isinstance(body["abstain"], bool)


def test_health_models_and_openapi(client, api):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_id"] == api.state.predictor.model_id
    served = "onnxruntime-int8" if int8_kernels_exact() else "onnxruntime"  # else a float32 graph of the weights
    assert health["backend"] == served and health["ood_gate"] is True
    assert client.head("/health").status_code == 200
    (model,) = client.get("/models").json()
    assert model["arch"] == api.state.predictor.config.arch and "gradcam" in model["cam_methods"]
    assert model["cam_method"] == api.state.predictor.config.cam_method
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/explain", "/health", "/models"} <= set(schema["paths"])


def test_explain_returns_a_png_overlay(client):
    response = client.post("/explain?method=gradcam&opacity=0.6", files=upload(EXAMPLES[1].read_bytes()))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.width == 480
    assert response.headers["x-dermxai-target-class"] == response.headers["x-dermxai-top-class"]
    empty = client.post("/explain?method=", files=upload(EXAMPLES[1].read_bytes()))
    assert empty.status_code == 400 and "unknown or unserved method ''" in empty.json()["detail"]
    bad = client.post("/explain?method=magic", files=upload(EXAMPLES[1].read_bytes()))
    assert bad.status_code == 400 and "unknown or unserved method" in bad.json()["detail"]


@pytest.mark.parametrize(
    "data, status, reason",
    [
        (b"%PDF-1.4 definitely not an image", 415, "not_an_image"),
        (b"", 400, "empty"),
        (EXAMPLES[0].read_bytes()[:300], 400, "corrupt"),
        (png_bomb(30_000, 30_000), 413, "too_many_pixels"),
    ],
)
def test_bad_uploads_get_json_4xx_errors(client, data, status, reason):
    response = client.post("/predict", files=upload(data))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["reason"] == reason and response.json()["detail"]


def test_oversized_uploads_are_refused_with_413(client):
    big = b"\xff\xd8" + b"\x00" * (LIMIT + 10)  # just over the file limit: caught while reading the upload
    response = client.post("/predict", files=upload(big))
    assert response.status_code == 413 and response.json()["reason"] == "too_many_bytes"
    huge = b"\x00" * (LIMIT * 2)  # far over: refused by the body limit before parsing
    response = client.post("/predict", files=upload(huge))
    assert response.status_code == 413 and response.json()["reason"] == "too_many_bytes"

    def stream():  # no Content-Length: counted while it arrives
        boundary = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
        yield b"" + boundary
        for _ in range(LIMIT // 10_000 * 2):
            yield b"\x00" * 10_000

    response = client.post("/predict", content=stream(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and response.json()["reason"] == "too_many_bytes"


def test_missing_file_is_422(client):
    assert client.post("/predict").status_code == 422
    assert client.post("/predict", files={"other": ("a.jpg", b"123")}).status_code == 422


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(api) -> tuple[uvicorn.Server, threading.Thread]:
    """uvicorn serving ``api`` on a free local port, in a thread; returns once it has started."""
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, thread


def test_twenty_concurrent_requests_on_a_real_server(api, client):
    expected = {path.name: client.post("/predict", files=upload(path.read_bytes())).json() for path in EXAMPLES}
    server, thread = start_server(api)
    url = f"http://127.0.0.1:{server.config.port}"
    # 20 requests at once, every fifth a CAM: its hooks must not leak into the predictions running beside it
    jobs = [(EXAMPLES[n % len(EXAMPLES)], "/explain" if n % 5 == 0 else "/predict") for n in range(20)]

    def ask(job: tuple[Path, str]) -> tuple[str, str, httpx.Response]:
        path, endpoint = job
        return path.name, endpoint, httpx.post(url + endpoint, files=upload(path.read_bytes(), path.name), timeout=300)

    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(ask, jobs))
    finally:
        server.should_exit = True
        thread.join(10)
    assert len(answers) == 20
    for name, endpoint, response in answers:
        assert response.status_code == 200
        if endpoint == "/explain":
            assert response.headers["x-dermxai-top-class"] == expected[name]["top_class"]
            continue
        body = response.json()
        assert body["top_class"] == expected[name]["top_class"]
        for c, p in expected[name]["probabilities"].items():
            assert body["probabilities"][c] == pytest.approx(p, abs=1e-6)


def test_the_heatmap_model_is_warmed_at_start_up(api):
    import time

    with TestClient(api) as client:
        deadline = time.time() + 60
        while not client.get("/health").json()["heatmaps_ready"] and time.time() < deadline:
            time.sleep(0.2)
        assert client.get("/health").json()["heatmaps_ready"]


def test_a_body_that_stops_arriving_times_out():
    import asyncio

    from dermxai.app.api import BodyLimit, Stalled

    async def app(scope, receive, send):
        await receive()

    async def stalled_receive():
        await asyncio.sleep(10)

    middleware = BodyLimit(app, limit=1000, timeout=0.05)
    with pytest.raises(Stalled):
        asyncio.run(middleware({"type": "http", "headers": []}, stalled_receive, None))


def test_a_real_server_answers_a_stalled_upload_with_a_json_408():
    """Headers and the start of a body, then nothing: the server answers and closes, it does not wait for ever."""
    import json

    server, thread = start_server(create_app(DEFAULT_MODEL, max_bytes=LIMIT, body_timeout_s=0.5))
    try:
        with socket.create_connection(("127.0.0.1", server.config.port), timeout=20) as sock:
            head = (
                "POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
            )
            sock.sendall(head.encode())
            started, answer = time.monotonic(), b""
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and answer.split(b"\r\n\r\n", 1)[1].endswith(b"}"):
                    break
        assert time.monotonic() - started < 15
        status, body = answer.split(b"\r\n", 1)[0], answer.split(b"\r\n\r\n", 1)[1]
        assert b" 408 " in status, answer[:300]
        assert json.loads(body)["reason"] == "timeout"
    finally:
        server.should_exit = True
        thread.join(30)


def test_several_files_in_one_request_are_refused_not_silently_dropped(client):
    data = EXAMPLES[0].read_bytes()
    response = client.post("/predict", files=[("file", ("a.jpg", data, "image/jpeg"))] * 3)
    assert response.status_code == 400 and "one image per request" in response.json()["detail"]


def test_heatmaps_run_on_one_lower_priority_thread_and_a_full_queue_is_503(api, client, monkeypatch):
    import os
    import sys

    predictor = api.state.predictor
    release, threads = threading.Event(), []
    real_explain = predictor.explain

    def slow_explain(*args, **kwargs):
        threads.append(threading.get_native_id())
        release.wait(30)
        return real_explain(*args, **kwargs)

    monkeypatch.setattr(predictor, "explain", slow_explain)
    server, thread = start_server(api)
    url = f"http://127.0.0.1:{server.config.port}"
    data = EXAMPLES[0].read_bytes()
    try:
        with ThreadPoolExecutor(12) as pool:
            # one heatmap runs, eight wait (MAX_WAITING_HEATMAPS); the rest are told the server is busy
            futures = [pool.submit(httpx.post, url + "/explain", files=upload(data), timeout=120) for _ in range(12)]
            deadline = time.monotonic() + 30
            while not threads and time.monotonic() < deadline:
                time.sleep(0.05)
            # a prediction is answered while the heatmap thread is held
            assert httpx.post(url + "/predict", files=upload(data), timeout=30).status_code == 200
            if sys.platform.startswith("linux"):
                assert os.getpriority(os.PRIO_PROCESS, threads[0]) > os.getpriority(os.PRIO_PROCESS, 0)
            time.sleep(1)
            release.set()
            answers = [future.result() for future in futures]
    finally:
        release.set()
        server.should_exit = True
        thread.join(10)
    codes = sorted(response.status_code for response in answers)
    assert codes.count(200) == 9 and codes.count(503) == 3, codes
    busy = next(response for response in answers if response.status_code == 503)
    assert busy.json()["reason"] == "busy" and busy.headers["retry-after"]
    assert len(set(threads)) == 1  # one worker thread makes every heatmap
