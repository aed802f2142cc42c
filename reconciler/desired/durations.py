"""Go durations (``time.Duration``), as cloudflared reads them: parse, bound and format exactly.

cloudflared parses every originRequest duration with Go's ``time.ParseDuration``, which counts
whole nanoseconds in a signed 64-bit integer. This module follows that function step by step
(leading integer, fraction scaled with float64 as Go does, unit, overflow checks) so a value
portside accepts is exactly the value cloudflared will use, and formats a duration the way
``Duration.String()`` does, so what portside writes parses back to the same number of
nanoseconds. Durations travel through portside as seconds (what the Cloudflare API takes): an
int when whole, else a float; :func:`seconds_to_nanoseconds` converts them back exactly.
"""

from __future__ import annotations

from decimal import Decimal

NANOSECOND = 1
MICROSECOND = 1_000
MILLISECOND = 1_000_000
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

# The largest time.Duration: 2**63 - 1 ns, about 292 years.
MAX_NANOSECONDS = 2**63 - 1
MAX_SECONDS = MAX_NANOSECONDS // SECOND

# Go's unitMap: both micro signs (U+00B5 and U+03BC) are accepted.
UNITS: dict[str, int] = {
    "ns": NANOSECOND, "us": MICROSECOND, "\u00b5s": MICROSECOND, "\u03bcs": MICROSECOND,
    "ms": MILLISECOND, "s": SECOND, "m": MINUTE, "h": HOUR,
}

_LIMIT = 1 << 63  # Go compares the unsigned accumulator against this
_DIGITS = frozenset("0123456789")
_NUMBER = _DIGITS | {"."}


class DurationError(ValueError):
    """The text is not a Go duration, or is outside the range of one."""


def parse_go_duration(text: str) -> int:
    """Nanoseconds of a Go duration string, exactly as ``time.ParseDuration`` computes them.

    Accepts what Go accepts ("1h30m", "1.5s", ".5s", "-2m", "+3ms", "0") and refuses what Go
    refuses (no unit, unknown unit, overflow beyond 2**63-1 ns).
    """
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise DurationError(f'"{text}" is not a duration')
    total = 0
    while rest:
        if rest[0] not in _NUMBER:
            raise DurationError(f'"{text}" is not a duration')
        before = len(rest)
        whole, rest = _leading_int(rest, text)
        has_whole = len(rest) != before
        fraction, scale, has_fraction = 0, 1.0, False
        if rest[:1] == ".":
            rest = rest[1:]
            before = len(rest)
            fraction, scale, rest = _leading_fraction(rest)
            has_fraction = len(rest) != before
        if not has_whole and not has_fraction:
            raise DurationError(f'"{text}" is not a duration')
        end = 0
        while end < len(rest) and rest[end] not in _NUMBER:
            end += 1
        if end == 0:
            raise DurationError(f'"{text}" has a number without a unit (ns, us, ms, s, m or h)')
        name, rest = rest[:end], rest[end:]
        unit = UNITS.get(name)
        if unit is None:
            raise DurationError(f'"{text}" has the unknown unit "{name}" (use ns, us, ms, s, m or h)')
        if whole > _LIMIT // unit:
            raise _overflow(text)
        whole *= unit
        if fraction > 0:
            # Go: v += uint64(float64(f) * (float64(unit) / scale)), truncated toward zero.
            whole += int(float(fraction) * (float(unit) / scale))
            if whole > _LIMIT:
                raise _overflow(text)
        total += whole
        if total > _LIMIT:
            raise _overflow(text)
    if negative:
        return -total
    if total > MAX_NANOSECONDS:
        raise _overflow(text)
    return total


def _overflow(text: str) -> DurationError:
    return DurationError(f'"{text}" is longer than the longest duration cloudflared can hold (about 292 years)')


def _leading_int(text: str, whole_text: str) -> tuple[int, str]:
    value = 0
    index = 0
    while index < len(text) and text[index] in _DIGITS:
        if value > _LIMIT // 10:
            raise _overflow(whole_text)
        value = value * 10 + ord(text[index]) - 48
        if value > _LIMIT:
            raise _overflow(whole_text)
        index += 1
    return value, text[index:]


def _leading_fraction(text: str) -> tuple[int, float, str]:
    """Go's leadingFraction: digits past what fits in 63 bits are read and dropped."""
    value, scale, index, overflow = 0, 1.0, 0, False
    while index < len(text) and text[index] in _DIGITS:
        if not overflow:
            following = value * 10 + ord(text[index]) - 48
            if value > MAX_NANOSECONDS // 10 or following > _LIMIT:
                overflow = True
            else:
                value, scale = following, scale * 10
        index += 1
    return value, scale, text[index:]


def format_go_duration(nanoseconds: int) -> str:
    """The duration as Go's ``Duration.String()`` writes it ("1h0m0s", "1.5s", "250ms", "-5s").

    One deliberate difference: microseconds are written "us", not "µs", so the files portside
    writes stay ASCII; ``time.ParseDuration`` reads both.
    """
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    left = abs(nanoseconds)
    if left < SECOND:
        if left < MICROSECOND:
            return f"{sign}{left}ns"
        if left < MILLISECOND:
            return f"{sign}{_decimal(left, 3)}us"
        return f"{sign}{_decimal(left, 6)}ms"
    whole_seconds, fraction = divmod(left, SECOND)
    hours, rest = divmod(whole_seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = _decimal(secs * SECOND + fraction, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _decimal(value: int, places: int) -> str:
    """``value / 10**places`` without trailing zeros (and without the point when whole)."""
    whole, fraction = divmod(value, 10**places)
    if not fraction:
        return str(whole)
    return f"{whole}.{str(fraction).rjust(places, '0').rstrip('0')}"


def seconds_to_nanoseconds(value: int | float) -> int:
    """Seconds (the API's form) as whole nanoseconds; a float is read as the decimal it prints as."""
    if isinstance(value, int):
        return value * SECOND
    return int((Decimal(repr(value)) * SECOND).to_integral_value())


def nanoseconds_to_seconds(nanoseconds: int) -> int | float:
    """Whole nanoseconds as the API's seconds: an int when whole, else a float."""
    whole, fraction = divmod(nanoseconds, SECOND)
    if not fraction:
        return whole
    return float(Decimal(nanoseconds) / SECOND)


def duration_nanoseconds(value: str | int | float) -> int:
    """A duration as written in a document (a Go duration string, or seconds) in nanoseconds."""
    if isinstance(value, str):
        return parse_go_duration(value)
    return seconds_to_nanoseconds(value)
