"""A network from a file the student wrote: ``path/to/custom_resnet.py:Net`` or ``package.module:Net``.

**Loading a file runs its code** (it is Python, and its class is built by calling it). The CLI does that on the
user's own machine; the app only where the class-server setting allows it, and then inside a job's worker process.

Written for networks as students write them: ``F.relu`` instead of modules, in-place ReLUs, residual adds in
``forward``, ``nn.Sequential`` helpers, no ``num_classes`` argument, a bias-less FC, ``log_softmax`` at the end.
Every way a file can fail (missing, a syntax error, an import error, no such class, not an ``nn.Module``, a
constructor that needs arguments, a forward that fails on a 32x32 batch or returns the wrong shape) is a
``ModelFileError`` that says what and where. A run trained from a file keeps a copy of the source and its sha256,
so the run rebuilds the network it trained even if the file changes or is gone (``source_record``/``from_record``).

Written by hand: importlib loads a module from a path, but a class from an unnamed file, rebuilt later from a
stored copy, with student-readable errors at every step, is this project's own need.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import re
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_lab.config import runs_dir

SPEC = re.compile(r"^(?P<where>.+):(?P<cls>[A-Za-z_][A-Za-z0-9_]*)$")
UPLOAD = re.compile(r"^upload:(?P<sha>[0-9a-f]{16})/(?P<name>[A-Za-z0-9_.-]{1,80}\.py)$")  # a file given to the app
NOT_FILES = ("torchvision",)  # "torchvision:resnet50" names a torchvision builder (receptive_field), not a file
MAX_SOURCE_BYTES = 1_000_000
SOURCE_NAME = "model_source.py"  # the copy a run keeps
_LOCK = threading.Lock()
_FORBIDDEN: list[str] = []  # set by forbid_here(): this process must not run a model file's code
_CLASSES: dict[tuple[str, str], type] = {}  # (sha256, class) -> class: each source is executed once per process


class ModelFileError(ValueError):
    """A model file that cannot be used, said in words a student can act on."""


@dataclass(frozen=True)
class Source:
    spec: str            # what the user gave: "nets/my_net.py:Net" or "mypkg.nets:Net"
    cls: str             # the class name
    text: str            # the source code
    sha256: str
    path: str | None     # where it was read (None for a stored copy)

    @property
    def short(self) -> str:
        where = Path(self.path).name if self.path else self.spec.rpartition(":")[0].rpartition("/")[2] or "source"
        return f"{where}:{self.cls}"


def display_name(name: str) -> str:
    """How a model is named on a page or in a run list: a file spec by its file and class (``my_net.py:Net``), never
    by the server's path or an upload's content hash; a registry name as it is."""
    if not is_spec(name):
        return str(name)
    where, _, cls = str(name).rpartition(":")
    return where.replace("\\", "/").rpartition("/")[2] + ":" + cls


def forbid_here(reason: str) -> None:
    """From now on this process never runs a model file's code (the class server's app process: a student's file
    runs only in a job's worker process, which starts without this). ``build`` then raises, saying ``reason``."""
    _FORBIDDEN[:] = [reason]


def uploads_dir() -> Path:
    """Where the app keeps uploaded model files, one per content: ``<runs folder>/model_files/<sha>/<name>.py``."""
    return runs_dir() / "model_files"


def save_upload(text: str, filename: str, cls: str) -> str:
    """Keep an uploaded source and return its spec, ``upload:<sha>/<name>.py:<Class>`` (no server path in it: the
    spec is shown in run lists and configs)."""
    source = from_text(text, cls, filename)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(filename).name)[:77]
    name = name if name.endswith(".py") else name + ".py"
    folder = uploads_dir() / source.sha256[:16]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return f"upload:{source.sha256[:16]}/{name}:{cls}"


def is_spec(name: Any) -> bool:
    """True for ``file.py:Class`` and ``module.path:Class`` (not for registry names nor ``torchvision:NAME``)."""
    if not isinstance(name, str):
        return False
    m = SPEC.match(name.strip())
    return bool(m) and m.group("where") not in NOT_FILES


