"""CLI commands of the front ends: ``predict``, ``abstention``, ``app`` and ``serve`` (registered in ``dermxai.cli``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dermxai.options import ModelOption

console = Console(soft_wrap=True)  # messages keep paths whole; tables still fit the terminal
CertOption = Annotated[Path | None, typer.Option("--ssl-cert", help="TLS certificate (PEM) to serve HTTPS.")]
KeyOption = Annotated[Path | None, typer.Option("--ssl-key", help="TLS private key (PEM) to serve HTTPS.")]
APP_SCRIPT = Path(__file__).with_name("streamlit_app.py")


def _bundle(model: Path | None) -> Path:
    from dermxai.inference.bundles import default_bundle

    return model if model is not None else default_bundle()


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be between 1 and 65535, not {port}")


def _check_tls(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise ValueError("HTTPS needs both --ssl-cert and --ssl-key")
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise ValueError(f"{path}: no such file")


def read_upload(path: Path, max_bytes: int) -> bytes:
    """A file's bytes, refusing non-regular files and reading at most ``max_bytes + 1`` (never the whole of it)."""
    from dermxai.inference.inputs import InvalidImage

    if not path.is_file():
        raise InvalidImage("not a regular file" if path.exists() else "no such file", "not_a_file")
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise InvalidImage(f"cannot be read ({error.strerror or error})", "unreadable") from None
    if len(data) > max_bytes:
        raise InvalidImage(f"larger than the {max_bytes / 2**20:.0f} MiB limit", "too_many_bytes")
    return data


ISIC_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def write_isic_submission(out: Path, results: list) -> None:
    """``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``: the served probabilities (their argmax is the served label).

    The challenge scores every image, so withheld (abstained) predictions are written too; ``dermxai predict
    --json`` says which ones were withheld.
    """
    import csv

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", *ISIC_COLUMNS])
        for path, prediction in results:
            writer.writerow([path.stem, *(f"{prediction.probabilities[c.lower()]:.6f}" for c in ISIC_COLUMNS)])


def predict_command(
    images: Annotated[list[Path], typer.Argument(help="Image files (format read from the content).")],
    model: ModelOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, one object per image.")] = False,
    output_format: Annotated[
        str, typer.Option("--format", help="table (default) or isic: an ISIC 2018 Task 3 submission CSV (with --out).")
    ] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="File for --format isic.")] = None,
) -> None:
    """Classify images: served probabilities, malignant score, abstention; bad files are reported, not fatal."""
    from dermxai.inference.inputs import InvalidImage
    from dermxai.inference.predictor import Predictor

    if output_format not in ("table", "isic"):
        raise ValueError(f"--format {output_format!r}: use table or isic")
    if output_format == "isic" and out is None:
        raise ValueError("--format isic needs --out FILE.csv")

    predictor = Predictor(_bundle(model))
    results, failures = [], []
    for path in images:
        try:
            results.append((path, predictor.predict(read_upload(path, predictor.max_bytes))))
        except InvalidImage as error:
            failures.append((path, str(error)))
    if output_format == "isic":
        write_isic_submission(out, results)
        console.print(f"{len(results)} image(s) written to {out} (ISIC 2018 Task 3 format)")
    elif as_json:
        print(
            json.dumps(
                [{"image": str(path), **p.to_dict()} for path, p in results]
                + [{"image": str(path), "error": message} for path, message in failures],
                indent=2,
            )
        )
    else:
        table = Table(title=f"model {predictor.model_id} (temperature {predictor.config.temperature:g})")
        for column in ("image", "top class", "probability", "malignant score", "uncertain"):
            table.add_column(column, justify="right" if column in ("probability", "malignant score") else "left")
        for path, p in results:
            if p.out_of_distribution:
                table.add_row(str(path), "-", "-", "-", "not a dermoscopic image of one lesion")
                continue
            flag = (
                "no threshold" if p.malignant_flag is None else ("FLAGGED" if p.malignant_flag else "below threshold")
            )
            table.add_row(
                str(path),
                p.top_class,
                f"{p.confidence:.1%}",
                f"{p.malignant_score:.1%} ({flag})",
                ("could be " + ", ".join(c for c, _ in p.differential)) if p.uncertain else "no",
            )
        if results:
            console.print(table)
        console.print("Research and teaching tool, not a medical device.", style="dim")
    for path, message in failures:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {path}: {message}", highlight=False)
    if failures:
        raise typer.Exit(1)


