"""What the loop keeps without stalling the GPU: batch statistics through pinned memory, and checkpoints written
by a background thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from resnet_lab.events import Hook

# -- GPU-friendly bookkeeping --------------------------------------------------------------------------


class _HostStats:
    """Small device tensors brought to the host without stalling the GPU.

    On CUDA each ``push`` starts a non-blocking copy into pinned memory and records an event; ``ready``
    returns the copies whose event has completed (``wait=True``: all). A ``.item()`` per logged step instead
    would drain the GPU's queue and leave it idle while Python launches the next kernels.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pending: list = []

    def push(self, values: torch.Tensor, meta: dict) -> None:
        if not self.cuda:
            self.pending.append((values.tolist(), None, meta))
            return
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((host, event, meta))

    def ready(self, wait: bool = False) -> list[tuple[list, dict]]:
        out = []
        while self.pending:
            host, event, meta = self.pending[0]
            if event is not None:
                if not (wait or event.query()):
                    break
                event.synchronize()
                host = host.tolist()
            out.append((host, meta))
            self.pending.pop(0)
        return out


class _Checkpoints(Hook):
    """The run's weights, as a fit hook: every ``every`` epochs and at the end, written by a background thread
    (the device-to-host copy is taken at once, the disk write is not). ``saved_epoch`` is the epoch of the newest
    checkpoint known to be on disk (0: none yet)."""

    def __init__(self, store, run, every: int) -> None:
        self.store, self.run, self.every = store, run, every
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resnet_lab-ckpt")
        self.futures: list = []
        self.saved_epoch = 0

    def save(self, model: torch.nn.Module, epoch: int = 0) -> None:
        self._raise_finished()
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.futures.append((epoch, self.pool.submit(self.store.save_checkpoint, self.run, state)))

    def _settle(self, epoch: int, fut) -> BaseException | None:
        exc = fut.exception()
        if exc is None:
            self.saved_epoch = max(self.saved_epoch, epoch)
        return exc

    def _raise_finished(self) -> None:
        for item in [f for f in self.futures if f[1].done()]:
            self.futures.remove(item)
            exc = self._settle(*item)
            if exc is not None:
                raise exc  # a failed write (disk full, folder gone) surfaces here

    def close(self, raise_errors: bool = True) -> None:
        try:
            for item in self.futures:
                exc = self._settle(*item)
                if exc is not None and raise_errors:
                    raise exc
        finally:
            self.futures.clear()
            self.pool.shutdown(wait=True)

    def after_epoch(self, model, epoch: int, last: bool) -> None:
        if self.every and epoch % self.every == 0 and not last:
            self.save(model, epoch)

    def after_fit(self, model, epochs_done: int) -> None:
        self.save(model, epochs_done)
        self.close()

    def on_fault(self) -> None:
        self.close(raise_errors=False)  # the last complete epoch's checkpoint is kept
