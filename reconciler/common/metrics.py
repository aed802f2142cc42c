"""Prometheus metrics for the speaker and the controller, on the official ``prometheus_client``.

Each :class:`Registry` is its own ``CollectorRegistry`` (never the library's global one), so a
process, a server or a test owns exactly the series it creates. The thin wrappers keep the
call sites short — ``errors.inc(kind="config")`` rather than ``errors.labels(kind=...).inc()`` —
and checked: a wrong label set is a ``ValueError`` at the call, as the library does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as _PromCounter
from prometheus_client import Gauge as _PromGauge
from prometheus_client import Summary as _PromSummary
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# ``*_created`` series (one per counter and label set, the time it first appeared) double the
# exposition and no dashboard of ours reads them; the series we serve stay as they were.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Metric:
    """A metric of one registry, labelled by keyword arguments."""

    def __init__(self, metric: _PromCounter | _PromGauge | _PromSummary, name: str,
                 label_names: tuple[str, ...]) -> None:
        self._metric = metric
        self.name = name
        self.label_names = label_names
        # Label values -> the library's child. ``labels()`` checks and locks on every call
        # (~2 us); the speaker counts every frame it answers, so the child is looked up once.
        self._children: dict[tuple[str, ...], _PromCounter | _PromGauge | _PromSummary] = {}

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if len(labels) == len(self.label_names):
            with contextlib.suppress(KeyError):
                return tuple([str(labels[name]) for name in self.label_names])
        raise ValueError(f"metric {self.name} takes labels {self.label_names}, got {sorted(labels)}")

    def _child(self, labels: dict[str, str]) -> _PromCounter | _PromGauge | _PromSummary:
        if not self.label_names:
            if labels:
                self._key(labels)  # raises: this metric takes no labels
            return self._metric
        key = self._key(labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metric.labels(*key)
        return child

    def value(self, **labels: str) -> float:
        """The current value of one series (0 when it does not exist yet): for tests and status."""
        if labels or self.label_names:
            self._key(labels)  # checks the label names (without creating the series)
        wanted = {name: str(value) for name, value in labels.items()}
        for family in self._metric.collect():
            for sample in family.samples:
                if sample.name in (self.name, f"{self.name}_total") and sample.labels == wanted:
                    return float(sample.value)
        return 0.0


class Counter(_Metric):
    """A value that only goes up (restarts reset it; Prometheus handles that)."""

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        child = self._child(labels)
        assert isinstance(child, _PromCounter)
        child.inc(amount)


class Gauge(_Metric):
    """A value that goes up and down; labelled series can be removed when their subject goes."""

    def set(self, value: float, **labels: str) -> None:
        child = self._child(labels)
        assert isinstance(child, _PromGauge)
        child.set(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        child = self._child(labels)
        assert isinstance(child, _PromGauge)
        child.inc(amount)

    def remove(self, **labels: str) -> None:
        key = self._key(labels)
        self._children.pop(key, None)
        with contextlib.suppress(KeyError):  # a series never set: nothing to remove
            self._metric.remove(*key)

    def clear(self) -> None:
        if self.label_names:
            self._children.clear()
            self._metric.clear()
        else:
            self.set(0)


class Summary(_Metric):
    """Observed durations or sizes, served as ``NAME_sum`` and ``NAME_count``."""

    def observe(self, amount: float, **labels: str) -> None:
        child = self._child(labels)
        assert isinstance(child, _PromSummary)
        child.observe(amount)


class Registry:
    """The set of metrics one process (or one test) serves at ``/metrics``."""

    def __init__(self) -> None:
        self.collectors = CollectorRegistry(auto_describe=True)

    def counter(self, name: str, help_text: str, labels: Iterable[str] = ()) -> Counter:
        names = tuple(labels)
        return Counter(_PromCounter(name, help_text or name, names, registry=self.collectors), name, names)

    def gauge(self, name: str, help_text: str, labels: Iterable[str] = ()) -> Gauge:
        names = tuple(labels)
        return Gauge(_PromGauge(name, help_text or name, names, registry=self.collectors), name, names)

    def summary(self, name: str, help_text: str, labels: Iterable[str] = ()) -> Summary:
        names = tuple(labels)
        return Summary(_PromSummary(name, help_text or name, names, registry=self.collectors), name, names)

    def render(self) -> str:
        """The text exposition of every metric (the ``/metrics`` body, served as ``CONTENT_TYPE``)."""
        return generate_latest(self.collectors).decode()
