"""The Prometheus registry: exact exposition text, escaping, validation, and that a real parser
(prometheus_client, test-only) reads back every family, label and value we wrote."""

from __future__ import annotations

import logging
import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from siprec_src.control.metrics import CONTENT_TYPE, Counter, Gauge, Registry, format_value


def small_registry() -> Registry:
    registry = Registry()
    calls = registry.gauge("siprec_calls", "Calls open now.")
    calls.set_function(lambda: 3)
    delivered = registry.counter("siprec_callbacks_total", "Status callbacks by outcome.", ("outcome",))
    delivered.labels(outcome="failed").inc()
    delivered.labels(outcome="delivered").inc(41)
    delivered.labels(outcome="delivered").inc()
    registry.counter("siprec_packets_forwarded_total", "RTP packets forwarded.").inc(2.5)
    return registry


def test_exposition_text_is_exact_and_sorted() -> None:
    assert small_registry().render() == (
        "# HELP siprec_callbacks_total Status callbacks by outcome.\n"
        "# TYPE siprec_callbacks_total counter\n"
        'siprec_callbacks_total{outcome="delivered"} 42\n'
        'siprec_callbacks_total{outcome="failed"} 1\n'
        "# HELP siprec_calls Calls open now.\n"
        "# TYPE siprec_calls gauge\n"
        "siprec_calls 3\n"
        "# HELP siprec_packets_forwarded_total RTP packets forwarded.\n"
        "# TYPE siprec_packets_forwarded_total counter\n"
        "siprec_packets_forwarded_total 2.5\n"
    )
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_rendering_is_deterministic_whatever_the_registration_order() -> None:
    first, second = Registry(), Registry()
    for name in ("b_total", "a_total", "c_total"):
        first.counter(name, "x", ("k",)).labels(k="2").inc()
    for name in ("c_total", "a_total", "b_total"):
        metric = second.counter(name, "x", ("k",))
        metric.labels(k="2").inc()
    first.get("a_total").labels(k="1")
    second.get("a_total").labels(k="1")
    assert first.render() == second.render()
    lines = first.render().splitlines()
    assert lines.index('a_total{k="1"} 0') < lines.index('a_total{k="2"} 1')


def test_escaping_of_label_values_and_help() -> None:
    registry = Registry()
    gauge = registry.gauge("g", 'Help with \\ backslash\nand "quotes".', ("path", "who"))
    gauge.labels(path="C:\\rec\\a.wav", who='say "hi"\nbye').set(1)
    assert registry.render() == (
        '# HELP g Help with \\\\ backslash\\nand "quotes".\n'
        "# TYPE g gauge\n"
        'g{path="C:\\\\rec\\\\a.wav",who="say \\"hi\\"\\nbye"} 1\n'
    )
    [family] = text_string_to_metric_families(registry.render())
    assert family.documentation == 'Help with \\ backslash\nand "quotes".'
    assert family.samples[0].labels == {"path": "C:\\rec\\a.wav", "who": 'say "hi"\nbye'}


def test_prometheus_client_parses_everything_back() -> None:
    registry = small_registry()
    gauge = registry.gauge("siprec_worker_load", "Per worker.", ("worker", "kind"))
    gauge.labels(worker="0", kind="rtp").set(0.25)
    gauge.labels(worker="1", kind="rtp").set(-3)
    gauge.labels(worker="1", kind="srtp").set(math.inf)
    families = {family.name: family for family in text_string_to_metric_families(registry.render())}
    # The parser names a counter family without its _total suffix.
    assert set(families) == {
        "siprec_callbacks",
        "siprec_calls",
        "siprec_packets_forwarded",
        "siprec_worker_load",
    }
    assert families["siprec_callbacks"].type == "counter"
    assert families["siprec_calls"].type == "gauge"
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    assert samples == {
        ("siprec_callbacks_total", (("outcome", "delivered"),)): 42.0,
        ("siprec_callbacks_total", (("outcome", "failed"),)): 1.0,
        ("siprec_calls", ()): 3.0,
        ("siprec_packets_forwarded_total", ()): 2.5,
        ("siprec_worker_load", (("kind", "rtp"), ("worker", "0"))): 0.25,
        ("siprec_worker_load", (("kind", "rtp"), ("worker", "1"))): -3.0,
        ("siprec_worker_load", (("kind", "srtp"), ("worker", "1"))): math.inf,
    }


