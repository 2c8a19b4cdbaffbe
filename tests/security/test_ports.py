"""The one port rule (``URL_ALLOWED_PORTS``): ports and low-high ranges."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.checks.urls import check_url, parse_ports
from schemas.settings import CoreSettings

pytestmark = pytest.mark.unit


def test_ports_and_ranges() -> None:
    ports = parse_ports([80, 443, "8000-8100"])
    assert [p in ports for p in (80, 443, 8000, 8050, 8100)] == [True] * 5
    assert [p in ports for p in (81, 7999, 8101, 0, 65536)] == [False] * 5
    assert "80" not in ports


@pytest.mark.parametrize("bad", [0, 65536, "80", "9-8", "a-b", "1-70000", "1-"])
def test_what_is_not_a_port_is_refused_at_start(bad: object) -> None:
    with pytest.raises(ValueError, match="port"):
        parse_ports([bad])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        CoreSettings(url_allowed_ports=[bad])  # type: ignore[list-item]


def test_the_default_is_80_and_443_for_every_url() -> None:
    ports = CoreSettings().allowed_ports
    assert check_url("https://example.com/x", allowed_ports=ports).port == 443
    with pytest.raises(Exception, match="port 8443 is not allowed"):
        check_url("https://example.com:8443/x", allowed_ports=ports)
