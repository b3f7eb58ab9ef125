"""Serving settings come from the environment through Config, with checked values."""

from __future__ import annotations

import pytest

from ownloop import Config, InvalidInputError


def test_serving_settings_have_defaults_and_read_the_environment() -> None:
    default = Config.from_env({})
    assert default.predlog_flush_s <= 1.0
    custom = Config.from_env(
        {
            "OWNLOOP_PREDLOG_FLUSH_S": "0.25",
            "OWNLOOP_MAX_BODY_BYTES": "65536",
            "OWNLOOP_CPU_HOUR_PRICE": "0.1",
        }
    )
    assert (custom.predlog_flush_s, custom.max_body_bytes, custom.cpu_hour_price) == (
        0.25,
        65536,
        0.1,
    )


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("OWNLOOP_PREDLOG_FLUSH_S", "soon", "is not a number"),
        ("OWNLOOP_PREDLOG_FLUSH_S", "0", r"outside 0\.01\.\.60\.0"),
        ("OWNLOOP_MAX_BODY_BYTES", "1.5", "is not an integer"),
        ("OWNLOOP_PREDLOG_MAX_BUFFER", "-3", "outside"),
    ],
)
def test_bad_serving_settings_are_refused(name: str, value: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        Config.from_env({name: value})
