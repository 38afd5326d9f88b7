"""resnet_lab.transforms: the batched torch augmentation equals albumentations' ops, op by op."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from resnet_lab import transforms as T

MEAN, STD = (0.52, 0.47, 0.41), (0.23, 0.26, 0.21)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Photo-like uint8 images: smooth gradients and blobs with texture, distinct at every edge and
    asymmetric, so a wrong pad mode, offset or flip changes pixels."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    out = []
    for _ in range(24):
        base = rng.uniform(0, 255, 3) * (1 - xx[..., None]) + rng.uniform(0, 255, 3) * yy[..., None]
        cy, cx = rng.uniform(0, 1, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.03)[..., None] * rng.uniform(-120, 120, 3)
        out.append(np.clip(0.6 * base + blob + rng.normal(0, 12, (32, 32, 3)), 0, 255))
    return np.stack(out).astype(np.uint8)


def params_for(items):
    base = {"crop_y": 4, "crop_x": 4, "flip": False, "hole_y": 0, "hole_x": 0, "cut": False}
    return T.AugmentParams.from_dicts([{**base, **d} for d in items])


def test_module_does_not_import_albumentations():
    code = ("import sys, resnet_lab.transforms; "
            "assert 'albumentations' not in sys.modules and 'cv2' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("border", T.BORDERS)
def test_pad_and_crop_match_at_every_offset(images, border):
    offsets = [(y, x) for y in range(9) for x in range(9)]
    x = np.repeat(images[:1], len(offsets), axis=0)
    params = params_for([{"crop_y": y, "crop_x": xx} for y, xx in offsets])
    ours = T.augment_uint8(x, params, pad=4, cutout=8, border=border).numpy()
    for i in range(len(offsets)):
        ref = T.apply_params_albumentations(x[i], params, pad=4, border=border, index=i, stages=True)
        assert ref["padded"].shape == (40, 40, 3)
        assert np.array_equal(ours[i], ref["cropped"]), (border, offsets[i])
    assert np.array_equal(ours[offsets.index((4, 4))], images[0])  # centre crop = the original


def test_reflect_is_reflect_101(images):
    """The default border mirrors without repeating the edge pixel (cv2.BORDER_REFLECT_101)."""
    out = T.augment_uint8(images[:1], params_for([{"crop_y": 0, "crop_x": 0}]), border="reflect").numpy()[0]
    assert np.array_equal(out[4, 3], images[0, 0, 1]) and np.array_equal(out[3, 4], images[0, 1, 0])


def test_flip_matches(images):
    params = params_for([{"crop_y": i % 9, "crop_x": (3 * i) % 9, "flip": True} for i in range(len(images))])
    ours = T.augment_uint8(images, params).numpy()
    for i in range(len(images)):
        ref = T.apply_params_albumentations(images[i], params, index=i, stages=True)
        assert np.array_equal(ours[i], ref["flipped"])
    centre = T.augment_uint8(images[:1], params_for([{"flip": True}])).numpy()[0]
    assert np.array_equal(centre, images[0, :, ::-1])


def test_hole_position_and_fill_match(images):
    spots = [(0, 0), (24, 24), (0, 24), (10, 3), (-3, 5), (29, 30), (-8, 0), (40, 40)]  # last ones: clipped
    x = np.repeat(images[2:3], len(spots), axis=0)
    params = params_for([{"hole_y": y, "hole_x": xx, "cut": True, "flip": True} for y, xx in spots])
    ours = T.augment_uint8(x, params, fill=T.fill_value(MEAN), cutout=8).numpy()
    plain = T.augment_uint8(x, params_for([{"flip": True}] * len(spots))).numpy()
    fill = np.array(T.fill_value(MEAN), np.uint8)
    for i, (y, xx) in enumerate(spots):
        ref = T.apply_params_albumentations(x[i], params, MEAN, STD, cutout=8, index=i, stages=True)
        assert np.array_equal(ours[i], ref["cutout"]), spots[i]
        mask = np.zeros((32, 32), bool)
        mask[max(y, 0):max(y + 8, 0), max(xx, 0):max(xx + 8, 0)] = True
        assert np.all(ours[i][mask] == fill) and np.array_equal(ours[i][~mask], plain[i][~mask])
    assert T.fill_value(MEAN) == (133, 120, 105)


def test_no_hole_when_not_cut_or_cutout_zero(images):
    params = params_for([{"hole_y": 5, "hole_x": 5, "cut": False}, {"hole_y": 5, "hole_x": 5, "cut": True}])
    out = T.augment_uint8(images[:2], params).numpy()
    assert np.array_equal(out[0], images[0])
    out0 = T.augment_uint8(images[:2], params, cutout=0).numpy()
    assert np.array_equal(out0, images[:2])


def test_normalize_matches_albumentations(images):
    A = T._albumentations()  # without the import-time PyPI check
    ours = T.normalize_batch(images, MEAN, STD).numpy()
    ref = np.stack([A.Normalize(mean=MEAN, std=STD).apply(im).transpose(2, 0, 1) for im in images])
    assert ours.dtype == np.float32 and ours.shape == (len(images), 3, 32, 32)
    assert np.abs(ours - ref).max() < 1e-5
    expected = (images.astype(np.float64) / 255 - MEAN) / STD
    assert np.abs(ours - expected.transpose(0, 3, 1, 2)).max() < 1e-5
    test_pipe = T.albumentations_test(MEAN, STD)
    assert np.abs(test_pipe(image=images[0])["image"].numpy() - ours[0]).max() < 1e-5


@pytest.mark.parametrize("border", ["reflect", "constant"])
def test_full_augment_matches_albumentations(images, border):
    params = T.sample_params(len(images), torch.Generator().manual_seed(3), cutout_p=0.7)
    ours = T.augment_batch(images, params, MEAN, STD, border=border).numpy()
    ref = np.stack([T.apply_params_albumentations(images[i], params, MEAN, STD, border=border, index=i)
                    for i in range(len(images))])
    assert np.abs(ours - ref).max() < 1e-5


def test_layouts_dtypes_and_memory_format(images):
    params = T.sample_params(len(images), torch.Generator().manual_seed(1))
    nhwc = torch.from_numpy(images)
    nchw = nhwc.permute(0, 3, 1, 2).contiguous()
    a = T.augment_batch(nhwc, params, MEAN, STD)
    b = T.augment_batch(nchw, params, MEAN, STD)
    c = T.augment_batch(nhwc, params, MEAN, STD, channels_last=True)
    assert a.shape == (len(images), 3, 32, 32) and a.dtype == torch.float32 and a.is_contiguous()
    assert torch.equal(a, b) and torch.equal(a, c)
    assert c.is_contiguous(memory_format=torch.channels_last)
    assert T.augment_uint8(nchw, params).shape == nchw.shape  # NCHW in, NCHW out
    assert T.gpu_augment is T.augment_batch and T.normalize is T.normalize_batch
    before = images.copy()
    T.augment_batch(images, params, MEAN, STD)
    assert np.array_equal(images, before)  # input untouched


def test_bad_inputs(images):
    params = T.sample_params(2)
    with pytest.raises(TypeError):
        T.augment_batch(images[:2].astype(np.float32), params)
    with pytest.raises(ValueError):
        T.augment_batch(images[:2, :, :, :2], params)
    with pytest.raises(ValueError):
        T.augment_batch(images[:3], params)
    with pytest.raises(ValueError):
        T.augment_batch(images[:2], params, border="mirror")


def test_identity_params_only_normalize(images):
    out = T.augment_batch(images, T.AugmentParams.identity(len(images)), MEAN, STD)
    assert torch.equal(out, T.normalize_batch(images, MEAN, STD))
    assert np.array_equal(T.to_display(out, MEAN, STD), images)


def test_sampled_params_in_range():
    g = torch.Generator().manual_seed(0)
    p = T.sample_params(20_000, g, pad=4, cutout=8, size=32)
    assert len(p) == 20_000
    assert p.crop_y.dtype == torch.int64 and p.flip.dtype == torch.bool and p.cut.dtype == torch.bool
    for name, high in (("crop_y", 8), ("crop_x", 8), ("hole_y", 24), ("hole_x", 24)):
        values = getattr(p, name)
        assert values.min() == 0 and values.max() == high, name  # whole range, nothing outside
        assert len(values.unique()) == high + 1
    assert 0.47 < p.flip.float().mean() < 0.53 and 0.47 < p.cut.float().mean() < 0.53
    same = T.sample_params(20_000, torch.Generator().manual_seed(0))
    assert torch.equal(p.crop_x, same.crop_x) and torch.equal(p.cut, same.cut)
    assert not T.sample_params(100, cutout=0).cut.any()
    assert T.sample_params(100, cutout_p=1.0).cut.all()
    one = p.item(3)
    assert set(one) == {"crop_y", "crop_x", "flip", "hole_y", "hole_x", "cut"} and isinstance(one["flip"], bool)
    assert len(p[5:9]) == 4 and p[2].item(0) == p.item(2)


def test_albumentations_pipeline_output(images):
    # Statistics of the images themselves, so the normalized output should be ~N(0, 1) per channel.
    x = images.astype(np.float64) / 255
    mean, std = tuple(x.mean((0, 1, 2))), tuple(x.std((0, 1, 2)))
    pipe = T.albumentations_train(mean, std)
    outs = torch.stack([pipe(image=im)["image"] for im in np.concatenate([images] * 10)])
    assert outs.shape == (240, 3, 32, 32) and outs.dtype == torch.float32
    assert outs.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert (outs.std(dim=(0, 2, 3)) - 1).abs().max() < 0.15
    # Same distribution from the batched path.
    params = T.sample_params(240, torch.Generator().manual_seed(0))
    batched = T.augment_batch(np.concatenate([images] * 10), params, mean, std)
    assert (batched.mean(dim=(0, 2, 3)) - outs.mean(dim=(0, 2, 3))).abs().max() < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here; the CPU tests cover the same code")
def test_cuda_matches_cpu(images):
    params = T.sample_params(len(images), torch.Generator().manual_seed(2))
    cpu = T.augment_batch(images, params, MEAN, STD)
    gpu = T.augment_batch(torch.from_numpy(images).cuda(), params.to("cuda"), MEAN, STD)
    assert gpu.device.type == "cuda" and (gpu.cpu() - cpu).abs().max() < 1e-5
