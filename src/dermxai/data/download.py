"""Fetch HAM10000 from the Harvard Dataverse (doi:10.7910/DVN/DBW86T) through its native API.

Files are listed with ``/api/datasets/:persistentId/versions/:latest-published/files`` and fetched with
``/api/access/datafile/{id}`` (``?format=original`` for ingested tables, so the metadata arrives as CSV).
Transfers resume from a ``.part`` file with an HTTP Range request, every file is checked against the
checksum the API reports, and zip archives are unpacked into the layout :func:`load_dataset` reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

SERVER = "https://dataverse.harvard.edu"
DOI = "doi:10.7910/DVN/DBW86T"
WANTED_PREFIXES = ("HAM10000_images_part_", "HAM10000_metadata", "HAM10000_segmentations")
CHUNK = 1 << 20
HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}


class DownloadError(OSError):
    """A download that cannot complete (an I/O failure: the CLI's one-line error, exit 2); the message says how
    to get the files by hand."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of the dataset as the API describes it."""

    file_id: int
    name: str  # the name to save under (the original name for ingested tables)
    size: int | None
    checksum_type: str | None
    checksum: str | None
    original: bool  # fetch with ?format=original


def list_files(server: str = SERVER, doi: str = DOI, timeout: float = 20) -> list[RemoteFile]:
    """The dataset's latest published files, as reported by the native API."""
    query = urllib.parse.urlencode({"persistentId": doi})
    url = f"{server}/api/datasets/:persistentId/versions/:latest-published/files?{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            listing = json.load(response)
    except (urllib.error.URLError, HTTPException, TimeoutError, OSError) as error:
        raise DownloadError(_by_hand(f"cannot reach {server} ({_reason(error)})")) from None
    if listing.get("status") != "OK":
        raise DownloadError(_by_hand(f"{url} answered {listing.get('status')}: {listing.get('message')}"))
    files = []
    for entry in listing["data"]:
        data = entry["dataFile"]
        original = "originalFileFormat" in data
        name = data.get("originalFileName") if original and data.get("originalFileName") else data["filename"]
        if original and not data.get("originalFileName") and data.get("originalFileFormat") == "text/csv":
            name = Path(name).with_suffix(".csv").name
        checksum = data.get("checksum") or ({"type": "MD5", "value": data["md5"]} if "md5" in data else {})
        size = data.get("originalFileSize") if original else data.get("filesize")
        files.append(RemoteFile(int(data["id"]), name, size, checksum.get("type"), checksum.get("value"), original))
    return files


def fetch(
    remote: RemoteFile,
    folder: Path,
    server: str = SERVER,
    attempts: int = 5,
    timeout: float = 60,
    progress: Callable[[RemoteFile, int], None] | None = None,
) -> Path:
    """Download one file into ``folder``, resuming a partial ``.part`` file, and verify its checksum."""
    target = folder / remote.name
    if target.is_file() and _matches(target, remote):
        return target
    partial = folder / f"{remote.name}.part"
    url = f"{server}/api/access/datafile/{remote.file_id}" + ("?format=original" if remote.original else "")
    for _ in range(attempts):
        have = partial.stat().st_size if partial.exists() else 0
        if remote.size is not None and have >= remote.size:
            break
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                mode = "ab" if have and response.status == 206 else "wb"  # 200: the server ignored Range
                with partial.open(mode) as out:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        if progress:
                            progress(remote, out.tell())
            if remote.size is None or partial.stat().st_size >= remote.size:
                break
        except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError) as error:
            if isinstance(error, urllib.error.HTTPError) and error.code not in (408, 429, 500, 502, 503, 504):
                raise DownloadError(_by_hand(f"{url} answered HTTP {error.code}")) from None
            continue  # interrupted: resume from what arrived
    else:
        raise DownloadError(
            _by_hand(
                f"{remote.name}: transfer kept breaking off after {attempts} attempts "
                f"({partial} is kept; run the command again to resume)"
            )
        )
    if not _matches(partial, remote):
        partial.unlink()
        raise DownloadError(
            f"{remote.name}: {remote.checksum_type} checksum does not match the one the API "
            "reports; the corrupt download was removed, run the command again"
        )
    os.replace(partial, target)
    return target


def unpack(archive: Path, dest: Path) -> None:
    """Unzip ``archive`` into ``dest/<archive stem>/``, refusing members that would escape it."""
    folder = dest / archive.stem
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.namelist():
            if not (folder / member).resolve().is_relative_to(folder.resolve()):
                raise DownloadError(f"{archive}: member {member!r} would be written outside {folder}")
        partial = dest / f"{archive.stem}.unpacking"
        shutil.rmtree(partial, ignore_errors=True)
        bundle.extractall(partial)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)


def download_ham10000(
    dest: str | Path, server: str = SERVER, doi: str = DOI, progress: Callable[[RemoteFile, int], None] | None = None
) -> list[Path]:
    """Fetch images, metadata and lesion masks into ``dest`` and unpack the archives; returns saved files."""
    dest = Path(dest)
    downloads = dest / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    wanted = [f for f in list_files(server, doi) if f.name.startswith(WANTED_PREFIXES)]
    if not wanted:
        raise DownloadError(_by_hand(f"{doi} on {server} lists none of the expected HAM10000 files"))
    saved = []
    for remote in wanted:
        path = fetch(remote, downloads, server, progress=progress)
        if path.suffix.lower() == ".zip":
            if not (dest / path.stem).is_dir():
                unpack(path, dest)
        else:
            shutil.copyfile(path, dest / path.name)
        saved.append(path)
    return saved


def _matches(path: Path, remote: RemoteFile) -> bool:
    if remote.size is not None and path.stat().st_size != remote.size:
        return False
    if not remote.checksum:
        return True
    algorithm = HASHES.get(remote.checksum_type or "", "")
    if not algorithm:
        raise DownloadError(f"{remote.name}: unsupported checksum type {remote.checksum_type}")
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest() == remote.checksum.lower()


def _reason(error: Exception) -> str:
    return str(getattr(error, "reason", None) or error)


def _by_hand(problem: str) -> str:
    return (
        f"{problem}.\nTo place HAM10000 by hand: download HAM10000_images_part_1.zip, HAM10000_images_part_2.zip, "
        "HAM10000_metadata (as CSV) and HAM10000_segmentations_lesion_tschandl.zip from "
        "https://doi.org/10.7910/DVN/DBW86T, put HAM10000_metadata.csv in one folder and unzip the archives "
        "into it (any sub-folders); then pass that folder as --data."
    )
