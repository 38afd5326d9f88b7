"""One trainer for every registry model (the ``resnet_lab.train`` package; this module is its front door): one-cycle LR, cyclic momentum, events, cooperative stop, runs store.

Two input pipelines feed it:
- ``torch``: the uint8 images live on the training device and are augmented there a whole batch at a
  time (``resnet_lab.transforms.sample_params`` + ``augment_batch``) — the fast path on a GPU: no
  DataLoader, no host copies, random numbers drawn by a generator on the GPU.
- ``albumentations``: the course's per-image CPU pipeline (pad-crop-flip-cutout-normalize), chosen by
  ``auto`` on a CPU when albumentations is installed. It is imported only when chosen, so training needs
  nothing beyond torch + torchvision + numpy.
On CUDA the trainer also uses bf16 autocast, channels_last, cudnn.benchmark and fused optimizers, and
never waits for the GPU inside an epoch: batch statistics come back through pinned memory and CUDA
events, checkpoints are written by a background thread. ``compile=True`` adds ``torch.compile``.
Progress goes out as events (see ``resnet_lab.events``); nothing is printed.
"""

from __future__ import annotations

# The trainer lives in resnet_lab/train/, one module per concept: config (TrainConfig, presets), schedule (one-cycle),
# optim (the optimizer factory, lookahead), batches (the two input pipelines), evaluate (predictions, TTA),
# bookkeeping (host stats, checkpoints) and loop (train, _Fit). Everything is re-exported here under its old name.
from resnet_lab.train.config import (  # noqa: F401
    AMP_DTYPES, default_preset, FLIPS, LOOKAHEAD_EVERY, MAX_EPOCHS, MAX_STEPS, OPTIMIZERS, PIPELINES, preset,
    PRESETS, SECTIONS, SPEED, steps_per_epoch, SUBSET_SEED, TrainConfig, TrainingError,
)
from resnet_lab.train.schedule import (  # noqa: F401
    one_cycle, schedule, _set_lr_momentum,
)
from resnet_lab.train.optim import (  # noqa: F401
    _current_lr_momentum, _Lookahead, _make_optimizer, _param_groups,
)
from resnet_lab.train.batches import (  # noqa: F401
    choose_pipeline, _AlbumentationsBatches, _TorchBatches,
)
from resnet_lab.train.evaluate import (  # noqa: F401
    predict, _mirror_logits, _predict_tensor,
)
from resnet_lab.train.bookkeeping import (  # noqa: F401
    _Checkpoints, _HostStats,
)
from resnet_lab.train.notes import preset_note  # noqa: F401
from resnet_lab.train.loop import (  # noqa: F401
    device_name, train, _fault_message, _Fit, _invalid, _steady,
)
