"""swarmpy/units.py: docker's human units."""
from __future__ import annotations

import pytest

from swarmpy.units import format_bytes, parse_cpus, parse_duration, parse_go_duration, parse_memory

KiB, MiB, GiB, TiB, PiB = 1024, 1024 ** 2, 1024 ** 3, 1024 ** 4, 1024 ** 5


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("1048576", MiB), ("64M", 64 * MiB), ("64m", 64 * MiB), ("1g", GiB), ("1G", GiB),
    ("512kb", 512 * KiB), ("512KiB", 512 * KiB), ("2t", 2 * TiB), ("1p", PiB), ("100b", 100),
    ("1.5g", int(1.5 * GiB)), (" 10 m ", 10 * MiB), ("1mb", MiB), ("1mib", MiB),
    (4096, 4096), (0, 0),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "1x", "1gbb", "g", "1.2.3g", "1 0m", -1, "1e3", "0x10"])
def test_parse_memory_rejects(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_memory(text)


def test_parse_memory_rejects_bool():
    with pytest.raises(ValueError):
        parse_memory(True)


@pytest.mark.parametrize("text, expected", [
    ("0.5", 500_000_000), ("1", 10 ** 9), (2, 2 * 10 ** 9), (0.25, 250_000_000), ("0", 0),
    ("0.000000001", 1), ("1.5", 1_500_000_000),
])
def test_parse_cpus(text, expected):
    assert parse_cpus(text) == expected


@pytest.mark.parametrize("text", ["abc", "", None, "-0.5", -1, "1 cpu"])
def test_parse_cpus_rejects(text):
    with pytest.raises(ValueError, match="invalid CPU value"):
        parse_cpus(text)


@pytest.mark.parametrize("text", ["inf", "nan"])
def test_parse_cpus_rejects_non_finite(text):
    with pytest.raises(ValueError, match="invalid CPU value"):
        parse_cpus(text)


@pytest.mark.parametrize("text, expected", [
    ("5s", 5.0), ("1m30s", 90.0), ("300ms", 0.3), ("1h", 3600.0), ("1.5h", 5400.0), ("2m", 120.0),
    ("100us", 1e-4), ("10ns", 1e-8), ("1h2m3s", 3723.0), ("5", 5.0), ("0.2", 0.2), (3, 3.0), (2.5, 2.5),
    (" 5s ", 5.0), ("0s", 0.0),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "s", "5x", "5 s", "1h2", "m5", "5s!", "1d", "abc", "  "])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["-5", "nan", "inf"])
def test_parse_duration_rejects_negative_and_non_finite(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("n, expected", [
    (0, "0B"), (1023, "1023B"), (1024, "1KiB"), (1536, "1.5KiB"), (64 * MiB, "64MiB"), (2 * GiB, "2GiB"),
    (int(1.25 * GiB), "1.2GiB"), (3 * TiB, "3TiB"), (PiB, "1024TiB"), (100 * MiB, "100MiB"),
])
def test_format_bytes(n, expected):
    assert format_bytes(n) == expected


def test_memory_round_trip():
    for text in ("64MiB", "1GiB", "512KiB", "3TiB"):
        assert format_bytes(parse_memory(text)) == text


@pytest.mark.parametrize("text, expected", [
    ("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("0", 0.0), ("-2s", -2.0), ("+3s", 3.0), ("1.5h", 5400.0),
    (".5s", 0.5), ("1.s", 1.0), ("2h45m0.5s", 9900.5), ("1us", 1e-6), ("1\u00b5s", 1e-6), ("7ns", 7e-9),
])
def test_parse_go_duration(text, expected):
    assert parse_go_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, message", [
    ("x", 'time: invalid duration "x"'), ("", 'time: invalid duration ""'), ("-", 'time: invalid duration "-"'),
    (".s", 'time: invalid duration ".s"'), ("5", 'time: missing unit in duration "5"'),
    ("1s2", 'time: missing unit in duration "1s2"'), ("1d", 'time: unknown unit "d" in duration "1d"'),
    ("5 s", 'time: unknown unit " s" in duration "5 s"'),
])
def test_parse_go_duration_rejects_with_go_s_texts(text, message):
    with pytest.raises(ValueError) as info:
        parse_go_duration(text)
    assert str(info.value) == message