def test_value_functions_are_read_at_scrape_time() -> None:
    registry = Registry()
    pending: list[int] = []
    registry.gauge("queue_depth", "Waiting.").set_function(lambda: len(pending))
    lanes = registry.gauge("lane_depth", "Per lane.", ("lane",))
    lanes.labels(lane="a").set_function(lambda: 2 * len(pending))
    assert "queue_depth 0\n" in registry.render()
    pending.extend([1, 2, 3])
    assert "queue_depth 3\n" in registry.render()
    assert 'lane_depth{lane="a"} 6\n' in registry.render()


def test_a_failing_value_function_drops_its_sample_not_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    broken = registry.gauge("broken", "Raises.", ("k",))
    broken.labels(k="bad").set_function(lambda: 1 // 0)
    broken.labels(k="text").set_function(lambda: "7")  # type: ignore[arg-type, return-value]
    broken.labels(k="good").set(5)
    with caplog.at_level(logging.ERROR, logger="siprec_src.control.metrics"):
        text = registry.render()
    assert text == '# HELP broken Raises.\n# TYPE broken gauge\nbroken{k="good"} 5\n'
    assert len(caplog.records) == 2


def test_gauge_moves_both_ways_and_counter_only_up() -> None:
    gauge = Gauge("g", "x")
    gauge.inc(5)
    gauge.dec(2)
    gauge.dec()
    assert gauge.render()[-1] == "g 2"
    gauge.set(-1.5)
    assert gauge.render()[-1] == "g -1.5"
    counter = Counter("c_total", "x")
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1)
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(math.nan)
    assert counter.render()[-1] == "c_total 0"


def test_series_can_be_removed() -> None:
    gauge = Gauge("per_call", "x", ("call",))
    gauge.labels(call="a").set(1)
    gauge.labels(call="b").set(2)
    gauge.remove(call="a")
    gauge.remove(call="never-there")
    assert gauge.render()[2:] == ['per_call{call="b"} 2']


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "é", "a\n"])
def test_invalid_metric_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        Counter(name, "x")


@pytest.mark.parametrize("label", ["", "1a", "a:b", "a-b", "é"])
def test_invalid_label_names_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match="invalid label name"):
        Gauge("g", "x", (label,))


def test_reserved_and_duplicate_label_names_are_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Gauge("g", "x", ("__name__",))
    with pytest.raises(ValueError, match="duplicate"):
        Gauge("g", "x", ("a", "a"))


def test_names_with_colons_and_underscores_are_valid() -> None:
    assert Gauge("job:calls_open:sum", "x", ("_a", "b1")).name == "job:calls_open:sum"


def test_labels_must_match_the_metric() -> None:
    gauge = Gauge("g", "x", ("a", "b"))
    with pytest.raises(ValueError, match="takes labels"):
        gauge.labels(a="1")
    with pytest.raises(ValueError, match="takes labels"):
        gauge.labels(a="1", b="2", c="3")
    with pytest.raises(ValueError, match="must be a str"):
        gauge.labels(a="1", b=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"use \.labels"):
        gauge.set(1)
    with pytest.raises(ValueError, match="has no labels"):
        Gauge("h", "x").labels(a="1")


def test_a_name_is_registered_once() -> None:
    registry = Registry()
    registry.counter("c_total", "x")
    with pytest.raises(ValueError, match="already registered"):
        registry.gauge("c_total", "y")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (7, "7"),
        (True, "1"),
        (3.0, "3"),
        (0.1, "0.1"),
        (1e20, "1e+20"),
        (-2.5, "-2.5"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_value_format(value: float, text: str) -> None:
    assert format_value(value) == text
