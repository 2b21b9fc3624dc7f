"""``dermxai data ...``: split, audit, cache, duplicates, download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dermxai.cli.base import DEFAULT_HASH_DISTANCE, clear_errors, console, data_app
from dermxai.options import DataOption, HashOption, ImagesOption, ReviewedOption


@data_app.command("split")
@clear_errors
def data_split(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Split CSV to write (image_id,lesion_group,split).")],
    images: ImagesOption = None,
    seed: int = 0,
    val: float = 0.15,
    test: float = 0.15,
    strategy: Annotated[str, typer.Option(help="'lesion' (grouped, honest) or 'image' (random, leaky).")] = "lesion",
    hash_distance: HashOption = DEFAULT_HASH_DISTANCE,
    duplicates: ReviewedOption = None,
) -> None:
    """Write a train/val/test split: lesion-grouped, near-duplicates merged, stratified by diagnosis."""
    from dermxai.data import load_dataset
    from dermxai.data.splits import class_shares, grouped_split, honest_groups, image_split, write_split

    table = load_dataset(data, images)
    if strategy == "image":
        split = image_split(table, val, test, seed)
    elif strategy == "lesion":
        groups = honest_groups(table, hash_distance, duplicates)
        merged = table["lesion_id"].nunique() - groups.nunique()
        console.print(
            f"{table['lesion_id'].nunique()} lesion ids -> {groups.nunique()} groups "
            f"({merged} merged by near-duplicate pairs)"
        )
        split = grouped_split(table, groups, val, test, seed)
    else:
        raise ValueError(f"--strategy must be 'lesion' or 'image', not {strategy!r}")
    write_split(split, out)
    shares = class_shares(table, split)
    report = Table(title=f"{out}  ({strategy}-level split, seed {seed})")
    report.add_column("dx")
    for column in shares.columns:
        report.add_column(
            f"{column} (n={len(split) if column == 'all' else (split['split'] == column).sum()})", justify="right"
        )
    for dx, row in shares.iterrows():
        report.add_row(dx, *(f"{100 * v:.2f}%" for v in row))
    console.print(report)
    deviation = shares.drop(columns="all").sub(shares["all"], axis=0).abs().max().max()
    console.print(f"largest class-share deviation from overall: {100 * deviation:.2f} percentage points")


@data_app.command("audit")
@clear_errors
def data_audit(
    data: DataOption,
    split: Annotated[Path, typer.Option("--split", help="Split CSV to audit.")],
    images: ImagesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    hash_distance: HashOption = DEFAULT_HASH_DISTANCE,
    duplicates: ReviewedOption = None,
) -> None:
    """Report lesions and near-duplicates crossing splits; exit 1 when anything leaks."""
    from dermxai.data import load_dataset
    from dermxai.data.audit import audit_split
    from dermxai.data.duplicates import perceptual_hashes, read_reviewed_pairs
    from dermxai.data.splits import read_split

    table = load_dataset(data, images)
    assignment = read_split(split, table)
    hashes = perceptual_hashes(table["path"].tolist())
    report = audit_split(table, assignment, hashes, hash_distance, read_reviewed_pairs(duplicates))
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_audit(report)
    if not report["leak_free"]:
        raise typer.Exit(1)


def _print_audit(report: dict) -> None:
    summary = Table(title="Leakage audit")
    for column in ("splits", "images of lesions in both", "near-duplicate pairs across", "copies of one image across"):
        summary.add_column(column, justify="right" if column != "splits" else "left")
    for pair, rows in report["lesion_crossings"].items():
        summary.add_row(
            pair,
            str(len(rows)),
            str(len(report["near_duplicate_crossings"][pair])),
            str(len(report["twin_crossings"][pair])),
        )
    console.print(summary)
    for pair, rows in report["twin_crossings"].items():
        for row in rows[:10]:
            console.print(f"  same image in {pair} ({row['kind']}): {row['image_a']} = {row['image_b']}")
    for pair, rows in report["near_duplicate_crossings"].items():
        for row in rows[:10]:
            console.print(
                f"  near-duplicate {pair}: {row['image_a']} ({row['lesion_a']}) ~ "
                f"{row['image_b']} ({row['lesion_b']}), hash distance {row['hash_distance']}"
            )
    test_n = report["split_sizes"]["test"]
    console.print(
        f"{report['test_images_with_train_sibling']} of {test_n} test images "
        f"({100 * report['test_share_with_train_sibling']:.1f}%) have a same-lesion sibling in train"
    )
    console.print(f"{report['test_images_with_train_twin']} of {test_n} test images have a copy of themselves in train")
    console.print("[green]no leakage found[/]" if report["leak_free"] else "[bold red]LEAKAGE FOUND[/]")


@data_app.command("cache")
@clear_errors
def data_cache(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Cache folder.")],
    images: ImagesOption = None,
    height: int = 150,
    width: int = 200,
) -> None:
    """Decode every image once into a memory-mapped uint8 array (skipped when the fingerprint matches)."""
    import time

    from dermxai.data import load_dataset
    from dermxai.data.cache import build_cache

    table = load_dataset(data, images)
    start = time.perf_counter()
    cache = build_cache(table, out, (height, width))
    console.print(
        f"{out}: {cache.images.shape} uint8, fingerprint {cache.fingerprint[:12]}, {time.perf_counter() - start:.1f} s"
    )


@data_app.command("duplicates")
@clear_errors
def data_duplicates(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for candidates.csv and contact sheets.")],
    images: ImagesOption = None,
    embeddings: Annotated[bool, typer.Option(help="Require CNN-embedding similarity too (slow on CPU).")] = True,
    per_sheet: int = 48,
) -> None:
    """Find near-duplicate candidates under different lesion ids and draw contact sheets to review."""
    from dermxai.data import load_dataset
    from dermxai.data.duplicates import candidate_pairs, cnn_embeddings, contact_sheet, perceptual_hashes

    table = load_dataset(data, images)
    hashes = perceptual_hashes(table["path"].tolist())
    vectors = cnn_embeddings(table["path"].tolist()) if embeddings else None
    pairs = candidate_pairs(table, hashes, vectors)
    out.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(out / "candidates.csv", index=False)
    for n, start in enumerate(range(0, len(pairs), per_sheet)):
        contact_sheet(pairs.iloc[start : start + per_sheet], table, out / f"sheet_{n:02d}.png")
    console.print(
        f"{len(pairs)} candidate pairs under different lesion ids -> {out}/candidates.csv "
        f"and {-(-len(pairs) // per_sheet)} contact sheet(s)"
    )


@data_app.command("download")
@clear_errors
def data_download(
    dest: Annotated[Path, typer.Option("--dest", help="Folder to download and unpack HAM10000 into.")],
    server: Annotated[str, typer.Option(help="Dataverse installation.")] = "https://dataverse.harvard.edu",
) -> None:
    """Fetch HAM10000 (images, metadata, lesion masks) from Harvard Dataverse, resumably, checksums verified."""
    from dermxai.data.download import download_ham10000

    saved = download_ham10000(dest, server=server)
    console.print(f"{len(saved)} file(s) verified and unpacked into {dest}")
