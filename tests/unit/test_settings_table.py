"""The README's settings table lists every setting the code reads: each field of every
settings class in ``schemas/settings.py``, and nothing that is not one (but the
variables that libraries read themselves, named here)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from pydantic_settings import BaseSettings

import schemas.settings

README = Path(__file__).resolve().parents[2] / "README.md"
READ_BY_LIBRARIES = {"HF_HUB_OFFLINE"}


def settings_classes() -> dict[str, type[BaseSettings]]:
    return {
        name: member
        for name, member in vars(schemas.settings).items()
        if inspect.isclass(member) and issubclass(member, BaseSettings)
        if member is not BaseSettings
    }


def settings_variables() -> dict[str, str]:
    """Each environment variable a settings class reads, with the first class that reads it."""
    found: dict[str, str] = {}
    for name, member in settings_classes().items():
        for field in member.model_fields:
            found.setdefault(field.upper(), name)
    return found


def table_variables() -> set[str]:
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])}


def test_every_setting_is_in_the_readme_table() -> None:
    missing = {v: c for v, c in settings_variables().items() if v not in table_variables()}
    assert missing == {}, f"README ## Configuration lacks rows for {missing}"


def test_the_table_lists_nothing_the_code_does_not_read() -> None:
    unknown = table_variables() - set(settings_variables()) - READ_BY_LIBRARIES
    assert unknown == set(), f"README ## Configuration lists {unknown}, which no settings class has"


def test_every_settings_class_is_found() -> None:
    classes = set(settings_classes())
    assert {
        "CoreSettings",
        "ApiSettings",
        "WorkerSettings",
        "ReviewSettings",
        "ClientSettings",
    } <= classes