def read(spec: str) -> Source:
    """The source a spec names (read, not run)."""
    m = SPEC.match(str(spec).strip()) if isinstance(spec, str) else None
    if not m:
        raise ModelFileError(f"'{spec}' is not a model file: write it as path/to/file.py:ClassName or "
                             "package.module:ClassName")
    where, cls = m.group("where"), m.group("cls")
    upload = UPLOAD.match(where)
    if where.startswith("upload:") and not upload:
        raise ModelFileError(f"'{where}' is not an uploaded model file")
    if upload:
        path = uploads_dir() / upload.group("sha") / upload.group("name")
        if not path.is_file():
            raise ModelFileError(f"the uploaded file {upload.group('name')} is no longer on this server; upload it "
                                 "again")
    elif where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser()
    else:
        try:
            found = importlib.util.find_spec(where)
        except (ImportError, ValueError) as exc:
            raise ModelFileError(f"module '{where}' cannot be found ({exc}); give the file's path instead: "
                                 f"path/to/{where.rsplit('.', 1)[-1]}.py:{cls}") from exc
        if found is None or not found.origin or not str(found.origin).endswith(".py"):
            raise ModelFileError(f"module '{where}' is not a Python file on the path; give the file's path instead: "
                                 f"path/to/{where.rsplit('.', 1)[-1]}.py:{cls}")
        path = Path(found.origin)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    size = path.stat().st_size
    if size > MAX_SOURCE_BYTES:
        raise ModelFileError(f"model file {path} is {size:,} bytes; a network's source is far smaller (the limit is "
                             f"{MAX_SOURCE_BYTES:,}): is it the right file?")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"model file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ModelFileError(f"model file {path} cannot be read ({exc.strerror or exc})") from exc
    if upload and not _sha(text).startswith(upload.group("sha")):
        raise ModelFileError(f"the uploaded file {upload.group('name')} was changed on the server; upload it again")
    return Source(spec=str(spec).strip(), cls=cls, text=text, sha256=_sha(text),
                  path=None if upload else str(path))


def from_text(text: str, cls: str, name: str = "uploaded.py") -> Source:
    """A source given as text (an upload, a run's stored copy)."""
    if not isinstance(text, str):
        raise ModelFileError(f"{name} is not text")
    if len(text.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise ModelFileError(f"{name} is over {MAX_SOURCE_BYTES:,} bytes; a network's source is far smaller")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cls or ""):
        raise ModelFileError(f"'{cls}' is not a class name")
    return Source(spec=f"{name}:{cls}", cls=cls, text=text, sha256=_sha(text), path=None)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def classes_in(text: str) -> list[str]:
    """The classes a source defines at top level (read with ast, not run): what a page offers to pick from."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, ast.ClassDef)]


def load_class(source: Source) -> type:
    """Run the source once (per process and content) and return its ``nn.Module`` class."""
    if _FORBIDDEN:
        raise ModelFileError(f"{source.short}: {_FORBIDDEN[0]}")
    key = (source.sha256, source.cls)
    with _LOCK:
        if key in _CLASSES:
            return _CLASSES[key]
        module = _execute(source)
        found = getattr(module, source.cls, None)
        if found is None:
            modules = [n for n, v in vars(module).items()
                       if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == module.__name__]
            raise ModelFileError(f"{source.short}: there is no class {source.cls} in the file"
                                 + (f"; its networks are: {', '.join(modules)}" if modules else
                                    "; it defines no nn.Module class"))
        if not (isinstance(found, type) and issubclass(found, nn.Module)):
            kind = "a class" if isinstance(found, type) else type(found).__name__
            raise ModelFileError(f"{source.short}: {source.cls} is {kind}, not a torch.nn.Module subclass; a network "
                                 "is a class that inherits from nn.Module (class Net(nn.Module): ...)")
        _CLASSES[key] = found
        return found


def _execute(source: Source) -> types.ModuleType:
    filename = source.path or f"<{source.short}>"
    try:
        code = compile(source.text, filename, "exec")
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        raise ModelFileError(f"{source.short}: syntax error on line {exc.lineno}: {exc.msg}"
                             + (f" — `{line[:120]}`" if line else "")) from exc
    name = f"resnet_lab_model_{source.sha256[:16]}"
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module  # classes defined there must be findable by name (pickling, dataclasses)
    try:
        exec(code, module.__dict__)  # noqa: S102 - running the student's file is the point (see the module doc)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelFileError(f"{source.short}: running the file failed{_where(exc, filename)}: "
                             f"{type(exc).__name__}: {exc}") from exc
    return module


def _where(exc: BaseException, filename: str) -> str:
    """' on line N' of the deepest frame inside the student's file, if any."""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" on line {line}" if line else ""


