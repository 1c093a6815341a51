"""Hyperparameters as one frozen dataclass per model: every default, bound and choice stated once.

Each model folder holds a ``config.py`` with a subclass of :class:`Config`::

    @dataclass(frozen=True)
    class VAEConfig(Config):
        data_dim: int = hparam(784, low=1, high=MAX_DIM, help="pixels per image")
        hidden: tuple[int, ...] = hparam((400,), low=1, high=MAX_UNITS, max_len=MAX_LAYERS)
        activation: str = hparam("softplus", choices=("softplus", "relu"))

        SMOKE: ClassVar[dict] = {"data_dim": 64, "hidden": (64,)}

That class is the only source of the model's constructor defaults, of ``--set`` parsing and
checking, of the spec's defaults and of a checkpoint's metadata (:meth:`Config.to_dict`,
:meth:`Config.from_dict`). Making an instance checks it: a value of the wrong kind, outside its
bounds or not among its choices raises :class:`HparamError`, which names the field. Kinds come
from the annotations: ``int``, ``float``, ``str``, ``bool`` and ``tuple[int, ...]`` (a whole
number or a tuple of them, each within the bounds, at most ``max_len`` long). A bound is a
number, the name of another field (``high="data_dim"``), or :data:`NUM_DATA`, checked by
:meth:`Config.check_num_data` once the data are known. ``SMOKE`` holds the overrides of the
smoke variant (:meth:`Config.smoke`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass
from typing import ClassVar

from pyro_zoo.models.base import DataError

#: caps that keep one weight matrix under about 400 MB: layer widths and latent sizes (10**4 x 10**4
#: float32) and data dimensions (10**5 columns against up to 10**3 hidden units)
MAX_UNITS = 10_000
MAX_DIM = 100_000
#: the most hidden layers a network of the zoo takes
MAX_LAYERS = 16
#: the bound that stands for the number of training points (checked once the data are known)
NUM_DATA = "the number of training points"
KINDS = {int: "a whole number", float: "a finite number", str: "a name", bool: "True or False",
         tuple: "a whole number or a tuple of them"}


class HparamError(DataError):
    """A hyperparameter that breaks its rule; ``name`` is the field, ``rule`` the sentence it breaks."""

    def __init__(self, message: str, name: str | None = None, rule: str = ""):
        super().__init__(message)
        self.name, self.rule = name, rule


@dataclass(frozen=True)
class Rule:
    """What one hyperparameter may be: inclusive bounds ``low``/``high`` (a number, another field's
    name, or :data:`NUM_DATA`), ``choices`` for a name, ``max_len`` for a tuple, a ``help`` line."""

    low: float | str | None = None
    high: float | str | None = None
    choices: tuple = ()
    max_len: int | None = None
    help: str = ""

    def describe(self, kind: type, context: dict) -> str:
        """E.g. "a whole number >= 1 and <= data_dim (64)"."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        parts = []
        for sign, bound in ((">=", self.low), ("<=", self.high)):
            value = _bound(bound, context)
            if isinstance(bound, str):
                parts.append(f"{sign} {bound}" + ("" if value is None else f" ({value})"))
            elif bound is not None:
                parts.append(f"{sign} {bound:g}")
        what = KINDS[kind]
        if kind is tuple:
            most = "" if self.max_len is None else f"at most {self.max_len} "
            what = f"a whole number or a tuple of {most}whole numbers"
            parts = [f"each {' and '.join(parts)}"] if parts else []
        return " ".join([what, " and ".join(parts)]).strip()


def hparam(default, *, low=None, high=None, choices=(), max_len=None, help: str = "") -> dataclasses.Field:
    """A :class:`Config` field: its default and its :class:`Rule`."""
    rule = Rule(low, high, tuple(choices), max_len, help)
    return dataclasses.field(default=default, metadata={"rule": rule})


