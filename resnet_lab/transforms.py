"""The assignment's train augmentation, two ways that agree pixel for pixel.

Pipeline (train): pad ``pad`` px on each side → random ``size``×``size`` crop → horizontal flip (p=0.5)
→ cutout: one ``cutout``×``cutout`` hole filled with the dataset mean (p=0.5) → normalize → CHW float.
Test images are only normalized.

1. ``albumentations_train`` / ``albumentations_test``: the course's per-image albumentations pipeline
   (PadIfNeeded → RandomCrop → HorizontalFlip → CoarseDropout → Normalize → ToTensorV2), for a DataLoader.
2. ``augment_batch`` (alias ``gpu_augment``): the same ops on a whole uint8 batch at once with torch
   indexing, on the GPU (or CPU), driven by explicit per-image ``AugmentParams``.
   ``apply_params_albumentations`` runs albumentations' own op classes with those same parameters; the
   tests check the two agree.

Conventions shared by both paths:

* Border modes (names as numpy/torch use them): ``"reflect"`` = cv2.BORDER_REFLECT_101 = albumentations'
  PadIfNeeded default in the course's version (``dcb|abcd|cba``, the edge pixel is not repeated);
  ``"symmetric"`` = cv2.BORDER_REFLECT (edge repeated); ``"replicate"``, ``"wrap"``, ``"constant"`` (zeros).
* ``crop_y``/``crop_x``: top-left of the crop window in the padded image, ``0..2*pad``.
* The flip is applied after the crop; the hole is placed after the flip, in final image coordinates.
* ``hole_y``/``hole_x``: the hole's top-left. Sampled in ``0..size-cutout`` like albumentations 2.x
  CoarseDropout, so the hole always lies fully inside the image; both implementations clip a hole given
  partly outside the image (negative or too large offsets) instead of failing.
* Hole fill: the dataset mean as uint8 pixel values, ``round(mean*255)`` per channel, written into the
  uint8 image before normalization (CoarseDropout writes its ``fill`` into the uint8 image the same way).
  After normalization a hole is therefore ~0, not exactly 0 (off by < 0.5/255/std).
* Normalize: ``(x/255 - mean) / std`` per channel, float32.

torch is imported at module level (this module is on the training path); albumentations and cv2 only
inside the functions that need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
import torch

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
BORDERS = ("reflect", "symmetric", "replicate", "wrap", "constant")
_CV2_BORDER = {"reflect": "BORDER_REFLECT_101", "symmetric": "BORDER_REFLECT", "replicate": "BORDER_REPLICATE",
               "wrap": "BORDER_WRAP", "constant": "BORDER_CONSTANT"}


def fill_value(mean: Sequence[float]) -> tuple[int, ...]:
    """The cutout fill in pixel values: the mean rounded to uint8 (what both implementations write)."""
    return tuple(int(round(float(m) * 255)) for m in mean)


def _check_border(border: str) -> str:
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    return border


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass
class AugmentParams:
    """Per-image augmentation parameters for a batch of N images (all 1-D tensors of length N).

    crop_y, crop_x: int64, crop window top-left in the padded image (0..2*pad).
    flip: bool, flip horizontally after cropping.
    hole_y, hole_x: int64, cutout hole top-left in the final image (0..size-cutout when sampled).
    cut: bool, whether this image gets the hole.
    """

    crop_y: torch.Tensor
    crop_x: torch.Tensor
    flip: torch.Tensor
    hole_y: torch.Tensor
    hole_x: torch.Tensor
    cut: torch.Tensor

    def __len__(self) -> int:
        return len(self.crop_y)

    def to(self, device) -> "AugmentParams":
        return AugmentParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def item(self, i: int) -> dict:
        """Image i's parameters as plain Python values."""
        return {f.name: (bool if f.name in ("flip", "cut") else int)(getattr(self, f.name)[i].item())
                for f in fields(self)}

    def __getitem__(self, index) -> "AugmentParams":
        """Parameters for a slice / index tensor of the batch."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return AugmentParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def identity(cls, n: int, pad: int = 4, device="cpu") -> "AugmentParams":
        """Centre crop, no flip, no hole: the augmentation leaves the images unchanged."""
        z = torch.zeros(n, dtype=torch.int64, device=device)
        no = torch.zeros(n, dtype=torch.bool, device=device)
        return cls(z + pad, z + pad, no, z.clone(), z.clone(), no.clone())

    @classmethod
    def from_dicts(cls, items: Sequence[Mapping], device="cpu") -> "AugmentParams":
        def col(name, dtype):
            return torch.tensor([bool(d[name]) if dtype is torch.bool else int(d[name]) for d in items],
                                dtype=dtype, device=device)

        return cls(col("crop_y", torch.int64), col("crop_x", torch.int64), col("flip", torch.bool),
                   col("hole_y", torch.int64), col("hole_x", torch.int64), col("cut", torch.bool))


def sample_params(n: int, generator: torch.Generator | None = None, pad: int = 4, cutout: int = 8,
                  size: int = 32, device="cpu", flip_p: float = 0.5, cutout_p: float = 0.5) -> AugmentParams:
    """Random parameters for n images, distributed as albumentations draws them.

    Drawn on the generator's device (CPU when no generator), then moved to ``device``.
    ``cutout_p=0.5`` is CoarseDropout's default p (the course code left it at the default).
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")

    def randint(high):
        return torch.randint(0, high, (n,), generator=generator, device=gen_device, dtype=torch.int64)

    def coin(p):
        return torch.rand(n, generator=generator, device=gen_device) < p

    crop_y, crop_x = randint(2 * pad + 1), randint(2 * pad + 1)
    flip = coin(flip_p)
    if cutout > 0:
        hole_y, hole_x = randint(size - cutout + 1), randint(size - cutout + 1)
        cut = coin(cutout_p)
    else:
        hole_y = hole_x = torch.zeros(n, dtype=torch.int64, device=gen_device)
        cut = torch.zeros(n, dtype=torch.bool, device=gen_device)
    return AugmentParams(crop_y, crop_x, flip, hole_y, hole_x, cut).to(device)


