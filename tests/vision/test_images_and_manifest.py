"""Decoding, augmentation, and the manifest dataset with its quarantine."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest

from conftest import require_data

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'headrace[vision]')")

from PIL import Image  # noqa: E402
from vision_helpers import photo_bytes  # noqa: E402

from headrace.config.vision import ImageCheckSpec  # noqa: E402
from headrace.errors import DataError  # noqa: E402
from headrace.store import Store  # noqa: E402
from headrace.vision.folder import check_image  # noqa: E402
from headrace.vision.images import Augment, batch_center, decode, decode_to_tensor  # noqa: E402
from headrace.vision.manifest import manifest_at, record_scan, scan_folder  # noqa: E402

pytestmark = pytest.mark.vision


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_refuses_bad_bytes_with_one_line():
    for data, expected in [
        (b"", "empty"),
        (b"definitely not an image", "cannot be decoded"),
        (photo_bytes("red", 1)[:200], "cannot be decoded"),  # a truncated JPEG
    ]:
        with pytest.raises(DataError, match=expected) as info:
            decode(data, what="image 3")
        assert "\n" not in str(info.value)
        assert "image 3" in str(info.value) or expected == "empty"


def test_decode_flattens_transparency_and_resizes():
    rgba = Image.new("RGBA", (80, 40), (255, 0, 0, 0))
    img = decode(_png(rgba))
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    tensor = decode_to_tensor(photo_bytes("blue", 2, size=(300, 200)), 64)
    assert tensor.dtype == torch.uint8 and tensor.shape[0] == 3 and min(tensor.shape[1:]) == 64
    assert batch_center([tensor], 48).shape == (1, 3, 48, 48)


def test_augment_is_random_but_repeatable():
    images = [decode_to_tensor(photo_bytes("red", i), 96) for i in range(4)]
    a = Augment(64, generator=torch.Generator().manual_seed(1))(images)
    b = Augment(64, generator=torch.Generator().manual_seed(1))(images)
    c = Augment(64, generator=torch.Generator().manual_seed(2))(images)
    assert a.shape == (4, 3, 64, 64) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_checks_name_the_reason():
    checks = ImageCheckSpec()
    assert check_image(photo_bytes("red", 3), checks)[1] is None
    gif = io.BytesIO()
    Image.new("P", (64, 64), 3).save(gif, format="GIF")
    assert "format GIF is not allowed" in (check_image(gif.getvalue(), checks)[1] or "")
    assert (check_image(_png(Image.new("RGB", (100, 100), "white")), checks)[1] or "").startswith("blank")
    assert (check_image(photo_bytes("red", 4, size=(20, 20)), checks)[1] or "").startswith("too small")
    assert (check_image(b"GIF89a-garbage", checks)[1] or "").startswith("undecodable")
    assert check_image(gif.getvalue(), ImageCheckSpec(formats=["GIF"], min_entropy=0))[1] is None


def test_the_placeholder_gif_of_the_real_set_is_refused():
    gif = require_data("images", "train", "ants", "imageNotFound.gif")
    facts, reason, _ = check_image(gif.read_bytes(), ImageCheckSpec())
    assert facts["format"] == "GIF" and reason is not None and "GIF" in reason


def test_scan_records_a_manifest_and_quarantines_bad_files(tmp_path: Path):
    root = tmp_path / "images"
    for split, n in (("train", 3), ("val", 2)):
        for kind in ("red", "blue"):
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}.jpg").write_bytes(photo_bytes(kind, i + (10 if split == "val" else 0)))
    (root / "train" / "red" / "truncated.jpg").write_bytes(photo_bytes("red", 50)[:250])
    (root / "train" / "red" / "blank.png").write_bytes(_png(Image.new("RGB", (64, 64), "black")))
    (root / "train" / "blue" / "readme.txt").write_text("hello")
    (root / "val" / "blue" / "copy.jpg").write_bytes((root / "train" / "blue" / "0.jpg").read_bytes())
    (root / "train" / ".DS_Store").write_bytes(b"\0")  # hidden: not listed at all

    scan = scan_folder(root)
    assert scan.layout == "train/val" and scan.classes == ["blue", "red"]
    assert scan.manifest.height == 10
    assert scan.manifest.group_by("split").len().sort("split").rows() == [("train", 6), ("val", 4)]
    assert set(scan.manifest.columns) >= {"path", "label", "split", "size", "sha256", "width", "height"}
    reasons = dict(scan.quarantine.select("path", "reason").iter_rows())
    assert reasons["train/red/truncated.jpg"].startswith("undecodable")
    assert reasons["train/red/blank.png"].startswith("blank")
    assert reasons["train/blue/readme.txt"].startswith("undecodable")
    assert reasons["val/blue/copy.jpg"] == "duplicate of train/blue/0.jpg"

    store = Store(tmp_path / "lake")
    version, committed = record_scan(store, "imgs", scan, source="test")
    assert committed and version == 0
    assert store.read("imgs__quarantine").height == 4
    again, committed = record_scan(store, "imgs", scan_folder(root), source="test")
    assert (again, committed) == (0, False)  # same files: the same version
    (root / "train" / "red" / "new.jpg").write_bytes(photo_bytes("red", 77))
    newer, committed = record_scan(store, "imgs", scan_folder(root), source="test")
    assert committed and newer == 1
    assert manifest_at(store, "imgs", 0)[1].height == 10
    latest = manifest_at(store, "imgs")[1]
    assert latest.height == 11 and "train/red/new.jpg" in latest["path"].to_list()


def test_class_folders_without_splits_are_split_stratified_and_stably(tmp_path: Path):
    root = tmp_path / "flat"
    for kind, n in (("red", 10), ("blue", 5)):
        (root / kind).mkdir(parents=True)
        for i in range(n):
            (root / kind / f"{i}.jpg").write_bytes(photo_bytes(kind, i))
    scan = scan_folder(root, val_split=0.2)
    counts = dict(scan.manifest.filter(pl.col("split") == "val").group_by("label").len().rows())
    assert scan.layout == "split" and counts == {"red": 2, "blue": 1}
    val_before = set(scan.manifest.filter(pl.col("split") == "val")["sha256"])
    (root / "red" / "extra.jpg").write_bytes(photo_bytes("red", 500))
    rescan = scan_folder(root, val_split=0.2)
    val_after = set(rescan.manifest.filter(pl.col("split") == "val")["sha256"])
    assert len(val_before & val_after) >= 2  # adding a file barely moves the split


def test_a_folder_with_only_train_is_an_error(tmp_path: Path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="needs both train/ and val/"):
        scan_folder(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        scan_folder(tmp_path / "nope")