@dataclass(frozen=True)
class Config:
    """Base of every model's hyperparameters; see the module docstring."""

    #: overrides of the smoke variant (tiny model for tests and ``--smoke``)
    SMOKE: ClassVar[dict] = {}

    def __post_init__(self):
        rules = self.rules()
        given = {name: getattr(self, name) for name in rules}
        kinded = {name: _as_kind(kind, given[name]) for name, (kind, _) in rules.items()}
        context = {name: given[name] if kinded[name] is None else kinded[name] for name in rules}
        for name, (_, rule) in rules.items():
            if kinded[name] is None or not _obeys(rule, kinded[name], context):
                raise self.error(name, given[name], context)
            object.__setattr__(self, name, kinded[name])

    @classmethod
    @functools.cache
    def rules(cls) -> dict[str, tuple[type, Rule]]:
        """{field: (kind, rule)} in declaration order."""
        hints = typing.get_type_hints(cls)
        return {f.name: (_kind(hints[f.name]), f.metadata.get("rule", Rule()))
                for f in dataclasses.fields(cls)}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def smoke(cls, **overrides) -> Config:
        """The smoke variant, with ``overrides``."""
        return cls.from_dict({**cls.SMOKE, **overrides})

    @classmethod
    def from_dict(cls, values: dict, base: Config | None = None) -> Config:
        """``base`` (the defaults when None) with ``values`` set; an unknown name is an
        :class:`HparamError`."""
        if not isinstance(values, dict):
            raise HparamError(f"{cls.__name__} takes a dict of hyperparameters, got {type(values).__name__}")
        unknown = [name for name in values if name not in cls.names()]
        if unknown:
            raise HparamError(f"unknown hyperparameter {_echo(unknown[0])}; valid names are "
                              f"{', '.join(sorted(cls.names()))}", name=str(unknown[0]), rule="a valid name")
        start = dataclasses.asdict(base) if base is not None else {}
        return cls(**{**start, **values})

    def replace(self, **changes) -> Config:
        return self.from_dict(changes, base=self)

    def to_dict(self) -> dict:
        """Plain values (tuples as lists), as a checkpoint and JSON hold them."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}

    def check_num_data(self, num_data: int) -> None:
        """Check the bounds that name :data:`NUM_DATA` against the number of training points."""
        context = {**dataclasses.asdict(self), NUM_DATA: num_data}
        for name, (_, rule) in self.rules().items():
            if NUM_DATA in (rule.low, rule.high) and not _obeys(rule, getattr(self, name), context):
                raise self.error(name, getattr(self, name), context)

    @classmethod
    def error(cls, name: str, value, context: dict) -> HparamError:
        kind, rule = cls.rules()[name]
        text = rule.describe(kind, context)
        return HparamError(f"hyperparameter {name} must be {text}, got {_echo(value)}", name=name, rule=text)


def _kind(annotation) -> type:
    origin = typing.get_origin(annotation) or annotation
    if origin not in KINDS:
        raise TypeError(f"a Config field must be int, float, str, bool or tuple[int, ...], not {annotation}")
    return origin


def _as_kind(kind: type, value):
    """``value`` as ``kind`` (an integral float as int, an int as float, a list or one int as a
    tuple), or None where it is not one."""
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if kind is tuple:
        items = list(value) if isinstance(value, list | tuple) else [value]
        ints = [_as_kind(int, item) for item in items]
        return None if None in ints else tuple(ints)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is float and isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    return value if isinstance(value, kind) else None


def _obeys(rule: Rule, value, context: dict) -> bool:
    if rule.choices and value not in rule.choices:
        return False
    if isinstance(value, tuple) and rule.max_len is not None and len(value) > rule.max_len:
        return False
    low, high = _bound(rule.low, context), _bound(rule.high, context)
    numbers = value if isinstance(value, tuple) else (value,)
    return all((low is None or n >= low) and (high is None or n <= high)
               for n in numbers if isinstance(n, int | float) and not isinstance(n, bool))


def _bound(bound, context: dict):
    value = context.get(bound) if isinstance(bound, str) else bound
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _echo(value, chars: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= chars else f"{text[:chars]}..."


__all__ = [
    "Config", "HparamError", "KINDS", "MAX_DIM", "MAX_LAYERS", "MAX_UNITS", "NUM_DATA", "Rule", "hparam"
]
