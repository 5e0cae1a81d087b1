"""Hashing on the device: formats, the fast PDQ path's fidelity, and broken files."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hashexchange_client import hashing
from hashexchange_client.hashing import HashingError
from PIL import Image

HEX = {
    "pdq": r"[0-9a-f]{64}",
    "md5": r"[0-9a-f]{32}",
    "sha256": r"[0-9a-f]{64}",
    "phash": r"[0-9a-f]{16}",
    "dhash": r"[0-9a-f]{16}",
    "video_md5": r"[0-9a-f]{32}",
}
IMAGE_TYPES = ("pdq", "md5", "sha256", "phash", "dhash")

MakePhoto = Callable[..., Image.Image]
MakeJpeg = Callable[..., bytes]


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_every_image_type_has_its_format(tmp_path: Path, make_photo: MakePhoto, suffix: str) -> None:
    path = tmp_path / f"photo{suffix}"
    make_photo(800, 600, 5).save(path)
    results = hashing.hash_file(path, IMAGE_TYPES)
    assert [r.signal_type for r in results] == list(IMAGE_TYPES)
    for result in results:
        assert re.fullmatch(HEX[result.signal_type], result.value), result
        assert result.path == path
    by_type = {r.signal_type: r for r in results}
    data = path.read_bytes()
    assert by_type["md5"].value == hashlib.md5(data).hexdigest()
    assert by_type["sha256"].value == hashlib.sha256(data).hexdigest()
    assert isinstance(by_type["pdq"].quality, int)
    assert 50 <= by_type["pdq"].quality <= 100
    assert all(r.quality is None for r in results if r.signal_type != "pdq")


def test_video_is_hashed_as_bytes_and_never_decoded(tmp_path: Path) -> None:
    path = tmp_path / "clip.MOV"
    data = b"\x00\x00\x00\x14ftypqt  " + bytes(range(256)) * 5000  # > one read chunk
    path.write_bytes(data)
    results = hashing.hash_file(path, ("pdq", "video_md5", "sha256", "phash"))
    assert [(r.signal_type, r.value) for r in results] == [
        ("video_md5", hashlib.md5(data).hexdigest()),
        ("sha256", hashlib.sha256(data).hexdigest()),
    ]


def test_video_md5_does_not_apply_to_images(tmp_path: Path, make_photo: MakePhoto) -> None:
    path = tmp_path / "a.png"
    make_photo(100, 80).save(path)
    assert hashing.hash_file(path, ("video_md5",)) == []


def test_pdq_of_12_megapixel_jpeg_stays_close_to_full_resolution(
    tmp_path: Path, make_photo: MakePhoto, make_jpeg: MakeJpeg
) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(make_jpeg(make_photo(4000, 3000, 7)))

    reduced = hashing.load_image(path)
    assert max(reduced.size) <= hashing.MAX_SIDE
    (fast,) = hashing.hash_file(path, ("pdq",))

    with Image.open(path) as full:
        full_rgb = full.convert("RGB")
    assert full_rgb.size == (4000, 3000)
    reference, _ = hashing.pdq_hash(full_rgb)

    assert hamming(fast.value, reference) <= 10


def test_large_non_jpeg_is_reduced_too(tmp_path: Path, make_photo: MakePhoto) -> None:
    path = tmp_path / "big.png"
    make_photo(3000, 1000, 8).save(path)
    image = hashing.load_image(path)
    assert image.mode == "RGB"
    assert max(image.size) <= hashing.MAX_SIDE
    assert image.size == (1000, 334)  # reduced by ceil(3000 / 1024) = 3


def test_exif_orientation_is_applied(tmp_path: Path, make_photo: MakePhoto) -> None:
    picture = make_photo(400, 300, 9)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    tagged = tmp_path / "tagged.png"
    picture.save(tagged, exif=exif)
    upright = tmp_path / "upright.png"
    picture.transpose(Image.Transpose.ROTATE_270).save(upright)

    (tagged_hash,) = hashing.hash_file(tagged, ("pdq",))
    (upright_hash,) = hashing.hash_file(upright, ("pdq",))
    assert tagged_hash.value == upright_hash.value
    assert hashing.load_image(tagged).size == (300, 400)


def test_modes_other_than_rgb(tmp_path: Path, make_photo: MakePhoto) -> None:
    picture = make_photo(200, 150, 10)
    variants = {
        "gray.png": picture.convert("L"),
        "palette.gif": picture.convert("P"),
        "alpha.png": picture.convert("RGBA"),
    }
    for name, image in variants.items():
        image.save(tmp_path / name)
        (result,) = hashing.hash_file(tmp_path / name, ("pdq",))
        assert re.fullmatch(HEX["pdq"], result.value), name


def test_blank_image_has_low_pdq_quality(tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), (120, 120, 120)).save(path)
    (result,) = hashing.hash_file(path, ("pdq",))
    assert result.quality is not None and result.quality < 50


def test_undecodable_image_gives_a_clear_error(tmp_path: Path, make_photo: MakePhoto, make_jpeg: MakeJpeg) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(HashingError, match=r"garbage\.jpg: cannot decode image"):
        hashing.hash_file(garbage, ("pdq",))

    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(make_jpeg(make_photo(640, 480, 11))[:2000])
    with pytest.raises(HashingError, match=r"truncated\.jpg: cannot decode image"):
        hashing.hash_file(truncated, ("phash",))

    # Byte digests need no decoding, so they still work for the same file.
    (md5,) = hashing.hash_file(garbage, ("md5",))
    assert md5.value == hashlib.md5(garbage.read_bytes()).hexdigest()

    outcome = hashing.hash_one(garbage, ("pdq", "md5"))
    assert outcome.results == ()
    assert outcome.error is not None and "garbage.jpg" in outcome.error


@pytest.mark.parametrize(("name", "signal_type"), [("nope.jpg", "pdq"), ("nope.jpg", "md5"), ("nope.mp4", "video_md5")])
def test_missing_file(tmp_path: Path, name: str, signal_type: str) -> None:
    with pytest.raises(HashingError, match="no such file"):
        hashing.hash_file(tmp_path / name, (signal_type,))


def test_iter_files_walks_directories_and_keeps_named_files(image_dir: Path) -> None:
    found = [p.relative_to(image_dir).as_posix() for p in hashing.iter_files([image_dir])]
    assert found == ["a.jpg", "broken.jpg", "clip.mp4", "nested/b.png"]
    # A file named explicitly is tried whatever its extension.
    assert list(hashing.iter_files([image_dir / "notes.txt"])) == [image_dir / "notes.txt"]


def test_hash_files_in_parallel_matches_serial(image_dir: Path) -> None:
    files = list(hashing.iter_files([image_dir]))
    serial = list(hashing.hash_files(files, ("pdq", "video_md5")))
    parallel = list(hashing.hash_files(files, ("pdq", "video_md5"), jobs=2))
    assert serial == parallel
    assert [o.path.name for o in serial] == ["a.jpg", "broken.jpg", "clip.mp4", "b.png"]
    errors = [o for o in serial if o.error]
    assert len(errors) == 1 and "broken.jpg" in str(errors[0].error)
    assert {r.signal_type for o in serial for r in o.results} == {"pdq", "video_md5"}


def test_parse_types() -> None:
    assert hashing.parse_types("pdq, MD5,pdq,") == ("pdq", "md5")
    assert hashing.parse_types(["sha256"]) == ("sha256",)
    with pytest.raises(ValueError, match="unknown signal type"):
        hashing.parse_types("pdq,sha1")
    with pytest.raises(ValueError, match="no signal types"):
        hashing.parse_types(" , ")


def test_pdq_hex_is_most_significant_bit_first() -> None:
    # A left/right split image: the hash must be the packing of pdqhash's bit vector,
    # most significant bit first, as Meta's reference prints it.
    import pdqhash

    pixels = np.zeros((128, 128, 3), np.uint8)
    pixels[:, 64:] = 255
    pixels[32:96, 32:96] = 128
    bits, _ = pdqhash.compute(pixels)
    value, _ = hashing.pdq_hash(Image.fromarray(pixels))
    assert value == "".join(f"{int(''.join(map(str, bits[i : i + 4])), 2):x}" for i in range(0, 256, 4))
