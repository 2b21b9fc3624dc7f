"""HAM10000 download against a local server that answers like Dataverse's native API."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dermxai.data import load_dataset
from dermxai.data.download import DOI, DownloadError, download_ham10000


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class FakeDataverse:
    """Serves a dataset listing and files; cuts the first transfer of ``interrupt`` halfway."""

    def __init__(self, files: dict[int, dict], interrupt: int | None = None) -> None:
        self.files, self.interrupt, self.requests = files, interrupt, []
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def listing(self) -> dict:
        data = []
        for file_id, spec in self.files.items():
            entry = {
                "id": file_id,
                "filename": spec["name"],
                "filesize": len(spec["body"]),
                "checksum": {"type": "MD5", "value": spec.get("md5", hashlib.md5(spec["body"]).hexdigest())},
            }
            if spec.get("original"):
                entry.update(
                    filename=spec["name"].replace(".csv", ".tab"),
                    originalFileFormat="text/csv",
                    originalFileName=spec["name"],
                    originalFileSize=len(spec["body"]),
                    filesize=7,
                )
            data.append({"label": entry["filename"], "dataFile": entry})
        return {"status": "OK", "data": data}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                fake.requests.append((self.path, self.headers.get("Range")))
                if self.path.startswith("/api/datasets/:persistentId/versions/:latest-published/files"):
                    assert "persistentId=doi%3A10.7910%2FDVN%2FDBW86T" in self.path
                    return self._send(200, json.dumps(fake.listing()).encode(), "application/json")
                file_id = int(self.path.split("/api/access/datafile/")[1].split("?")[0])
                body = fake.files[file_id]["body"]
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                if file_id == fake.interrupt and start == 0:
                    fake.interrupt = None
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                status = 206 if start else 200
                self._send(
                    status,
                    body[start:],
                    "application/octet-stream",
                    {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"} if start else {},
                )

            def _send(self, status: int, body: bytes, kind: str, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def dataset_files(fixture_table) -> dict[int, dict]:
    rows = fixture_table.head(3)
    images = {Path(p).name: Path(p).read_bytes() for p in rows["path"]}
    masks = {f"HAM10000_segmentations_lesion_tschandl/{Path(p).name}": Path(p).read_bytes() for p in rows["mask_path"]}
    metadata = rows[["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]].to_csv(index=False)
    names = list(images)
    return {
        11: {"name": "HAM10000_images_part_1.zip", "body": zipped({n: images[n] for n in names[:2]})},
        12: {"name": "HAM10000_images_part_2.zip", "body": zipped({names[2]: images[names[2]]})},
        13: {"name": "HAM10000_metadata.csv", "body": metadata.encode(), "original": True},
        14: {"name": "HAM10000_segmentations_lesion_tschandl.zip", "body": zipped(masks)},
        15: {"name": "ISIC2018_Task3_Test_Images.zip", "body": b"not wanted"},
    }


def test_download_resumes_an_interrupted_transfer_verifies_and_unpacks(tmp_path, dataset_files):
    server = FakeDataverse(dataset_files, interrupt=11)
    try:
        download_ham10000(tmp_path, server=server.url, doi=DOI)
        table = load_dataset(tmp_path)
        assert len(table) == 3 and table["mask_path"].notna().all()
        part_1 = [rng for path, rng in server.requests if path == "/api/access/datafile/11"]
        assert part_1[0] is None and part_1[1] == f"bytes={len(dataset_files[11]['body']) // 2}-"
        assert ("/api/access/datafile/13?format=original", None) in server.requests
        assert not any("datafile/15" in path for path, _ in server.requests)
        server.requests.clear()
        download_ham10000(tmp_path, server=server.url, doi=DOI)  # everything verified: nothing fetched again
        assert [path for path, _ in server.requests if "datafile" in path] == []
    finally:
        server.close()


def test_checksum_mismatch_is_refused_and_the_bad_file_removed(tmp_path, dataset_files):
    dataset_files[12]["md5"] = "0" * 32
    server = FakeDataverse(dataset_files)
    try:
        with pytest.raises(DownloadError, match="HAM10000_images_part_2.zip: MD5 checksum does not match"):
            download_ham10000(tmp_path, server=server.url)
        assert not list((tmp_path / "downloads").glob("*part_2*"))
    finally:
        server.close()


def test_offline_fails_fast_with_instructions(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DownloadError, match=r"(?s)cannot reach http://127\.0\.0\.1:9 .*To place HAM10000 by hand"):
        download_ham10000(tmp_path, server="http://127.0.0.1:9")
    assert time.perf_counter() - start < 5
