"""Rebuild the committed test fixture tests/fixtures/ham_mini from a full HAM10000 copy.

Five images per diagnosis, including one lesion with several images and one reviewed near-duplicate pair
filed under different lesion ids; images spread over two sub-folders, one with an upper-case extension.
Usage: python scripts/make_fixture.py ../shared/data/ham10000
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

PER_CLASS = 5
MULTI_IMAGE_LESION = "HAM_0007409"  # bkl, three images
NEAR_DUPLICATES = ("ISIC_0030074", "ISIC_0025226")  # nv, different lesion ids, reviewed as one lesion
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ham_mini"


def main(source: Path) -> None:
    meta = pd.read_csv(source / "HAM10000_metadata.csv")
    chosen = pd.concat([meta[meta.lesion_id == MULTI_IMAGE_LESION], meta[meta.image_id.isin(NEAR_DUPLICATES)]])
    for dx, rows in meta.sort_values("image_id").groupby("dx"):
        need = PER_CLASS - int((chosen.dx == dx).sum())
        rows = rows[~rows.lesion_id.isin(chosen.lesion_id)].drop_duplicates("lesion_id")
        chosen = pd.concat([chosen, rows.head(max(0, need))])
    shutil.rmtree(OUT, ignore_errors=True)
    for n, image_id in enumerate(chosen.image_id):
        part = OUT / "images" / f"HAM10000_images_part_{1 + n % 2}"
        part.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "images" / f"{image_id}.jpg", part / f"{image_id}.{'JPG' if n == 0 else 'jpg'}")
        (OUT / "masks").mkdir(exist_ok=True)
        shutil.copy(source / "masks" / f"{image_id}_segmentation.png", OUT / "masks")
    chosen.to_csv(OUT / "HAM10000_metadata.csv", index=False)
    (OUT / "README.md").write_text(
        f"# ham_mini: {len(chosen)} images of HAM10000 for tests\n\n"
        "A subset of the HAM10000 dataset (200x150 copy) with the official lesion masks, made by "
        "`scripts/make_fixture.py`.\n\nSource: Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large "
        "collection of multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 "
        "(2018), doi:10.1038/sdata.2018.161; data doi:10.7910/DVN/DBW86T. Masks: Tschandl et al. 2020.\n"
        "Licence: CC BY-NC 4.0 (https://creativecommons.org/licenses/by-nc/4.0/): non-commercial use, "
        "with attribution.\n"
    )
    print(f"{len(chosen)} images -> {OUT}")
    print(chosen.dx.value_counts().to_string())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
