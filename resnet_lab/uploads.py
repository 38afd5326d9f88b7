"""Turn an uploaded file into a network input: a 32x32 uint8 RGB image, or a clear ``UploadError``.

Anything a student drops on the page is untrusted: a photo from a phone (huge, EXIF-rotated JPEG), a logo with
transparency, a 16-bit scan, a renamed PDF, a half-downloaded file, or a "decompression bomb" (a few KB that
declare a gigapixel canvas). ``load_upload`` checks the size in bytes, opens only PNG, JPEG and WebP, refuses a
declared canvas larger than ``MAX_PIXELS`` *before* decoding, decodes fully (so truncation shows up here, not
later), converts any mode to RGB and resizes, and says in ``notes`` what it changed.
"""

from __future__ import annotations

import io

import numpy as np

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 40-megapixel photo is fine; a declared 100k x 100k canvas is refused unread
FORMATS = ("PNG", "JPEG", "WEBP")
SIZE = 32


class UploadError(ValueError):
    """The upload cannot be used; the message says why, in words a student understands."""


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def load_upload(data: bytes, name: str = "upload", size: int = SIZE) -> tuple[np.ndarray, list[str]]:
    """Decode, validate and convert an uploaded image. Returns ``(uint8 (size, size, 3) RGB, notes)``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise UploadError(f"{name} is empty (0 bytes).")
    if len(data) > MAX_BYTES:
        raise UploadError(f"{name} is {_mb(len(data))}; uploads are limited to {_mb(MAX_BYTES)}. "
                          "The network sees 32×32 pixels anyway: a smaller copy loses nothing.")
    try:
        img = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except UnidentifiedImageError:
        claimed = _claimed_format(data)
        if claimed:  # the signature says PNG/JPEG/WebP but its decoder refused the header: damaged, not foreign
            raise UploadError(f"{name} is a damaged {claimed} file: it starts like one, but "
                              f"{_why_refused(data, claimed)}. Download or export it again.") from None
        raise UploadError(f"{name} is not a PNG, JPEG or WebP image{_detected(data)}. "
                          "Save it as one of those and try again.") from None
    except Image.DecompressionBombError:
        raise UploadError(f"{name} declares an enormous image (a 'decompression bomb'); refused without "
                          "decoding it.") from None
    except Exception as exc:  # a corrupt header can raise almost anything inside a decoder
        raise UploadError(f"{name} could not be read as an image ({_first_line(exc)}).") from None

    with img:
        width, height = img.size
        if width < 1 or height < 1:
            raise UploadError(f"{name} has no pixels ({width}×{height}).")
        if width * height > MAX_PIXELS:
            raise UploadError(f"{name} declares {width:,}×{height:,} pixels ({width * height / 1e6:,.0f} "
                              f"megapixels); the limit is {MAX_PIXELS / 1e6:.0f}. Refused without decoding it "
                              "(a file this small with a canvas this big is a 'decompression bomb').")
        notes: list[str] = []
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            notes.append(f"animated image: the first of its {frames} frames is used")
        mode = img.mode
        if img.format == "JPEG" and mode in ("RGB", "L"):
            # decode a big JPEG at 1/2..1/8 scale directly: much faster, and we shrink to 32 px anyway
            img.draft(mode, (size * 4, size * 4))
        try:
            img.load()
        except Image.DecompressionBombError:
            raise UploadError(f"{name} declares an enormous image (a 'decompression bomb'); refused.") from None
        except Exception as exc:  # OSError "image file is truncated", SyntaxError for broken chunks, ...
            raise UploadError(f"{name} is damaged or truncated: the image data ends early or is corrupt "
                              f"({_first_line(exc)}). Download or export it again.") from None

        oriented = ImageOps.exif_transpose(img)
        if oriented is not None and oriented is not img:
            if oriented.size != img.size or _exif_orientation(img) not in (None, 1):
                notes.append("rotated upright using the photo's EXIF orientation")
            img = oriented
        rgb = to_rgb(img, mode, notes)

    w, h = rgb.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
        notes.append(f"centre-cropped from {width}×{height} to a square, keeping the middle")
    if rgb.size != (size, size):
        from PIL import Image as _Image

        rgb = rgb.resize((size, size), _Image.Resampling.LANCZOS, reducing_gap=3.0)
        notes.append(f"resized from {width}×{height} to {size}×{size}, the network's input size: fine detail "
                     "is lost, as in CIFAR-10 itself")
    array = np.asarray(rgb, dtype=np.uint8)
    if array.shape != (size, size, 3):  # pragma: no cover - every branch above ends in RGB
        raise UploadError(f"{name} could not be converted to RGB (got shape {array.shape}).")
    return np.ascontiguousarray(array), notes


def to_rgb(img, mode: str | None = None, notes: list[str] | None = None):
    """Any PIL mode as an RGB image: 16-bit and 32-bit grayscale scaled to 8 bits (PIL's own convert clips them,
    which turns a mid-grey 16-bit scan white), transparency composited on white. The one conversion routine of
    the project: uploads use it, and so does ``resnet_lab.data`` for every image of a class-folder source.
    ``mode`` is the mode before any transposition (defaults to ``img.mode``); ``notes`` collects what changed."""
    from PIL import Image

    mode = mode or img.mode
    notes = notes if notes is not None else []

    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if (mode.startswith("I;16") or values.max() > 255) else 255.0
        gray = np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8)
        notes.append(f"{'16-bit' if top > 255 else mode} grayscale scaled to 8 bits and copied to R, G and B")
        return Image.fromarray(gray, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append(f"transparent pixels ({mode}) put on a white background")
        else:
            notes.append(f"converted from {mode} to RGB (its alpha channel was fully opaque)")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        label = {"L": "grayscale", "1": "black-and-white", "P": "palette", "CMYK": "CMYK", "YCbCr": "YCbCr"}
        notes.append(f"converted from {label.get(mode, mode)} to RGB"
                     + (" (the three channels are equal)" if mode in ("L", "1") else ""))
        return img.convert("RGB")
    return img.copy()  # the caller closes the file-backed original


def _exif_orientation(img) -> int | None:
    try:
        return img.getexif().get(0x0112)
    except Exception:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _claimed_format(data: bytes) -> str | None:
    """The accepted format a file's signature claims (PNG, JPEG, WebP), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _why_refused(data: bytes, claimed: str) -> str:
    """What that format's decoder says about the header (PIL's Image.open keeps it to itself), in a few words."""
    from PIL import Image

    Image.init()
    opener = Image.OPEN.get(claimed.upper())
    if opener is not None:
        try:
            opener[0](io.BytesIO(data), "").close()
        except Exception as exc:  # e.g. SyntaxError("broken PNG file (bad header checksum in b'IHDR')")
            return f"its header is corrupt ({_first_line(exc)})"
    return "its header is corrupt"


def _detected(data: bytes) -> str:
    """A hint of what the file is instead, from its first bytes."""
    head = data[:16]
    for magic, what in ((b"%PDF", "a PDF"), (b"GIF8", "a GIF"), (b"BM", "a BMP"), (b"PK\x03\x04", "a ZIP archive"),
                        (b"II*\x00", "a TIFF"), (b"MM\x00*", "a TIFF"), (b"<svg", "an SVG"), (b"<?xml", "XML")):
        if head.startswith(magic):
            return f" (it looks like {what})"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return " (it looks like HEIC/AVIF or a video)"
    return ""
