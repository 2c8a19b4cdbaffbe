"""The variant record is spelled once: the table stores it, clients read it."""

from __future__ import annotations

import pytest

from schemas.api import VariantBase, VariantPublic
from schemas.tables import Variant

pytestmark = pytest.mark.unit

KEYS = {"id", "job_id", "created_at"}


def test_the_variant_table_stores_the_record_and_its_keys() -> None:
    columns = set(Variant.__table__.columns.keys())  # type: ignore[attr-defined]
    assert columns == set(VariantBase.model_fields) | KEYS


def test_clients_read_the_record_with_its_id() -> None:
    assert set(VariantPublic.model_fields) == set(VariantBase.model_fields) | {"id"}
    flags = VariantPublic.model_json_schema()["properties"]["flags"]
    assert flags == {"items": {"type": "string"}, "title": "Flags", "type": "array"}


def test_a_record_is_a_value() -> None:
    record = VariantBase(
        style="minimal", platform="x", index=0, text="Hi", quality_score=0.5,
        quality_parts={"compliance": 1.0}, flags=["empty"], review_state="pending_review",
        provenance={},
    )
    assert record.flags == ("empty",)
    with pytest.raises(ValueError, match="frozen"):
        record.text = "changed"  # type: ignore[misc]
