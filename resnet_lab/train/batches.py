"""The trainer's two input pipelines: GPU-resident uint8 images augmented a batch at a time (``torch``), and the
course's per-image albumentations pipeline on a CPU."""

from __future__ import annotations

import torch

from resnet_lab import transforms as T
from resnet_lab.train.config import TrainConfig, TrainingError

# -- input pipelines -----------------------------------------------------------------------------------


def choose_pipeline(config: TrainConfig, device: torch.device) -> str:
    if config.pipeline != "auto":
        return config.pipeline
    if device.type == "cuda":
        return "torch"
    try:
        import albumentations  # noqa: F401
    except ImportError:
        return "torch"
    return "albumentations"


class _TorchBatches:
    """Device-resident uint8 data, augmented per batch on the device (airbench style): the trainer's batches, and
    the LR test's (``forever``), so the sweep sees what the run will see. ``config`` is a TrainConfig or anything
    with its augmentation fields (augment, crop_pad, cutout, flip, channels_last); ``channels_last`` overrides the
    config's (the LR test never changes the layout of a caller's own model)."""

    def __init__(self, data, config: TrainConfig, device, seed: int, channels_last: bool | None = None):
        self.T, self.config, self.device = T, config, device
        # the generator lives on the training device, so sampling crops/flips/holes never syncs with the host
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.x = torch.from_numpy(data.train_x).to(device)  # (N,32,32,3) uint8 — 150 MB for CIFAR-10
        self.y = torch.from_numpy(data.train_y).to(device)
        self.mean, self.std = tuple(data.mean), tuple(data.std)
        self.cl = config.channels_last and device.type == "cuda" if channels_last is None else channels_last
        self.epochs_done = 0
        # Alternating flips: each image gets one random orientation, then the whole set flips every other
        # epoch, so any two consecutive epochs show every image both ways (random flips repeat one side half
        # the time).
        self.base_flip = (torch.rand(self.x.shape[0], generator=self.gen, device=device) < 0.5
                          if config.flip == "alternate" else None)

    def epoch(self, steps: int, batch_size: int):
        perm = torch.randperm(self.x.shape[0], generator=self.gen, device=self.device)
        odd = self.epochs_done % 2 == 1
        self.epochs_done += 1
        cfg = self.config
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            xb = self.x[idx]
            if cfg.augment:
                params = self.T.sample_params(len(idx), generator=self.gen, pad=cfg.crop_pad, cutout=cfg.cutout,
                                              device=self.device, flip_p=0.0 if cfg.flip == "none" else 0.5)
                if self.base_flip is not None:
                    params.flip = self.base_flip[idx] ^ odd
                xb = self.T.augment_batch(xb, params, self.mean, self.std, pad=cfg.crop_pad, cutout=cfg.cutout,
                                          channels_last=self.cl)
            else:
                xb = self.T.normalize_batch(xb, self.mean, self.std, channels_last=self.cl)
            yield xb, self.y[idx]

    def forever(self, batch_size: int):
        """Endless batches, epoch after epoch (each a fresh shuffle; its ragged end dropped: BN needs ≥ 2)."""
        while True:
            yield from self.epoch(self.x.shape[0] // batch_size, batch_size)


class _AlbumentationsBatches:
    """The course's per-image albumentations pipeline, batched on the CPU."""

    def __init__(self, data, config: TrainConfig, device, seed: int):
        self.data, self.device = data, device
        self.gen = torch.Generator().manual_seed(seed)
        try:
            self.aug = (T.albumentations_train(data.mean, data.std, pad=config.crop_pad, cutout=config.cutout,
                                               flip_p=0.0 if config.flip == "none" else 0.5)
                        if config.augment else T.albumentations_test(data.mean, data.std))
        except ImportError as exc:
            raise TrainingError(f"the albumentations pipeline needs the albumentations package ({exc}); "
                                "pip install albumentations, or choose the torch pipeline") from exc
        if hasattr(self.aug, "set_random_seed"):  # albumentations draws from its own RNG (2.x can seed it)
            self.aug.set_random_seed(seed)
        self.pin = device.type == "cuda"

    def epoch(self, steps: int, batch_size: int):
        perm = torch.randperm(len(self.data.train_y), generator=self.gen).numpy()
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            xb = torch.stack([torch.as_tensor(self.aug(image=self.data.train_x[i])["image"]) for i in idx]).float()
            if xb.shape[-1] == 3:  # HWC -> CHW for a pipeline without ToTensorV2
                xb = xb.permute(0, 3, 1, 2)
            yb = torch.from_numpy(self.data.train_y[idx])
            if self.pin:
                xb, yb = xb.contiguous().pin_memory(), yb.pin_memory()
            yield (xb.contiguous().to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True))
