"""The metric wrappers: label checks, the cached children, and series that are removed and come back."""

from __future__ import annotations

import pytest

from reconciler.common.metrics import Registry


def test_counters_by_label_in_any_keyword_order() -> None:
    registry = Registry()
    replies = registry.counter("replies_total", "replies", ["protocol", "ip"])
    replies.inc(protocol="arp", ip="10.0.0.1")
    replies.inc(2, ip="10.0.0.1", protocol="arp")
    assert replies.value(protocol="arp", ip="10.0.0.1") == 3
    assert 'replies_total{ip="10.0.0.1",protocol="arp"} 3.0' in registry.render()


@pytest.mark.parametrize("labels", [{}, {"protocol": "arp"}, {"protocol": "arp", "ip": "x", "extra": "y"},
                                    {"protocol": "arp", "address": "x"}])
def test_a_wrong_label_set_is_refused(labels: dict[str, str]) -> None:
    replies = Registry().counter("replies_total", "replies", ["protocol", "ip"])
    with pytest.raises(ValueError, match=r"takes labels \('protocol', 'ip'\)"):
        replies.inc(**labels)
    with pytest.raises(ValueError):
        replies.value(**labels)


def test_an_unlabelled_metric_takes_no_labels() -> None:
    sent = Registry().counter("sent_total", "sent")
    sent.inc()
    assert sent.value() == 1
    with pytest.raises(ValueError):
        sent.inc(node="a")


def test_a_removed_series_leaves_the_page_and_comes_back_from_zero() -> None:
    registry = Registry()
    announced = registry.gauge("announced", "announced", ["ip"])
    announced.set(1, ip="10.0.0.1")
    announced.remove(ip="10.0.0.1")
    assert 'announced{ip="10.0.0.1"}' not in registry.render()
    announced.inc(ip="10.0.0.1")  # a new series, not the removed one
    assert announced.value(ip="10.0.0.1") == 1
    assert 'announced{ip="10.0.0.1"} 1.0' in registry.render()
    announced.remove(ip="10.0.0.9")  # never set: nothing to remove
    announced.clear()
    assert announced.value(ip="10.0.0.1") == 0
    assert 'announced{ip="10.0.0.1"}' not in registry.render()


def test_reading_a_value_does_not_create_the_series() -> None:
    registry = Registry()
    replies = registry.counter("replies_total", "replies", ["ip"])
    assert replies.value(ip="10.0.0.1") == 0
    assert "10.0.0.1" not in registry.render()
