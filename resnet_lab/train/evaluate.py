"""Predictions on the test images: batched, with optional flip and shift test-time averaging."""

from __future__ import annotations

import numpy as np
import torch

from resnet_lab import transforms as T
from resnet_lab.models.files import to_scores

# -- evaluation ----------------------------------------------------------------------------------------


def _mirror_logits(model, xb: torch.Tensor) -> torch.Tensor:
    return (model(xb).float() + model(xb.flip(3)).float()) / 2


@torch.no_grad()
def _predict_tensor(model, x_uint8: torch.Tensor, mean, std, batch_size: int, amp: bool, channels_last: bool,
                    tta: bool = False, tta_shift: bool = False, amp_dtype: torch.dtype = torch.bfloat16,
                    kind: str = "logits") -> torch.Tensor:
    """Softmax probabilities (N, C) float32 on x's device; no host sync. ``kind``: what the network returns
    (``models.files.output_kind``): its probabilities are read as such, never put through softmax again.

    ``tta``: logits averaged with the mirror image's (as likely as the original under the training flips);
    ``tta_shift``: half of that weight moves to the image shifted by 1 px up-left and 1 px down-right
    (reflection padding) — views the random crops made familiar."""

    was_training = model.training
    model.eval()
    out = []
    device = x_uint8.device
    for i in range(0, len(x_uint8), batch_size):
        xb = T.normalize_batch(x_uint8[i:i + batch_size], mean, std, channels_last=channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            if not tta:
                logits = model(xb).float()
            else:
                logits = _mirror_logits(model, xb)
                if tta_shift:
                    h, w = xb.shape[-2:]
                    padded = torch.nn.functional.pad(xb, (1, 1, 1, 1), mode="reflect")
                    shifted = [_mirror_logits(model, padded[:, :, dy:dy + h, dx:dx + w]) for dy, dx in ((0, 0), (2, 2))]
                    logits = 0.5 * logits + 0.25 * (shifted[0] + shifted[1])
        out.append(torch.softmax(to_scores(logits, kind), 1))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 0), device=device)


def predict(model, x_uint8: np.ndarray, mean, std, device, batch_size: int = 500, amp: bool = False,
            channels_last: bool = False, tta: bool = False) -> np.ndarray:
    """Softmax probabilities for uint8 NHWC images (no augmentation), as a float32 numpy array."""
    device = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(x_uint8)).to(device)
    probs = _predict_tensor(model, x, mean, std, batch_size, amp and device.type == "cuda", channels_last, tta)
    return probs.cpu().numpy().astype(np.float32)
