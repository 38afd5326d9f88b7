"""The training loop: ``train`` (its table of contents) and ``_Fit`` (one run's state and steps)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from resnet_lab import transforms as T
from resnet_lab.config import resolve_device
from resnet_lab.data import load_dataset
from resnet_lab.events import Callback, chain, emit, Hook, STOP, stop_when
from resnet_lab.metrics import classification_metrics
from resnet_lab.models import build_seeded
from resnet_lab.models.files import OUTPUT_NOTES, SOURCE_NAME, source_record, to_scores
from resnet_lab.runs import atomic_write, disk_full_message, is_disk_full, RunStore
from resnet_lab.settings import invalid
from resnet_lab.train.batches import _AlbumentationsBatches, _TorchBatches, choose_pipeline
from resnet_lab.train.bookkeeping import _Checkpoints, _HostStats
from resnet_lab.train.config import steps_per_epoch, SUBSET_SEED, TrainConfig, TrainingError
from resnet_lab.train.evaluate import _predict_tensor
from resnet_lab.train.optim import _current_lr_momentum, _Lookahead, _make_optimizer, _param_groups
from resnet_lab.train.schedule import _set_lr_momentum, one_cycle

# -- the trainer ---------------------------------------------------------------------------------------


def _invalid(problems: dict[str, str]) -> TrainingError:
    return invalid(TrainingError, problems)  # the CLI shows each under its option (--batch-size)


def train(config: TrainConfig | dict, data=None, callback: Callback | None = None, stop_event=None,
          store=None, hooks: tuple[Hook, ...] = ()):
    """Train one model; returns the finished (or stopped) ``Run`` from the runs store.

    ``data`` is a ``resnet_lab.data.Dataset`` (loaded from ``config.data`` when None); ``config.subset`` /
    ``test_subset`` are cut from it either way (class-balanced, seed ``SUBSET_SEED``). ``callback(event)``
    receives start/log/batch/epoch/end events and may steer: return ``events.STOP`` to end the run after the
    current batch (evaluated, saved with its history, marked ``stopped``) or ``events.SKIP_EPOCH`` to end the
    epoch early. ``stop_event`` (anything with ``is_set()``, e.g. a Stop button's flag) is such a callback.
    ``hooks`` (``events.Hook``) see the model before training, after each epoch and at the end: the run's
    checkpoints are one, the depth experiment's per-layer statistics another. A fault (CUDA out of memory, a
    diverging loss, a full disk) marks the run ``failed``, keeps the history and the last epoch's checkpoint,
    and raises ``TrainingError`` with a message that says what to change.
    """
    fit = _Fit.start(config, data, callback, stop_event, store, hooks)  # settings, data, model, run folder
    try:
        fit.init_from_data()
        for epoch in range(1, fit.config.epochs + 1):
            row = fit.train_epoch(epoch)
            last = epoch == fit.config.epochs or fit.stopped
            fit.end_epoch(row, last)
            if last:
                break
        return fit.finish()
    except BaseException as exc:
        fit.fail(exc)  # marks the run, keeps what it had, raises
        raise
    finally:
        fit.release()


class _Fit:
    """One training run's state and steps; ``train`` above is its table of contents."""

    def __init__(self, config: TrainConfig, data, device, store, callback, stop_event, hooks=()) -> None:
        self.config, self.data, self.device, self.store = config, data, device, store
        # The Stop button is one more callback: every callback may steer (resnet_lab.events.Steer).
        self.callback = chain(callback, stop_when(stop_event))
        self.steer = None  # what the callbacks asked for (STOP, SKIP_EPOCH) and the loop has not yet obeyed
        self.hooks = list(hooks)  # the run's checkpoints join them in create_run
        self.cuda = device.type == "cuda"
        self.n_train, self.n_test = len(data.train_y), len(data.test_y)
        self.num_classes = len(data.classes)
        model = build_seeded(config.model, config.seed, num_classes=self.num_classes, **(config.model_options or {}))
        model = model.to(device)
        self.channels_last = self.cuda and config.channels_last
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)  # NHWC is what tensor cores want
        self.model = model
        # GPU only, like autocast and channels_last: on a CPU torch.compile spent over 240 s compiling ResNet-20
        # before the first step, for no gain, so there it is ignored and the callbacks are told (the CLI prints it)
        self.fwd = torch.compile(model) if config.compile and self.cuda else model
        if config.compile and not self.cuda:
            self.emit("log", message="compile with torch.compile (--compile) is GPU only: ignored on the CPU, "
                                     "where compiling takes minutes and makes no step faster")
        self.amp = config.amp and self.cuda
        self.amp_dtype = torch.float16 if config.amp_dtype == "fp16" else torch.bfloat16
        # fp16 has a narrow exponent: small gradients would flush to zero, so the loss is scaled up by a constant
        # (the batch size: the summed loss) and the gradients scaled back before the step. No dynamic
        # GradScaler: its overflow check would sync with the host every step.
        self.loss_scale = float(config.batch_size) if self.amp and self.amp_dtype == torch.float16 else 1.0
        self.steps = steps_per_epoch(self.n_train, config.batch_size)
        self.total_steps = config.epochs * self.steps
        self.optimizer = _make_optimizer(config, _param_groups(config, model), fused=self.cuda)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.lr_plan, self.momentum_plan = one_cycle(config, self.steps)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        # A network from a file may end in softmax or log_softmax (models.files.output_kind). With loss "nll" its
        # outputs are taken as (log-)probabilities: cross-entropy on their log is exactly NLL loss. Evaluation always
        # reads them as the network's own probabilities.
        self.output_kind = getattr(model, "output_kind", "logits")
        self.nll = config.loss == "nll"
        self.pipeline = choose_pipeline(config, device)
        self.batches = (_TorchBatches if self.pipeline == "torch" else _AlbumentationsBatches)(
            data, config, device, config.seed)
        self.log_every = config.log_every or (10 if self.cuda else 1)
        self.test_x = torch.from_numpy(data.test_x).to(device)
        self.test_y = torch.from_numpy(data.test_y).to(device)
        self.mean, self.std = tuple(data.mean), tuple(data.std)
        self.lookahead = _Lookahead(model, self.total_steps) if config.lookahead else None
        self.history: list[dict] = []
        self.epoch_times: list[float] = []
        self.step, self.stopped, self.probs = 0, False, None

    @classmethod
    def start(cls, config, data, callback, stop_event, store, hooks=()) -> "_Fit":
        """Validate, load and cut the data, build everything, create the run and announce it (``start``)."""

        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        problems = config.validate()
        if problems:
            raise _invalid(problems)
        device = resolve_device(config.device)
        store = store or RunStore()
        store.check_writable()  # before minutes of data loading, not after
        if data is None:
            emit(callback, "log", message="loading data")
            data = load_dataset(config.data)
        data = data.subset(train=config.subset, test=config.test_subset, seed=SUBSET_SEED)
        if config.shuffle_labels:
            data = data.with_shuffled_labels(config.seed)
        problems = config.validate(n_train=len(data.train_y))
        if problems:
            raise _invalid(problems)
        fit = cls(config, data, device, store, callback, stop_event, hooks)
        fit.create_run()
        return fit

    def create_run(self) -> None:
        c, data = self.config, self.data
        self.run_config = {**c.to_dict(), "classes": list(data.classes), "n_train": self.n_train,
                           "n_test": self.n_test, "pipeline": self.pipeline, "device_name": device_name(self.device),
                           "data_source": data.source, "data_path": data.path, "mean": list(self.mean),
                           "std": list(self.std), "steps_per_epoch": self.steps, "total_steps": self.total_steps,
                           "torch": torch.__version__}
        record = source_record(self.model)
        if record:  # a network from a file: the run keeps its source, so it can be rebuilt whatever the file becomes
            self.run_config["model_file"] = record
        self.run = self.store.create(self.run_config)
        if record:
            atomic_write(self.run.path / SOURCE_NAME, lambda fh: fh.write(self.model.model_source.text.encode()))
        self.checkpoints = _Checkpoints(self.store, self.run, c.checkpoint_every)
        self.hooks.insert(0, self.checkpoints)
        self.stats = _HostStats(self.device)
        self.call_hooks("before_fit", self.model)  # before the clock starts: a hook's work is not training time
        if self.output_kind in OUTPUT_NOTES and not (self.nll and self.output_kind == "probs"):
            self.emit("log", message=f"Note: {OUTPUT_NOTES[self.output_kind]}", note=True)
        self.emit("start", run_id=self.run.id, run_path=str(self.run.path), epochs=c.epochs,
                  steps_per_epoch=self.steps, total_steps=self.total_steps, n_train=self.n_train, n_test=self.n_test,
                  device=self.run_config["device_name"], pipeline=self.pipeline, progress=0.0)
        self.t_start = time.perf_counter()

    def call_hooks(self, name: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, name)(*args)

    def emit(self, type_: str, **fields) -> None:
        """An event to the callbacks; a request to steer is kept until the loop obeys it (STOP over SKIP_EPOCH)."""
        asked = emit(self.callback, type_, **fields)
        if asked is not None and (self.steer is None or asked.value > self.steer.value):
            self.steer = asked

    def init_from_data(self) -> None:
        """A model that sets a layer from the data (speednet's whitening) does it here, inside the timed run."""
        if not hasattr(self.model, "init_from_data"):
            return

        every = max(1, self.n_train // 5000)  # spread over the set: the images may be stored class by class
        sample = torch.from_numpy(np.ascontiguousarray(self.data.train_x[::every][:5000])).to(self.device)
        self.model.init_from_data(T.normalize_batch(sample, self.mean, self.std))

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training batches (fewer after a stop); returns the epoch's history row so far."""
        self.model.train()
        if hasattr(self.model, "epoch_start"):
            self.model.epoch_start(epoch)
        self.t_epoch = time.perf_counter()
        zero = torch.zeros((), device=self.device)
        loss_sum, correct, seen = zero.clone(), zero.clone(), 0
        win_loss, win_correct, win_seen = zero.clone(), zero.clone(), 0
        for xb, yb in self.batches.epoch(self.steps, self.config.batch_size):
            lr, mom, logits, loss = self.train_step(xb, yb)
            # running sums stay on the device; they reach the host through _HostStats
            with torch.no_grad():
                hits = (logits.argmax(1) == yb).sum()
                batch_loss = loss.detach() * len(yb)
                loss_sum += batch_loss
                correct += hits
                win_loss += batch_loss
                win_correct += hits
            seen += len(yb)
            win_seen += len(yb)
            if self.step % self.log_every == 0 or self.steer is not None or self.step == epoch * self.steps:
                self.stats.push(torch.stack([win_loss, win_correct, torch.full_like(win_loss, win_seen),
                                             loss.detach().float()]),
                                {"epoch": epoch, "step": self.step, "lr": lr, "momentum": mom})
                win_loss, win_correct, win_seen = zero.clone(), zero.clone(), 0
            self.emit_batches()
            if self.steer is not None:  # a callback asked for it with this step's (or an earlier) event
                break
        self.emit_batches(wait=True)
        partial, self.stopped = self.steer is not None, self.steer is STOP
        if not self.stopped:
            self.steer = None  # a skipped epoch is over; the next one runs in full
        train_loss, train_correct = torch.stack([loss_sum, correct]).tolist()
        train_loss /= max(seen, 1)
        if not math.isfinite(train_loss):
            raise TrainingError(f"the loss became {train_loss} in epoch {epoch}: training diverged — lower LR max")
        return {"epoch": epoch, "train_loss": train_loss, "train_acc": train_correct / max(seen, 1),
                "lr": _current_lr_momentum(self.optimizer)[0], "images": seen, "partial": partial}

    def train_step(self, xb, yb):
        lr, mom = float(self.lr_plan[self.step]), float(self.momentum_plan[self.step])
        _set_lr_momentum(self.optimizer, lr, mom)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.fwd(xb)
            scores = to_scores(logits.float(), self.output_kind) if self.nll else logits.float()
            loss = self.criterion(scores, yb)
        self.optimizer.zero_grad(set_to_none=True)
        if self.loss_scale != 1.0:
            (loss * self.loss_scale).backward()
            torch._foreach_mul_([p.grad for p in self.params if p.grad is not None], 1.0 / self.loss_scale)
        else:
            loss.backward()
        self.optimizer.step()
        self.step += 1
        if self.lookahead is not None:
            self.lookahead.step(self.step)
        return lr, mom, logits, loss

    def emit_batches(self, wait: bool = False) -> None:
        """``batch`` events for the windows whose sums have reached the host (see _HostStats)."""
        c = self.config
        for (loss_sum, hits, seen, last_loss), meta in self.stats.ready(wait):
            if not math.isfinite(last_loss) or not math.isfinite(loss_sum):
                raise TrainingError(f"the loss became {last_loss} at step {meta['step']} (LR {meta['lr']:.3g}): "
                                    "training diverged — lower LR max (or the weight decay) and start again")
            elapsed = time.perf_counter() - self.t_start
            step = meta["step"]
            self.emit("batch", epoch=meta["epoch"], step=step, steps_per_epoch=self.steps,
                 total_steps=self.total_steps, loss=loss_sum / seen, acc=hits / seen, lr=meta["lr"],
                 momentum=meta["momentum"], images_per_s=step * c.batch_size / max(elapsed, 1e-9),
                 eta_s=(self.total_steps - step) * elapsed / step, progress=step / self.total_steps)

    def evaluate(self) -> tuple[float, float]:
        """Test loss and accuracy; keeps the predictions (``probs``) for the run's files."""
        c = self.config
        self.probs = _predict_tensor(self.fwd, self.test_x, self.mean, self.std, 1000 if self.cuda else 250,
                                     self.amp, self.channels_last, c.tta, c.tta_shift, self.amp_dtype,
                                     kind=self.output_kind)
        picked = self.probs[torch.arange(len(self.test_y), device=self.device), self.test_y]
        scores = torch.stack([-(picked + 1e-12).log().mean(), (self.probs.argmax(1) == self.test_y).float().mean()])
        loss, acc = scores.tolist()  # the one sync of an epoch
        return loss, acc

    def end_epoch(self, row: dict, last: bool) -> None:
        """Evaluate when due, record the row (``epoch`` event, history file), checkpoint when due."""
        c, epoch = self.config, row["epoch"]
        if last and self.lookahead is not None:
            self.lookahead.finish()  # evaluate and save the averaged weights
        if last or (c.eval_every and epoch % c.eval_every == 0):
            test_loss, test_acc = self.evaluate()
            row.update(test_loss=test_loss, test_acc=test_acc)
        row["seconds"] = time.perf_counter() - self.t_epoch
        self.epoch_times.append(row["seconds"])
        self.history.append(row)
        self.emit("epoch", **row, total_epochs=c.epochs, progress=self.step / self.total_steps)
        self.store.save_history(self.run, self.history)
        self.call_hooks("after_epoch", self.model, epoch, last)

    def finish(self):
        """Weights, predictions, metrics and status to the run folder; the ``end`` event."""
        c, run = self.config, self.run
        seconds_total = time.perf_counter() - self.t_start  # first batch → final accuracy
        status = "stopped" if self.stopped else "done"
        probs_np = self.probs.float().cpu().numpy()
        met = classification_metrics(probs_np, self.data.test_y, self.num_classes)
        metrics = {**met, "status": status, "seconds_total": seconds_total,
                   "seconds_per_epoch_steady": _steady(self.epoch_times), "epoch_seconds": self.epoch_times,
                   "images_per_s": self.step * c.batch_size / max(seconds_total, 1e-9),
                   "device": self.run_config["device_name"], "epochs_done": len(self.history),
                   "steps_done": self.step, "train_loss": self.history[-1]["train_loss"],
                   "train_acc": self.history[-1]["train_acc"]}
        self.call_hooks("after_fit", self.model, len(self.history))  # the final checkpoint among them
        self.store.save_predictions(run, probs_np, self.data.test_y, self.data.test_index)
        self.store.save_metrics(run, metrics)
        self.store.set_status(run, status)
        emit(self.callback, "end", run_id=run.id, status=status, top1=met["top1"], top3=met["top3"],
             top5=met["top5"], seconds=seconds_total,
             progress=1.0 if not self.stopped else self.step / self.total_steps)
        return run

    def fail(self, exc: BaseException) -> None:
        """A fault: keep the history and the last complete checkpoint, mark the run, raise a TrainingError
        that says what to change (Ctrl-C, SystemExit and TrainingError propagate as they are)."""

        interrupted = isinstance(exc, KeyboardInterrupt)
        msg = "interrupted (Ctrl-C)" if interrupted else _fault_message(exc)
        for hook in self.hooks:
            try:
                hook.on_fault()
            except Exception:
                pass  # the fault being reported matters more than a hook's trouble cleaning up
        if is_disk_full(exc):
            saved = self.checkpoints.saved_epoch
            kept = f"the run kept its last checkpoint at epoch {saved}" if saved else "no checkpoint had been saved yet"
            msg = f"{disk_full_message(self.store.root.resolve(), exc)}; {kept}"
        try:
            self.store.save_history(self.run, self.history)
            self.store.set_status(self.run, "stopped" if interrupted else "failed", msg)
        except Exception:
            pass  # the runs folder itself may be what failed; the error below says so
        emit(self.callback, "end", run_id=self.run.id, status="stopped" if interrupted else "failed", error=msg,
             progress=self.step / max(self.total_steps, 1))
        if not isinstance(exc, (KeyboardInterrupt, SystemExit, TrainingError)):
            raise TrainingError(msg) from exc

    def release(self) -> None:
        # drop the device copies of the data now; the caller (jobs.py) empties the CUDA cache once the
        # model and optimizer are gone too
        self.batches = self.test_x = self.test_y = None


def _fault_message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        return ("the GPU ran out of memory — try a smaller batch size (e.g. half of it) or a smaller model; "
                "the history and the last epoch's checkpoint of this run are kept")
    if isinstance(exc, OSError):
        return f"could not write the run to disk: {text.splitlines()[0]}"
    return text.splitlines()[0]


def _steady(times: list[float]) -> float | None:
    """Median epoch time excluding the first (cuDNN autotuning, compilation, warm caches)."""
    if not times:
        return None
    rest = times[1:] or times
    return float(np.median(rest))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    n = torch.get_num_threads()
    return f"cpu ({os.cpu_count()} cores, {n} thread{'' if n == 1 else 's'})"