# --------------------------------------------------------------------------------------------------
# Batched torch implementation


def _as_tensor(x) -> torch.Tensor:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def _nhwc(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A NHWC view of a uint8 batch given as NHWC (as stored) or NCHW; also whether it was NCHW."""
    if x.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image batch, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"expected a batch of shape (N,H,W,3) or (N,3,H,W), got {tuple(x.shape)}")
    if x.shape[-1] == 3:
        return x, False
    if x.shape[1] == 3:
        return x.permute(0, 2, 3, 1), True
    raise ValueError(f"expected 3 colour channels first or last, got shape {tuple(x.shape)}")


def _source_index(padded: torch.Tensor, length: int, pad: int, border: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Map positions in the padded axis to source positions; for 'constant' also a validity mask."""
    i = padded - pad
    if border == "reflect":
        i = i.abs()
        i = torch.where(i >= length, 2 * (length - 1) - i, i)
    elif border == "symmetric":
        i = torch.where(i < 0, -i - 1, i)
        i = torch.where(i >= length, 2 * length - 1 - i, i)
    elif border == "wrap":
        i = i.remainder(length)
    else:  # replicate, constant
        valid = (i >= 0) & (i < length) if border == "constant" else None
        return i.clamp(0, length - 1), valid
    return i, None


# Per-batch constants, made once per device: a fresh torch.tensor(..., device="cuda") each step is a
# blocking host-to-device copy in the training loop.
@lru_cache(maxsize=32)
def _normalize_constants(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Same arithmetic as albumentations' Normalize: (v - 255*mean) * 1/(255*std).
    shift = torch.tensor([255.0 * m for m in mean], dtype=torch.float32, device=device)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32, device=device)
    return shift, scale


@lru_cache(maxsize=32)
def _fill_constant(fill: tuple, device: torch.device) -> torch.Tensor:
    return torch.tensor(fill, dtype=torch.uint8, device=device)


def augment_uint8(x, params: AugmentParams, fill: Sequence[int] = (0, 0, 0), pad: int = 4, cutout: int = 8,
                  border: str = "reflect") -> torch.Tensor:
    """Pad → crop → flip → cutout on a uint8 batch, one gather for the whole batch. Returns uint8 in the
    input's layout (NHWC in → NHWC out, NCHW in → NCHW out). ``fill`` is the hole's pixel value."""
    _check_border(border)
    x, was_nchw = _nhwc(_as_tensor(x))
    n, h, w, c = x.shape
    if len(params) != n:
        raise ValueError(f"{len(params)} augmentation parameter sets for {n} images")
    if pad >= min(h, w):
        raise ValueError(f"pad={pad} must be smaller than the image ({h}x{w})")
    p = params.to(x.device)
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    # Output pixel (r, c) reads padded pixel (crop_y + r, crop_x + c'), c' = w-1-c when flipped.
    cols_out = torch.where(p.flip[:, None], (w - 1 - ar_w)[None, :], ar_w[None, :])
    rows, row_ok = _source_index(p.crop_y[:, None] + ar_h[None, :], h, pad, border)
    cols, col_ok = _source_index(p.crop_x[:, None] + cols_out, w, pad, border)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = x[batch, rows[:, :, None], cols[:, None, :]]  # (N,H,W,C)
    if border == "constant":
        out = out * (row_ok[:, :, None] & col_ok[:, None, :])[..., None].to(out.dtype)
    if cutout > 0:
        in_rows = (ar_h[None, :] >= p.hole_y[:, None]) & (ar_h[None, :] < p.hole_y[:, None] + cutout)
        in_cols = (ar_w[None, :] >= p.hole_x[:, None]) & (ar_w[None, :] < p.hole_x[:, None] + cutout)
        hole = in_rows[:, :, None] & in_cols[:, None, :] & p.cut[:, None, None]
        fill_t = _fill_constant(tuple(int(v) for v in fill), x.device)
        out = torch.where(hole[..., None], fill_t, out)
    return out.permute(0, 3, 1, 2) if was_nchw else out


def normalize_batch(x, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD,
                    channels_last: bool = False) -> torch.Tensor:
    """uint8 NHWC or NCHW batch → float32 (N,3,H,W), ``(x/255 - mean)/std``.

    ``channels_last=True`` returns the same logical NCHW tensor in channels_last memory format (faster
    convolutions on GPUs with tensor cores, and free when the input was NHWC)."""
    x, _ = _nhwc(_as_tensor(x))
    shift, scale = _normalize_constants(tuple(float(m) for m in mean), tuple(float(s) for s in std), x.device)
    out = x.to(torch.float32)
    out = out.sub_(shift).mul_(scale).permute(0, 3, 1, 2)  # in place: one float buffer, not three
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def augment_batch(x, params: AugmentParams, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD,
                  pad: int = 4, cutout: int = 8, border: str = "reflect", channels_last: bool = False) -> torch.Tensor:
    """The train augmentation on a uint8 batch (NHWC as stored, or NCHW) on its own device, vectorised.
    Returns normalized float32 (N,3,H,W); the cutout hole is filled with ``fill_value(mean)``."""
    out = augment_uint8(x, params, fill=fill_value(mean), pad=pad, cutout=cutout, border=border)
    return normalize_batch(out, mean, std, channels_last=channels_last)


# The names docs/architecture.md uses.
gpu_augment = augment_batch
normalize = normalize_batch


def to_display(x, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD) -> np.ndarray:
    """Undo normalization for showing images: (3,H,W) or (N,3,H,W) float → uint8 HWC / NHWC numpy."""
    x = torch.as_tensor(x, dtype=torch.float32).detach().cpu()
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    img = ((x * s + m) * 255).round().clamp(0, 255).to(torch.uint8)
    return img.movedim(-3, -1).numpy()


# --------------------------------------------------------------------------------------------------
# albumentations


def _albumentations():
    """Import albumentations without its import-time PyPI version check (a network call that stalls
    offline and warns). An explicit setting of NO_ALBUMENTATIONS_UPDATE by the user wins."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def _cv2_border(border: str) -> int:
    import cv2

    return getattr(cv2, _CV2_BORDER[_check_border(border)])


def albumentations_train(mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD, pad: int = 4,
                         cutout: int = 8, border: str = "reflect", size: int = 32, flip_p: float = 0.5,
                         cutout_p: float = 0.5):
    """The course's train pipeline as an ``A.Compose``; call it as ``t(image=hwc_uint8)["image"]`` to get a
    normalized float32 CHW tensor. ``border="reflect"`` is cv2.BORDER_REFLECT_101."""
    A = _albumentations()
    from albumentations.pytorch import ToTensorV2

    ops = []
    if pad > 0:
        ops += [A.PadIfNeeded(min_height=size + 2 * pad, min_width=size + 2 * pad, border_mode=_cv2_border(border)),
                A.RandomCrop(height=size, width=size)]
    ops.append(A.HorizontalFlip(p=flip_p))
    if cutout > 0:
        ops.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(cutout, cutout),
                                   hole_width_range=(cutout, cutout), fill=fill_value(mean), p=cutout_p))
    ops += [A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    return A.Compose(ops)


def albumentations_test(mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD):
    """Test images: normalize only, to a float32 CHW tensor."""
    A = _albumentations()
    from albumentations.pytorch import ToTensorV2

    return A.Compose([A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()])


def apply_params_albumentations(img: np.ndarray, params: AugmentParams | Mapping, mean: Sequence[float] = CIFAR_MEAN,
                                std: Sequence[float] = CIFAR_STD, pad: int = 4, cutout: int = 8,
                                border: str = "reflect", index: int = 0, stages: bool = False):
    """Run albumentations' own op classes on one HWC uint8 image with explicit parameters (``params`` is an
    ``AugmentParams``, whose image ``index`` is used, or a dict like ``AugmentParams.item``).

    Returns the normalized float32 CHW numpy array, or with ``stages=True`` a dict of every step:
    ``padded``, ``cropped``, ``flipped``, ``cutout`` (uint8 HWC) and ``normalized`` (float32 CHW)."""
    A = _albumentations()
    p = params.item(index) if isinstance(params, AugmentParams) else dict(params)
    img = np.ascontiguousarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected one HWC uint8 RGB image, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    out = {}
    padded = A.PadIfNeeded(min_height=h + 2 * pad, min_width=w + 2 * pad, border_mode=_cv2_border(border)).apply(
        img, pad_top=pad, pad_bottom=pad, pad_left=pad, pad_right=pad)
    out["padded"] = padded
    y0, x0 = p["crop_y"], p["crop_x"]
    cropped = A.RandomCrop(height=h, width=w).apply(padded, crop_coords=(x0, y0, x0 + w, y0 + h))
    out["cropped"] = cropped
    flipped = A.HorizontalFlip(p=1.0).apply(cropped) if p["flip"] else cropped
    out["flipped"] = flipped
    holed = flipped
    if cutout > 0 and p["cut"]:
        # Clip like the torch path does, so a hole partly outside the image is cut to what is inside.
        x1, y1 = min(max(p["hole_x"], 0), w), min(max(p["hole_y"], 0), h)
        x2, y2 = min(max(p["hole_x"] + cutout, 0), w), min(max(p["hole_y"] + cutout, 0), h)
        if x2 > x1 and y2 > y1:
            dropout = A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(cutout, cutout),
                                      hole_width_range=(cutout, cutout), fill=fill_value(mean), p=1.0)
            holed = dropout.apply(flipped, holes=np.array([[x1, y1, x2, y2]]), seed=0)
    out["cutout"] = holed
    normalized = A.Normalize(mean=tuple(mean), std=tuple(std)).apply(np.ascontiguousarray(holed))
    out["normalized"] = np.ascontiguousarray(normalized.transpose(2, 0, 1), dtype=np.float32)
    return out if stages else out["normalized"]
