"""Dataset indexing: the three layouts, and one clear error per kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from dermxai.data import CLASSES, DatasetError, load_dataset
from dermxai.data.index import COLUMNS


def test_ham10000_layout_finds_images_in_subfolders_any_case_and_masks(fixture_dir, fixture_table):
    table = fixture_table
    assert list(table.columns) == COLUMNS
    assert len(table) == 35 and set(table["dx"]) == set(CLASSES)
    assert table["path"].map(lambda p: Path(p).is_file()).all()
    assert {Path(p).parent.name for p in table["path"]} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert any(p.endswith(".JPG") for p in table["path"])
    assert table["mask_path"].notna().all()
    assert table.groupby("lesion_id").size().max() == 3
    assert table["age"].dtype.kind == "f"


def test_isic_task3_ground_truth_csv(tmp_path, fixture_dir, fixture_table):
    one_hot = pd.DataFrame({"image": fixture_table["image_id"]})
    for code in ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]:
        one_hot[code] = (fixture_table["dx"] == code.lower()).astype(float)
    csv = tmp_path / "ISIC2018_Task3_GroundTruth.csv"
    one_hot.to_csv(csv, index=False)
    table = load_dataset(csv, images=fixture_dir / "images")
    assert table["dx"].tolist() == fixture_table["dx"].tolist()
    assert (table["lesion_id"] == table["image_id"]).all()  # no lesion ids: each image its own group


def test_plain_csv_next_to_images(tmp_path, fixture_table):
    for path in fixture_table["path"][:4]:
        shutil.copy(path, tmp_path)
    fixture_table[["image_id", "dx"]].head(4).to_csv(tmp_path / "labels.csv", index=False)
    table = load_dataset(tmp_path / "labels.csv")
    assert len(table) == 4 and table["mask_path"].isna().all()


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "image_id,dx\nISIC_0024307,nv\nISIC_0024310,melanoma\nISIC_0024311,cancer\n",
            r"labels\.csv: unknown diagnosis label in 2 row\(s\): line 3: dx='melanoma', line 4: dx='cancer'; expected one of akiec",
        ),
        (
            "image_id,dx\nISIC_0024307,nv\nISIC_0024307,mel\n",
            r"labels\.csv: duplicate image id in 1 row\(s\): line 3: image_id='ISIC_0024307'",
        ),
        ("name,label\na,nv\n", r"labels\.csv: unrecognised CSV header \['name', 'label'\]"),
        ("image_id,dx\n", r"labels\.csv: the CSV has a header but no rows"),
        ("", r"labels\.csv: not a readable CSV file"),
        ('image_id,dx\n"ISIC_1,nv\n', r"labels\.csv: not a readable CSV file"),
        (
            "image_id,dx\nISIC_0024307,nv,extra,cells\n",
            r"labels\.csv: not a readable CSV file \(the header has 2 fields; line 2 has 4\)",
        ),
        (
            "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0024307,1,1,0,0,0,0,0\nISIC_0024310,0,0,0,0,0,0,0\n",
            r"labels\.csv: label columns are not one-hot .* in 2 row\(s\): line 2: image='ISIC_0024307', line 3",
        ),
        (
            "image_id,dx,age\nISIC_0024307,nv,forty\n",
            r"labels\.csv: age is not a number in 1 row\(s\): line 2: age='forty'",
        ),
    ],
)
def test_bad_csv_gives_one_clear_error(tmp_path, fixture_dir, text, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(write(tmp_path, text), images=fixture_dir)


def test_binary_file_is_not_a_csv(tmp_path, fixture_dir):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\xff\xfe")
    with pytest.raises(DatasetError, match=r"labels\.csv: not a readable CSV file"):
        load_dataset(path, images=fixture_dir)


def test_missing_images_are_named_with_their_rows(tmp_path, fixture_dir):
    path = write(tmp_path, "image_id,dx\nISIC_0024307,nv\nISIC_9999998,mel\nISIC_9999999,bcc\n")
    with pytest.raises(
        DatasetError,
        match=(
            r"labels\.csv: image not found under .*ham_mini in 2 row\(s\): "
            r"line 3: image_id='ISIC_9999998', line 4: image_id='ISIC_9999999'"
        ),
    ):
        load_dataset(path, images=fixture_dir)


def test_many_offending_rows_are_summarised(tmp_path, fixture_dir):
    rows = "".join(f"ISIC_{n},xx\n" for n in range(12))
    with pytest.raises(DatasetError, match=r"in 12 row\(s\): line 2: .*line 6: dx='xx' \(and 7 more\)"):
        load_dataset(write(tmp_path, "image_id,dx\n" + rows), images=fixture_dir)


def test_missing_folder_metadata_and_duplicate_files(tmp_path, fixture_dir):
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no HAM10000_metadata.csv in this folder"):
        load_dataset(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(fixture_dir, copy)
    first = next((copy / "images").rglob("*.jpg"))
    shutil.copy(first, copy / first.name)
    with pytest.raises(DatasetError, match=f"image id {first.stem} found twice"):
        load_dataset(copy)
