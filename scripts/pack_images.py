"""Pack a HAM10000-layout folder into two files that travel with the working tree to a lent GPU, and back.

    python scripts/pack_images.py pack --data ../shared/data/ham10000 --out device_data/ham10000
    python scripts/pack_images.py unpack device_data/ham10000 --out device_data/ham10000_unpacked

``pack`` writes ``NAME.bin`` (the images' bytes, one after another: the original JPEG files unchanged unless
``--webp-quality`` re-encodes them smaller) and ``NAME.csv`` (the metadata rows with each image's offset and
length). ``unpack`` rebuilds a folder that every ``dermxai`` command reads (images/ + HAM10000_metadata.csv).
It prints the packed size and refuses to exceed ``--budget-mib`` (what may travel beside the tracked tree).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

METADATA = "HAM10000_metadata.csv"


def pack(data: Path, out: Path, webp_quality: int | None, budget_mib: float) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from dermxai.data import load_dataset

    table = load_dataset(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    offsets, lengths, offset = [], [], 0
    with open(out.with_suffix(".bin"), "wb") as blob:
        for path in table["path"]:
            if webp_quality is None:
                payload = Path(path).read_bytes()
            else:
                buffer = io.BytesIO()
                with Image.open(path) as image:
                    image.convert("RGB").save(buffer, "WEBP", quality=webp_quality)
                payload = buffer.getvalue()
            blob.write(payload)
            offsets.append(offset)
            lengths.append(len(payload))
            offset += len(payload)
    rows = table.drop(columns=[c for c in ("path", "mask_path") if c in table]).assign(offset=offsets, length=lengths)
    rows["suffix"] = ".jpg" if webp_quality is None else ".webp"
    rows.to_csv(out.with_suffix(".csv"), index=False)
    size = offset + out.with_suffix(".csv").stat().st_size
    print(f"packed {len(rows)} images into {out}.bin + .csv: {size / 2**20:.1f} MiB (budget {budget_mib:.0f} MiB)")
    if size > budget_mib * 2**20:
        out.with_suffix(".bin").unlink()
        raise SystemExit(f"packed data ({size / 2**20:.1f} MiB) exceed the budget; use --webp-quality 85")
    return size


def unpack(packed: Path, out: Path) -> Path:
    rows = pd.read_csv(packed.with_suffix(".csv"))
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(packed.with_suffix(".bin"), "rb") as blob:
        for image_id, offset, length, suffix in rows[["image_id", "offset", "length", "suffix"]].itertuples(
            index=False
        ):
            blob.seek(int(offset))
            (images / f"{image_id}{suffix}").write_bytes(blob.read(int(length)))
    rows.drop(columns=["offset", "length", "suffix"]).to_csv(out / METADATA, index=False)
    print(f"unpacked {len(rows)} images into {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("--data", type=Path, required=True)
    packing.add_argument("--out", type=Path, required=True, help="NAME: writes NAME.bin and NAME.csv")
    packing.add_argument("--webp-quality", type=int, help="re-encode as WebP at this quality (default: keep bytes)")
    packing.add_argument("--budget-mib", type=float, default=38.0)
    unpacking = commands.add_parser("unpack")
    unpacking.add_argument("packed", type=Path, help="NAME given to pack")
    unpacking.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.data, args.out, args.webp_quality, args.budget_mib)
    else:
        unpack(args.packed, args.out)


if __name__ == "__main__":
    main()