def parse_option(text: str) -> Any:
    """A ``--model-option`` value as Python reads it (``64`` -> int, ``0.5`` -> float, ``True``, ``'a'``), else the
    text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def instantiate(cls: type, source: Source, num_classes: int, options: dict) -> nn.Module:
    """``cls(**options)``, with ``num_classes`` passed when the constructor takes it; a constructor that needs
    more says which arguments and how to give them."""
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        params = {}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = dict(options)
    if "num_classes" in params and "num_classes" not in kwargs:
        kwargs["num_classes"] = num_classes
    unknown = [k for k in kwargs if k not in params and not takes_kwargs]
    if unknown:
        accepted = [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise ModelFileError(f"{source.short}: the constructor takes no argument {', '.join(unknown)}"
                             + (f"; it takes {', '.join(accepted)}" if accepted else "; it takes none"))
    missing = [n for n, p in params.items() if n != "self" and p.default is p.empty and n not in kwargs
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing:
        raise ModelFileError(f"{source.short}: the constructor needs {', '.join(missing)}; give "
                             + " ".join(f"--model-option {n}=VALUE" for n in missing)
                             + " (or give them default values in the file)")
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise ModelFileError(f"{source.short}: building the network failed{_where(exc, source.path or '')}: "
                             f"{type(exc).__name__}: {exc}") from exc


def check_forward(model: nn.Module, source: Source, num_classes: int) -> str:
    """Run a batch of two 32x32 images through the network (eval mode, no grad, restored after); raise
    ModelFileError when it fails or returns the wrong shape. Returns what the outputs are: ``output_kind``."""
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise ModelFileError(f"{source.short}: forward fails on a batch of 32×32 CIFAR images"
                             f"{_where(exc, source.path or '')}: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ModelFileError(f"{source.short}: forward returns {type(out).__name__}; it must return one tensor of "
                             f"shape (batch, {num_classes})")
    if tuple(out.shape) != (2, num_classes):
        raise ModelFileError(f"{source.short}: forward returns shape {tuple(out.shape)} for a batch of 2 images; it "
                             f"must be (2, {num_classes}): one score per class (is the last layer nn.Linear(..., "
                             f"{num_classes}), after flattening?)")
    return output_kind(out)


def output_kind(out: torch.Tensor) -> str:
    """``log_probs`` when every row's exp sums to 1 (log_softmax at the end), ``probs`` when every row is
    non-negative and sums to 1 (softmax at the end), else ``logits`` (what cross-entropy wants)."""
    out = out.detach().float()
    if not torch.isfinite(out).all():
        return "logits"
    if torch.allclose(torch.logsumexp(out, dim=1), torch.zeros(len(out)), atol=1e-3) and (out <= 1e-6).all():
        return "log_probs"
    if (out >= 0).all() and torch.allclose(out.sum(dim=1), torch.ones(len(out)), atol=1e-3):
        return "probs"
    return "logits"


def to_scores(out: torch.Tensor, kind: str) -> torch.Tensor:
    """Outputs as scores whose softmax is the network's own probabilities (and whose cross-entropy is the NLL of
    its log-probabilities): logits and log-probabilities as they are (log_softmax is idempotent), probabilities
    as their logarithm."""
    return torch.log(out.clamp_min(1e-12)) if kind == "probs" else out


# What to tell a student whose network does not end in plain scores (checked against torch: tests/test_model_files.py)
OUTPUT_NOTES = {
    "log_probs": "the network ends in log_softmax: its outputs are log-probabilities. That is fine: cross-entropy's "
                 "own log-softmax leaves log-probabilities unchanged (log_softmax is idempotent), so training with "
                 "cross-entropy here is exactly NLL loss on them (--loss nll says so explicitly).",
    "probs": "the network ends in softmax: its outputs are probabilities, and cross-entropy applies log-softmax on "
             "top of them — softmax twice. The outputs can only move between 0 and 1, so the loss can never get "
             "near 0 and its gradients shrink: training crawls. Train it with --loss nll (NLL loss on the log of "
             "these probabilities), or better return the scores before softmax.",
}


def build(spec_or_source, num_classes: int = 10, options: dict | None = None) -> nn.Module:
    """The network a spec (or a ``Source``) names, checked on a 32x32 batch. The model carries ``registry_name``
    (the spec), ``num_classes``, ``build_options``, ``model_source`` (the Source) and ``output_kind``."""
    source = spec_or_source if isinstance(spec_or_source, Source) else read(spec_or_source)
    cls = load_class(source)
    options = {k: parse_option(v) if isinstance(v, str) else v for k, v in (options or {}).items()}
    model = instantiate(cls, source, num_classes, options)
    kind = check_forward(model, source, num_classes)
    model.registry_name = source.spec
    model.num_classes = num_classes
    model.build_options = options
    model.model_source = source
    model.output_kind = kind
    return model


def problem(spec: str, num_classes: int = 10, options: dict | None = None) -> str | None:
    """What is wrong with a model file (None when it builds and runs on a 32x32 batch). Where files may not run
    (``forbid_here``), only what can be read without running it: the file, its syntax, the class's presence; the
    rest is found by the job's worker, which fails with the same messages."""
    try:
        if _FORBIDDEN:
            source = read(spec)
            try:
                compile(source.text, source.short, "exec")
            except SyntaxError as exc:
                raise ModelFileError(f"{source.short}: syntax error on line {exc.lineno}: {exc.msg}") from exc
            if source.cls not in classes_in(source.text):
                raise ModelFileError(f"{source.short}: there is no class {source.cls} in the file")
            return None
        build(spec, num_classes, options)
    except ModelFileError as exc:
        return str(exc)
    return None


