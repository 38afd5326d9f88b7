"""One definition per setting: a config dataclass's fields carry their metadata, and every surface reads it.

``TrainConfig`` and ``LRFindConfig`` declare each field with :func:`setting` (help, label, range, choices, unit, where
a page shows it). From that one place come the CLI flags (:func:`add_arguments`, :func:`values_from_args`), the
range and choice checks and their messages (:func:`check`), the settings tables of docs/settings.md (:func:`markdown_table`)
and the Train page's widgets (``app/settings_form.py``). Checks that relate two fields (LR min below LR max, the
peak before the end) stay with their config, where the relation is explained.

Hand-written rather than pydantic/attrs: the configs are plain dataclasses that pass through JSON, job processes
and ``asdict``, and all that is needed is a dict of metadata per field, which ``dataclasses.field`` already holds.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields, MISSING
from typing import Any, Callable

import numpy as np

MAX_SEED = 2**63 - 1  # torch.manual_seed and numpy's generators refuse larger seeds


@dataclass(frozen=True)
class Meta:
    help: str
    label: str = ""               # in sentences ("LR max", "batch size"); default: the name with spaces
    lo: float | None = None       # range; lo_open / hi_open exclude the bound itself
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    unit: str = ""                # "epochs", "px", "images" ... shown after the help
    hint: str = ""                # added to a range message: why the bound, or what to pick
    empty: str = ""               # the field may be None, which means this ("all images")
    flag: str = ""                # the CLI option's name when it is not the field's ("iters")
    section: str = ""             # where forms group it
    step: float | None = None     # a number input's step on the page


class Settings:
    """Base of a settings dataclass: ``to_dict`` and a strict ``from_dict`` that refuses names the class does not
    have (a typo would otherwise be a TypeError traceback, or silently ignored). Subclasses name themselves and
    their error type in ``WHAT`` / ``ERROR``."""

    WHAT = "these"
    ERROR: type[Exception] = ValueError

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise cls.ERROR(f"unknown {cls.WHAT} settings: {', '.join(sorted(unknown))}")
        return cls(**values)


def invalid(error: type[Exception], problems: dict[str, str], what: str = "settings") -> Exception:
    """The library error for invalid settings. Its message names each problem by field, as a Python caller wrote
    it (``lr_min=1.0``); ``problems`` keeps them by field so the CLI (``cli.common.fail_error``) puts each under
    the option its user typed (``--batch-size``), never a field name (``batch_size``) nobody typed there."""
    exc = error(f"invalid {what}: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    exc.problems, exc.what = dict(problems), what
    return exc


def setting(default: Any = MISSING, *, factory: Callable | Any = MISSING, **meta) -> Any:
    """A dataclass field with its metadata: ``epochs: int = setting(24, help=..., lo=1, hi=10_000)``."""
    return field(default=default, default_factory=factory, metadata={"setting": Meta(**meta)})


@dataclass(frozen=True)
class Spec:
    """A field as every surface sees it: name, kind (int, float, bool, str, dict), default, metadata."""

    name: str
    kind: str
    optional: bool
    default: Any
    meta: Meta

    @property
    def label(self) -> str:
        return self.meta.label or self.name.replace("_", " ")

    @property
    def title(self) -> str:
        """The label as a widget heading ("Batch size"), with its unit."""
        text = self.label[:1].upper() + self.label[1:]
        return f"{text} ({self.meta.unit})" if self.meta.unit and self.meta.unit not in text else text

    @property
    def flag(self) -> str:
        return "--" + (self.meta.flag or self.name.replace("_", "-"))

    def range_text(self) -> str:
        """'a whole number from 1 to 10,000', 'a number in [0, 1)', 'a number > 0', '' without a range."""
        m, whole = self.meta, self.kind == "int"
        noun = "a whole number" if whole else "a number"
        if m.lo is None and m.hi is None:
            return noun if self.kind in ("int", "float") else ""
        if m.lo is not None and m.hi is not None:
            if whole and not m.lo_open and not m.hi_open:
                return f"{noun} from {_num(m.lo)} to {_num(m.hi)}"
            return f"{noun} in {'(' if m.lo_open else '['}{_num(m.lo)}, {_num(m.hi)}{')' if m.hi_open else ']'}"
        if m.lo is not None:
            return f"{noun} {'>' if m.lo_open else '≥'} {_num(m.lo)}"
        return f"{noun} {'<' if m.hi_open else '≤'} {_num(m.hi)}"

    def problem(self, value) -> str | None:
        """What is wrong with ``value`` for this field, in words a student understands; None when it is fine."""
        if value is None:
            return None if self.optional else f"{self.label} must be set"
        if self.kind == "bool":
            return None if isinstance(value, (bool, np.bool_)) else f"{self.label} must be true or false"
        if self.kind in ("int", "float"):
            return self._number_problem(value)
        if self.meta.choices and value not in self.meta.choices:
            return f"{self.label} must be one of {', '.join(map(str, self.meta.choices))}"
        if self.kind == "str" and not isinstance(value, str):
            return f"{self.label} must be text"
        return None

    def _number_problem(self, value) -> str | None:
        whole = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        number = whole or (isinstance(value, (float, np.floating)) and math.isfinite(value))
        m = self.meta
        fix = f"; leave it empty for {m.empty}" if m.empty else ""
        if not number or (self.kind == "int" and not whole):
            return f"{self.label} must be {self.range_text()}{fix}"
        low = m.lo is not None and (value <= m.lo if m.lo_open else value < m.lo)
        high = m.hi is not None and (value >= m.hi if m.hi_open else value > m.hi)
        if low or high:
            hint = f": {m.hint}" if m.hint else ""
            return f"{self.label} must be {self.range_text()} (got {_typed(value)}){hint}{fix}"
        return None


def _num(value) -> str:
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    return f"{value:g}"


def _typed(value) -> str:
    """A value as the user typed it: 1e-320, not 9.99989e-321 (%g of that sub-normal float); whole numbers as
    _num writes them (20,000)."""
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        return repr(float(value))
    return _num(value)


def _kind(annotation) -> tuple[str, bool]:
    """('int', True) for 'int | None': the base type's name and whether None is allowed."""
    parts = [p.strip() for p in str(annotation).split("|")]
    optional = "None" in parts
    base = [p for p in parts if p != "None"][0]
    return base, optional