def abstention_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (HAM10000 layout) or label CSV.")],
    split: Annotated[Path, typer.Option("--split", help="Split CSV; thresholds are fitted on its val images.")],
    model: ModelOption = None,
    target: Annotated[float, typer.Option(help="Share of validation images to accept.")] = 0.95,
    per_kind: Annotated[int, typer.Option(help="Synthetic non-dermoscopic images per kind.")] = 16,
    write: Annotated[bool, typer.Option("--write", help="Store the thresholds in the bundle's config.json.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fit the abstention thresholds on val; report abstention rates on val, test and non-dermoscopic images."""
    from dermxai.evaluation.abstention import abstention_report
    from dermxai.inference.predictor import Predictor

    folder = _bundle(model)
    report = abstention_report(Predictor(folder), data, split, target, per_kind)
    if write:
        from dermxai.models.bundle import update_config

        update_config(folder, abstain=report["abstain"])
    if as_json:
        print(json.dumps(report, indent=2))
        return
    params = report["abstain"]
    title = (
        f"Abstention of {folder} (min confidence {params['min_confidence']:.3f}, "
        f"max energy {params['max_energy']:.3f}, fitted on {params['n_val']} val images)"
    )
    rates = {name: (row["n"], row["abstain_rate"]) for name, row in report["rates"].items()}
    console.print(rate_table(title, "abstained", rates))
    if write:
        console.print(f"thresholds written to {folder / 'config.json'} (abstain)")


def rate_table(title: str, label: str, rates: dict[str, tuple[int, float]]) -> Table:
    """A table of image sets: name, count and the share that ``label`` (abstained, withheld, ...)."""
    table = Table(title=title)
    for column in ("images", "n", label):
        table.add_column(column, justify="left" if column == "images" else "right")
    for name, (n, share) in rates.items():
        table.add_row(name, str(n), f"{share:.1%}")
    return table


def app_command(
    model: Annotated[list[Path] | None, typer.Option("--model", help="Extra bundle(s) to offer (repeatable).")] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8501,
    address: Annotated[
        str, typer.Option(help="Address to bind: 127.0.0.1 (this machine only) or 0.0.0.0 (the LAN).")
    ] = "127.0.0.1",
    ssl_cert: CertOption = None,
    ssl_key: KeyOption = None,
) -> None:
    """Start the Streamlit app (upload, phone camera, examples -> probabilities, heatmap, advice)."""
    from dermxai.inference.inputs import MAX_BYTES

    check_port(port)
    _check_tls(ssl_cert, ssl_key)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_SCRIPT),
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.maxUploadSize",
        str(MAX_BYTES // (1024 * 1024)),
    ]  # MiB, as the Predictor's limit
    command += ["--server.address", address]
    if ssl_cert:
        command += ["--server.sslCertFile", str(ssl_cert), "--server.sslKeyFile", str(ssl_key)]
    command += ["--"] + [arg for folder in model or [] for arg in ("--model", str(folder))]
    raise typer.Exit(subprocess.call(command))


def serve_command(
    model: ModelOption = None,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0: all interfaces).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_mib: Annotated[float, typer.Option(help="Upload size limit in MiB.")] = 20.0,
    ssl_cert: CertOption = None,
    ssl_key: KeyOption = None,
) -> None:
    """Serve the HTTP API (POST /predict, POST /explain, GET /health, GET /models; docs at /docs)."""
    import uvicorn

    from dermxai.app.api import create_app

    check_port(port)
    if not 0 < max_mib <= 1024:
        raise ValueError(f"--max-mib must be above 0 and at most 1024, not {max_mib}")
    _check_tls(ssl_cert, ssl_key)
    api = create_app(model, max_bytes=int(max_mib * 1024 * 1024))
    uvicorn.run(api, host=host, port=port, ssl_certfile=ssl_cert, ssl_keyfile=ssl_key)
