"""One reading of ``Retry-After`` for image servers, model servers and the SDK."""

from __future__ import annotations

import pytest

from schemas.checks.headers import retry_after_s

NOW = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("7", 7.0, id="delay-seconds"),
        pytest.param(" 120 ", 120.0, id="spaces"),
        pytest.param("3.5", 3.5, id="decimal"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("Wed, 21 Oct 2015 07:28:30 GMT", 30.0, id="date-ahead"),
        pytest.param("Wed, 21 Oct 2015 07:27:00 GMT", 0.0, id="date-past"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("-4", None, id="negative"),
        pytest.param("nan", None, id="nan"),
        pytest.param("inf", None, id="infinity"),
        pytest.param("soon", None, id="words"),
        pytest.param("Wed, 21 Oct 2015 07:28:30", None, id="date-without-zone"),
    ],
)
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert retry_after_s(value, now=NOW) == seconds