def specs(cls) -> dict[str, Spec]:
    """Every field of a settings dataclass as a Spec (fields without metadata are an error: nothing is hidden)."""
    out = {}
    for f in fields(cls):
        meta = f.metadata.get("setting")
        if meta is None:
            raise TypeError(f"{cls.__name__}.{f.name} has no setting metadata")
        kind, optional = _kind(f.type)
        default = f.default if f.default is not MISSING else f.default_factory()
        out[f.name] = Spec(f.name, kind, optional, default, meta)
    return out


def flags(cls) -> dict[str, str]:
    """Field name -> its CLI option ("iterations" -> "--iters"), for messages that name what to change."""
    return {name: spec.flag for name, spec in specs(cls).items()}


def check(obj) -> dict[str, str]:
    """Field -> message for every field whose value is of the wrong kind, out of range or not a choice."""
    out = {}
    for name, spec in specs(type(obj)).items():
        message = spec.problem(getattr(obj, name))
        if message:
            out[name] = message
    return out


def cli_help(spec: Spec, extra: str = "") -> str:
    parts = [spec.meta.help + extra]
    if spec.meta.choices:
        parts.append(" | ".join(map(str, spec.meta.choices)))
    elif spec.kind in ("int", "float") and (spec.meta.lo is not None or spec.meta.hi is not None):
        allowed = spec.range_text().replace("a whole number ", "").replace("a number ", "")
        parts.append(f"{allowed} {spec.meta.unit}".strip())
    if spec.meta.empty:
        parts.append(f"'none' for {spec.meta.empty}")
    return "; ".join(parts)


class _NoneGiven:
    """What ``--subset none`` parses to: the user asked for None ("all"), which is not the same as not asking."""

    def __repr__(self) -> str:
        return "none"


NONE_GIVEN = _NoneGiven()


def _or_none(kind: Callable) -> Callable:
    def parse(text: str):
        return NONE_GIVEN if text.strip().lower() in ("none", "") else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its error messages
    return parse


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON when it can be (true, 8) and as text otherwise (A)."""
    import json

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def add_arguments(parser, cls, *, groups: dict[str, str] | None = None, types: dict[str, Callable] | None = None,
                  skip: tuple[str, ...] = (), help_extra: dict[str, str] | None = None) -> None:
    """One option per field, with the field's help, range and unit; every default is None ("not given"), so
    :func:`values_from_args` returns only what the user typed. Booleans get ``--x/--no-x``; a dict field takes
    ``--flag KEY=VALUE`` as often as needed. ``groups`` maps a section to an argparse group title."""
    titles = groups or {}
    made: dict[str, Any] = {}
    for name, spec in specs(cls).items():
        if name in skip:
            continue
        section = spec.meta.section
        target = parser
        if section in titles:
            target = made.setdefault(section, parser.add_argument_group(titles[section]))
        text = cli_help(spec, (help_extra or {}).get(name, ""))
        if spec.kind == "bool":
            target.add_argument(spec.flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif spec.kind == "dict":
            target.add_argument(spec.flag, dest=name, action="append", type=key_value, default=None,
                                metavar="KEY=VALUE", help=text)
        else:
            kind = (types or {}).get(name) or {"int": int, "float": float}.get(spec.kind, str)
            if spec.optional:
                kind = _or_none(kind)
            target.add_argument(spec.flag, dest=name, type=kind, default=None, help=text)


def values_from_args(args, cls, skip: tuple[str, ...] = ()) -> dict:
    """The fields the user gave on the command line (a dict field's KEY=VALUE pairs as one dict)."""
    out = {}
    for name, spec in specs(cls).items():
        value = getattr(args, name, None)
        if name in skip or value is None:
            continue
        out[name] = dict(value) if spec.kind == "dict" else None if value is NONE_GIVEN else value
    return out


def markdown_table(cls, presets: dict[str, dict] | None = None) -> str:
    """The docs/settings.md table of a config: option, what it is, range or choices, default, and what each preset sets."""
    presets = presets or {}
    head = ["option", "what it sets", "range / choices", "default"] + [f"`{p}`" for p in presets]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, spec in specs(cls).items():
        allowed = (" · ".join(map(str, spec.meta.choices)) if spec.meta.choices else
                   "on / off" if spec.kind == "bool" else
                   "KEY=VALUE (per model)" if spec.kind == "dict" else spec.range_text())
        if spec.meta.unit:
            allowed = f"{allowed} {spec.meta.unit}".strip()
        if spec.meta.empty:
            allowed = f"{allowed}; none = {spec.meta.empty}".lstrip("; ")
        cells = [f"`{spec.flag}`", spec.meta.help.replace("|", "/"), allowed, _cell(spec.default)]
        cells += [_cell(values[name]) if name in values else "" for values in presets.values()]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "–"
    return _num(value) if isinstance(value, (int, float)) else str(value)
