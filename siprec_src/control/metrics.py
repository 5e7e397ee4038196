"""A tiny Prometheus registry: counters and gauges rendered in the text exposition format 0.0.4.

Why not ``prometheus_client``: the sidecar needs two metric types, labels and values computed
at scrape time; that is a hundred lines, not a dependency with its own global registry,
multiprocess mode and HTTP server.

What the output guarantees (the format: prometheus.io "Exposition formats", text 0.0.4):

- each family is ``# HELP name text`` then ``# TYPE name counter|gauge`` then its samples;
  HELP text escapes ``\\`` and newline, label values escape ``\\``, ``"`` and newline;
- families are sorted by name and samples by their label values, so two scrapes of the same
  state are byte-identical (and tests can compare exact text);
- metric names match ``[a-zA-Z_:][a-zA-Z0-9_:]*`` and label names ``[a-zA-Z_][a-zA-Z0-9_]*``
  without the reserved ``__`` prefix; anything else is a ``ValueError`` when the metric is made;
- a value function that raises at scrape time is logged and its sample left out: a broken
  gauge never fails the whole scrape.

Not thread-safe: everything runs on the control process's event loop (media workers report
their counters to it over their socketpair).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Number = int | float
ValueFunction = Callable[[], Number]


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: Number) -> str:
    """A sample value as Prometheus parses it (Go ``ParseFloat``): integers without ``.0``,
    ``+Inf``/``-Inf``/``NaN`` spelled as the format wants, other floats as Python's shortest repr."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class _Child:
    """One labelled series: a stored value or a function read at scrape time."""

    __slots__ = ("_function", "_value")

    def __init__(self) -> None:
        self._value: Number = 0
        self._function: ValueFunction | None = None

    def set_function(self, function: ValueFunction) -> None:
        """Read the value from ``function()`` at each scrape (e.g. ``lambda: len(engine.calls)``)."""
        self._function = function

    def value(self) -> Number:
        if self._function is not None:
            result = self._function()
            if isinstance(result, bool) or not isinstance(result, int | float):
                raise TypeError(f"value function returned {type(result).__name__}, not a number")
            return result
        return self._value


class CounterChild(_Child):
    __slots__ = ()

    def inc(self, amount: Number = 1) -> None:
        """Add ``amount`` (≥ 0: a counter only goes up; restarts are how it goes back to 0)."""
        if amount < 0 or math.isnan(amount):
            raise ValueError(f"a counter only goes up; cannot add {amount!r}")
        self._value += amount


class GaugeChild(_Child):
    __slots__ = ()

    def set(self, value: Number) -> None:
        self._value = value

    def inc(self, amount: Number = 1) -> None:
        self._value += amount

    def dec(self, amount: Number = 1) -> None:
        self._value -= amount


ChildT = TypeVar("ChildT", bound=_Child)


class _Metric(Generic[ChildT]):
    """A metric family: a name, its help, its label names and one child per label-value tuple.

    A metric without label names has exactly one child, and the child's methods (``inc``,
    ``set``, ``set_function``) are called on the metric itself.
    """

    kind = ""
    _child_type: type[ChildT]

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}: must match {_METRIC_NAME.pattern}")
        for label in labelnames:
            if not _LABEL_NAME.fullmatch(label):
                raise ValueError(f"invalid label name {label!r} on {name}: must match {_LABEL_NAME.pattern}")
            if label.startswith("__"):
                raise ValueError(f"label name {label!r} on {name}: names starting with __ are reserved")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"duplicate label names on {name}: {labelnames!r}")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], ChildT] = {}
        if not self.labelnames:
            self._children[()] = self._child_type()

    def labels(self, **values: str) -> ChildT:
        """The series for these label values (made on first use); exactly the metric's label names."""
        key = self._key(values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._child_type()
        return child

    def remove(self, **values: str) -> None:
        """Forget one series (e.g. a call's gauge once the call is gone); absent is not an error."""
        self._children.pop(self._key(values), None)

    def _key(self, values: dict[str, str]) -> tuple[str, ...]:
        if not self.labelnames:
            raise ValueError(f"{self.name} has no labels")
        if set(values) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames!r}, got {tuple(sorted(values))!r}")
        for label, value in values.items():
            if not isinstance(value, str):
                raise ValueError(f"label {label} of {self.name} must be a str, not {type(value).__name__}")
        return tuple(values[label] for label in self.labelnames)

    def _only_child(self) -> ChildT:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames!r}: use .labels(...) first")
        return self._children[()]

    def set_function(self, function: ValueFunction) -> None:
        self._only_child().set_function(function)

    def render(self) -> list[str]:
        lines = [
            f"# HELP {self.name} {_escape_help(self.documentation)}",
            f"# TYPE {self.name} {self.kind}",
        ]
        for key in sorted(self._children):
            try:
                value = self._children[key].value()
            except Exception:
                log.exception("metric %s%r: value function failed; sample left out", self.name, key)
                continue
            if key:
                pairs = ",".join(
                    f'{label}="{_escape_label_value(v)}"'
                    for label, v in zip(self.labelnames, key, strict=True)
                )
                lines.append(f"{self.name}{{{pairs}}} {format_value(value)}")
            else:
                lines.append(f"{self.name} {format_value(value)}")
        return lines


class Counter(_Metric[CounterChild]):
    """A value that only goes up (name it ``..._total``, as Prometheus conventions say)."""

    kind = "counter"
    _child_type = CounterChild

    def inc(self, amount: Number = 1) -> None:
        self._only_child().inc(amount)


class Gauge(_Metric[GaugeChild]):
    """A value that goes up and down, set directly or read from a function at scrape time."""

    kind = "gauge"
    _child_type = GaugeChild

    def set(self, value: Number) -> None:
        self._only_child().set(value)

    def inc(self, amount: Number = 1) -> None:
        self._only_child().inc(amount)

    def dec(self, amount: Number = 1) -> None:
        self._only_child().dec(amount)


MetricT = TypeVar("MetricT", Counter, Gauge)


class Registry:
    """The metrics one process exposes; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self._metrics: dict[str, Counter | Gauge] = {}

    def register(self, metric: MetricT) -> MetricT:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> Counter:
        return self.register(Counter(name, documentation, labelnames))

    def gauge(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> Gauge:
        return self.register(Gauge(name, documentation, labelnames))

    def get(self, name: str) -> Counter | Gauge:
        return self._metrics[name]

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._metrics):
            lines.extend(self._metrics[name].render())
        return "".join(line + "\n" for line in lines)
