"""resnet_lab.uploads.load_upload: every file a student might drop on the page, good and bad, made here."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from resnet_lab.uploads import MAX_BYTES, UploadError, load_upload

RNG = np.random.default_rng(0)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def rgb(w: int = 64, h: int = 48) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG header that declares a huge canvas, with almost no pixel data: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def check(array: np.ndarray) -> None:
    assert array.dtype == np.uint8 and array.shape == (32, 32, 3) and array.flags["C_CONTIGUOUS"]


# ------------------------------------------------------------------------------------------------ accepted

def test_plain_32px_rgb_png_is_taken_as_is():
    img = rgb(32, 32)
    array, notes = load_upload(encode(img, "PNG"), "a.png")
    check(array)
    assert notes == [] and (array == np.asarray(img)).all()


def test_rgba_with_transparency_goes_on_white():
    pixels = np.zeros((32, 32, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[:, :16, 3] = 255  # left opaque red, right fully transparent
    array, notes = load_upload(encode(Image.fromarray(pixels, "RGBA"), "PNG"), "logo.png")
    check(array)
    assert (array[:, 20:] == 255).all() and (array[:, :10, 0] == 200).all()
    assert any("transparent" in n and "white" in n for n in notes)


@pytest.mark.parametrize("mode", ["L", "P", "1", "LA", "CMYK"])
def test_other_modes_become_rgb_with_a_note(mode):
    img = rgb().convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    array, notes = load_upload(encode(img, fmt), f"x.{fmt.lower()}")
    check(array)
    assert notes and any("32×32" in n for n in notes)
    if mode in ("L", "1"):
        assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()


def test_16bit_grayscale_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    array, notes = load_upload(encode(Image.fromarray(ramp), "PNG"), "scan.png")
    check(array)
    # a naive convert("RGB") clips everything above 255 to white; scaled, the ramp survives
    assert array[0, 0, 0] == 0 and array[0, -1, 0] == 255 and 100 < array[0, 16, 0] < 160
    assert any("16-bit" in n for n in notes)


def test_webp_and_big_jpeg_are_resized_and_cropped():
    array, notes = load_upload(encode(rgb(100, 60), "WEBP", lossless=True), "x.webp")
    check(array)
    assert any("centre-cropped from 100×60" in n for n in notes)
    big = Image.fromarray(np.tile(np.linspace(0, 255, 1600, dtype=np.uint8)[None, :, None], (1200, 1, 3)))
    array, notes = load_upload(encode(big, "JPEG", quality=90), "photo.jpg")
    check(array)
    assert any("resized from 1600×1200 to 32×32" in n for n in notes)
    assert array[:, 0, 0].mean() < array[:, -1, 0].mean()  # left-to-right ramp kept after crop and resize


def test_exif_rotation_is_applied():
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white, landscape
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    array, notes = load_upload(encode(img, "JPEG", exif=exif, quality=95), "phone.jpg")
    check(array)
    assert any("EXIF" in n for n in notes)
    assert array[:4].mean() > 200 and array[-4:].mean() < 60  # the white half is now on top


# ------------------------------------------------------------------------------------------------ refused

@pytest.mark.parametrize("data, name, words", [
    (b"", "empty.png", "empty"),
    (RNG.bytes(4096), "noise.png", "not a PNG, JPEG or WebP"),
    (b"%PDF-1.7\n" + RNG.bytes(500), "paper.png", "looks like a PDF"),
    (encode(rgb(), "GIF"), "anim.gif", "looks like a GIF"),
    (encode(rgb(), "BMP"), "x.bmp", "not a PNG, JPEG or WebP"),
])
def test_not_an_image_is_refused(data, name, words):
    with pytest.raises(UploadError, match=words):
        load_upload(data, name)


def test_truncated_files_are_refused():
    noisy = Image.fromarray(RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    for fmt in ("PNG", "JPEG", "WEBP"):
        data = encode(noisy, fmt)
        with pytest.raises(UploadError, match="damaged or truncated|could not be read"):
            load_upload(data[: len(data) // 2], f"half.{fmt.lower()}")


def test_too_many_bytes_is_refused_before_decoding():
    data = encode(rgb(32, 32), "PNG")
    data += b"\x00" * (MAX_BYTES + 1 - len(data))
    with pytest.raises(UploadError, match="limited to 10.0 MB"):
        load_upload(data, "huge.png")


@pytest.mark.parametrize("side", [7_000, 100_000])
def test_decompression_bomb_is_refused_without_decoding(side):
    """7,000² = 49 Mpx passes Pillow's own check but not ours; 100,000² trips Pillow's DecompressionBombError."""
    data = png_declaring(side, side)
    assert len(data) < 2000
    with pytest.raises(UploadError, match="decompression bomb"):
        load_upload(data, "bomb.png")


def test_random_bytes_never_escape_as_other_exceptions():
    valid = encode(rgb(40, 40), "PNG")
    rng = np.random.default_rng(1)
    for _ in range(60):
        data = bytearray(valid)
        for pos in rng.integers(8, len(data), 6):  # keep the signature: corrupt chunks, lengths, CRCs
            data[pos] = rng.integers(0, 256)
        try:
            array, _ = load_upload(bytes(data), "fuzz.png")
        except UploadError:
            continue
        check(array)
