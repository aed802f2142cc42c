"""Go durations: parsed as Go's time.ParseDuration parses them, formatted so they parse back exactly.

The tables are Go's own (src/time/time_test.go: parseDurationTests, parseDurationErrorTests and
durationTests), so the parser is checked against what cloudflared will compute, not against
itself.
"""

from __future__ import annotations

import random

import pytest

from reconciler.desired.durations import (
    HOUR,
    MAX_NANOSECONDS,
    MICROSECOND,
    MILLISECOND,
    MINUTE,
    NANOSECOND,
    SECOND,
    DurationError,
    format_go_duration,
    nanoseconds_to_seconds,
    parse_go_duration,
    seconds_to_nanoseconds,
)
from reconciler.tunnels.rules import go_duration, seconds

MIN_NANOSECONDS = -(1 << 63)

GO_PARSE = [
    ("0", 0), ("5s", 5 * SECOND), ("30s", 30 * SECOND), ("1478s", 1478 * SECOND),
    ("-5s", -5 * SECOND), ("+5s", 5 * SECOND), ("-0", 0), ("+0", 0),
    ("5.0s", 5 * SECOND), ("5.6s", 5 * SECOND + 600 * MILLISECOND), ("5.s", 5 * SECOND),
    (".5s", 500 * MILLISECOND), ("1.0s", SECOND), ("1.00s", SECOND), ("1.004s", SECOND + 4 * MILLISECOND),
    ("1.0040s", SECOND + 4 * MILLISECOND), ("100.00100s", 100 * SECOND + MILLISECOND),
    ("10ns", 10 * NANOSECOND), ("11us", 11 * MICROSECOND), ("12\u00b5s", 12 * MICROSECOND),
    ("12\u03bcs", 12 * MICROSECOND), ("13ms", 13 * MILLISECOND), ("14s", 14 * SECOND), ("15m", 15 * MINUTE),
    ("16h", 16 * HOUR), ("3h30m", 3 * HOUR + 30 * MINUTE),
    ("10.5s4m", 4 * MINUTE + 10 * SECOND + 500 * MILLISECOND),
    ("-2m3.4s", -(2 * MINUTE + 3 * SECOND + 400 * MILLISECOND)),
    ("1h2m3s4ms5us6ns", HOUR + 2 * MINUTE + 3 * SECOND + 4 * MILLISECOND + 5 * MICROSECOND + 6 * NANOSECOND),
    ("39h9m14.425s", 39 * HOUR + 9 * MINUTE + 14 * SECOND + 425 * MILLISECOND),
    ("52763797000ns", 52763797000), ("0.3333333333333333333h", 20 * MINUTE),
    ("9007199254740993ns", (1 << 53) + 1), ("9223372036854775807ns", MAX_NANOSECONDS),
    ("9223372036854775.807us", MAX_NANOSECONDS), ("9223372036s854ms775us807ns", MAX_NANOSECONDS),
    ("-9223372036854775808ns", MIN_NANOSECONDS), ("-9223372036854775.808us", MIN_NANOSECONDS),
    ("-9223372036s854ms775us808ns", MIN_NANOSECONDS), ("-2562047h47m16.854775808s", MIN_NANOSECONDS),
    ("0.100000000000000000000h", 6 * MINUTE),
    ("0.830103483285477580700h", 49 * MINUTE + 48 * SECOND + 372539827),
]

GO_PARSE_ERRORS = [
    "", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "\x85\x85", "\xffff", "hello \xffff world",
    "9223372036854775808ns", "9223372036854775.808us", "9223372036854ms775us808ns", "-9223372036854775809ns",
]

# Go's Duration.String(), except that portside writes "us" where Go writes "µs".
GO_STRING = [
    ("0s", 0), ("1ns", 1), ("1.1us", 1100), ("2.2ms", 2200 * MICROSECOND), ("3.3s", 3300 * MILLISECOND),
    ("4m5s", 4 * MINUTE + 5 * SECOND), ("4m5.001s", 4 * MINUTE + 5001 * MILLISECOND),
    ("5h6m7.001s", 5 * HOUR + 6 * MINUTE + 7001 * MILLISECOND), ("8m0.000000001s", 8 * MINUTE + 1),
    ("2562047h47m16.854775807s", MAX_NANOSECONDS), ("-2562047h47m16.854775808s", MIN_NANOSECONDS),
    ("1h0m0s", HOUR), ("-5s", -5 * SECOND), ("1.5s", 1500 * MILLISECOND), ("250ms", 250 * MILLISECOND),
    ("1m30s", 90 * SECOND),
]


@pytest.mark.parametrize(("text", "nanoseconds"), GO_PARSE)
def test_parse_agrees_with_go(text: str, nanoseconds: int) -> None:
    assert parse_go_duration(text) == nanoseconds


@pytest.mark.parametrize("text", GO_PARSE_ERRORS)
def test_parse_refuses_what_go_refuses(text: str) -> None:
    with pytest.raises(DurationError):
        parse_go_duration(text)


@pytest.mark.parametrize(("text", "nanoseconds"), GO_STRING)
def test_format_agrees_with_go(text: str, nanoseconds: int) -> None:
    assert format_go_duration(nanoseconds) == text


def _sample_nanoseconds() -> list[int]:
    rng = random.Random(20261201)
    units = [NANOSECOND, MICROSECOND, MILLISECOND, SECOND, MINUTE, HOUR]
    values = [0, 1, -1, 999, 1000, 1001, 999_999, SECOND - 1, SECOND, SECOND + 1, 59 * SECOND,
              60 * SECOND, 3599 * SECOND, HOUR, HOUR + 1, MAX_NANOSECONDS, MIN_NANOSECONDS,
              MAX_NANOSECONDS - 1, MIN_NANOSECONDS + 1]
    for _ in range(3000):
        magnitude = rng.choice(units) * rng.randrange(1, 10_000)
        values.append(rng.choice((1, -1)) * min(magnitude + rng.randrange(0, SECOND), MAX_NANOSECONDS))
        values.append(rng.randrange(MIN_NANOSECONDS, MAX_NANOSECONDS))
    return values


def test_every_formatted_duration_parses_back_to_the_same_nanoseconds() -> None:
    for nanoseconds in _sample_nanoseconds():
        text = format_go_duration(nanoseconds)
        assert parse_go_duration(text) == nanoseconds, text
        assert text.isascii()


@pytest.mark.parametrize("value", [
    1, 5, 30, 59, 60, 61, 90, 3599, 3600, 3661, 86400, 1.5, 0.25, 0.001, 0.000001, 0.000000001, 2.5,
    90.5, 1.1, 0.1, 0.3, 12.345, 3600.5, 1e-9, 7.000000001, -5, -1.5, 9223372036,
])
def test_seconds_round_trip_through_the_config_file(value: int | float) -> None:
    """Seconds (the API form) -> the Go duration written for cloudflared -> the same seconds."""
    text = go_duration(value)
    assert parse_go_duration(text) == seconds_to_nanoseconds(value), text
    assert seconds(text) == value
    assert nanoseconds_to_seconds(seconds_to_nanoseconds(value)) == value


def test_fractions_are_written_as_go_writes_them() -> None:
    assert go_duration(1.5) == "1.5s"
    assert go_duration(0.25) == "250ms"
    assert go_duration(90) == "1m30s"
    assert go_duration(-5) == "-5s"  # the sign once, in front (not "-1h59m55s")
    assert go_duration(90.5) == "1m30.5s"
