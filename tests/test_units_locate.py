from __future__ import annotations

import pytest

from labrun.config.locate import locate
from labrun.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 * 1024**2),
        ("2GiB", 2 * 1024**3),
        ("1.5G", 1_500_000_000),
        (1024, 1024),
        ("10 kb", 10_000),
    ],
)
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1", "1.2.3G", "", True, [1], "5 parsecs"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), (3.5, 3.5), ("250ms", 0.25)],
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["soon", "5 minutes", "m5", "", False, -3])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_locate_handles_multiline_strings_arrays_and_subtables() -> None:
    text = (
        '[job]\nname = "x"\n[[tasks]]\ncommand = """\n[not.a.table]\n"""\n'
        'items = [\n  "a",\n  "b",\n]\n[[tasks]]\n[tasks.env]\nK = 1\n'
    )
    pos = locate(text)
    assert pos[("tasks", 0, "command")] == (4, 1)
    assert ("not",) not in pos
    assert pos[("tasks", 0, "items", 1)] == (9, 3)
    assert pos[("tasks", 1, "env", "K")] == (13, 1)