def may_run_here() -> bool:
    """False in a process that must not run model files (the class server's app process)."""
    return not _FORBIDDEN


def source_record(model: nn.Module) -> dict | None:
    """What a run stores about a network from a file (beside the source copy itself, ``SOURCE_NAME``)."""
    source = getattr(model, "model_source", None)
    if source is None:
        return None
    return {"spec": source.spec, "class": source.cls, "sha256": source.sha256, "file": SOURCE_NAME,
            "read_from": source.path, "output_kind": getattr(model, "output_kind", "logits")}


def from_record(folder: Path, record: dict, num_classes: int, options: dict | None = None) -> nn.Module:
    """Rebuild a run's network from the source copy in its folder (checked against the stored sha256)."""
    path = Path(folder) / record.get("file", SOURCE_NAME)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelFileError(f"the run's copy of its model source ({path}) cannot be read "
                             f"({exc.strerror or exc})") from exc
    if _sha(text) != record.get("sha256"):
        raise ModelFileError(f"the run's copy of its model source ({path}) was changed after training (its sha256 "
                             "no longer matches); restore it to rebuild the network")
    source = Source(spec=record.get("spec", f"{SOURCE_NAME}:{record['class']}"), cls=record["class"], text=text,
                    sha256=record["sha256"], path=None)
    return build(source, num_classes, options)
