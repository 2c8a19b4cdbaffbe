"""Decisions in the store, on SQLite and PostgreSQL: states, refusals, history, callbacks
written in the decision's own transaction, auto-approvals announced, the queue and stats."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlmodel import Session, col, select

from schemas.decisions import CaptionEvent, RejectReason
from schemas.errors import ErrorCode, RequestError
from schemas.store.approvals import approve_job, bulk_approve
from schemas.store.decisions import (
    APPROVED,
    Decider,
    EditRefusedError,
    decide,
    history,
)
from schemas.store.lifecycle import delete_job
from schemas.store.review_queue import QueueFilter, decision_tallies, review_queue
from schemas.store.sessions import engine_for, session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Decision, DecisionAction, Delivery, Job, ReviewState, Tenant, Variant
from tests.integration.review_world import reviewable_job

ALICE = Decider(label="alice@example.com")
ADMIN = Decider(label="admin@example.com", admin=True)


@pytest.fixture
def db(database_url: str) -> tuple[str, Tenant]:
    with session_scope(database_url) as session:
        tenant = create_tenant(session=session, name=f"t-{uuid.uuid4().hex[:8]}")
    return database_url, tenant


def _variants(session: Session, job: Job) -> dict[str, Variant]:
    rows = session.exec(select(Variant).where(Variant.job_id == job.id)).all()
    return {v.platform: v for v in rows}


def _events(session: Session, job: Job) -> list[tuple[str, CaptionEvent]]:
    rows = session.exec(
        select(Delivery)
        .where(Delivery.job_id == job.id, col(Delivery.event_type).startswith("caption."))
        .order_by(col(Delivery.created_at))
    ).all()
    return [(d.event_type, CaptionEvent.model_validate_json(d.payload)) for d in rows]


def test_approve_writes_a_decision_and_its_callback_in_one_transaction(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        job = reviewable_job(session, tenant)
        x = _variants(session, job)["x"]
        decided = decide(
            session=session,
            tenant_ids=[tenant.id],
            variant_id=x.id,
            action=DecisionAction.approved,
            decider=ALICE,
        )
        assert decided.variant.review_state == "approved"
        assert decided.delivery is not None
    with session_scope(url) as session:
        ((event_type, event),) = _events(session, job)
        assert event_type == "caption.approved"
        assert event.data.variant_id == x.id
        assert event.data.text == x.text == event.data.original_text
        assert (event.data.edited, event.data.auto_approved) == (False, False)
        assert event.data.reviewer == "alice@example.com"
        assert (event.data.style, event.data.platform, event.data.job_id) == (
            "playful",
            "x",
            job.id,
        )


def test_a_decided_variant_is_refused_unless_an_admin_redecides_on_purpose(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        job = reviewable_job(session, tenant)
        x = _variants(session, job)["x"]
        first = decide(
            session=session,
            tenant_ids=[tenant.id],
            variant_id=x.id,
            action=DecisionAction.approved,
            decider=ALICE,
        )
        for decider, redecide in ((ALICE, True), (ADMIN, False)):
            with pytest.raises(RequestError) as refused:
                decide(
                    session=session,
                    tenant_ids=[tenant.id],
                    variant_id=x.id,
                    action=DecisionAction.rejected,
                    decider=decider,
                    redecide=redecide,
                )
            assert refused.value.code == ErrorCode.already_decided
        again = decide(
            session=session,
            tenant_ids=[tenant.id],
            variant_id=x.id,
            action=DecisionAction.rejected,
            decider=ADMIN,
            redecide=True,
            reason=RejectReason.off_brand,
            note="not our tone",
        )
        assert again.variant.review_state == "rejected"
        rows = history(session=session, tenant_ids=[tenant.id], job_id=job.id)
        assert [(d.action, d.previous_state) for d in rows] == [
            ("approved", "pending_review"),
            ("rejected", "approved"),
        ]
        assert rows[0].superseded_by == again.decision.id
        assert rows[1].superseded_by is None
        kinds = [(t, e.data.reason) for t, e in _events(session, job)]
        assert kinds == [("caption.approved", None), ("caption.rejected", "off_brand")]
        assert first.decision.id != again.decision.id


def test_an_edit_over_the_platform_limit_is_refused_naming_the_rule_and_saves_nothing(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        job = reviewable_job(session, tenant)
        x = _variants(session, job)["x"]
        original = x.text
        with pytest.raises(EditRefusedError) as refused:
            decide(
                session=session,
                tenant_ids=[tenant.id],
                variant_id=x.id,
                action=DecisionAction.edited,
                decider=ALICE,
                text="Guaranteed comfort, mile after mile. " * 10,
            )
        assert refused.value.code == ErrorCode.edit_refused
        assert {b.rule for b in refused.value.breaches} == {"too_long", "policy:claim.guarantee"}
        assert "too_long" in refused.value.message
    with session_scope(url) as session:
        assert _variants(session, job)["x"].text == original
        assert _variants(session, job)["x"].review_state == "pending_review"
        assert history(session=session, tenant_ids=[tenant.id], job_id=job.id) == []
        assert _events(session, job) == []


def test_an_edit_that_passes_saves_the_text_and_says_so_in_its_callback(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        job = reviewable_job(session, tenant)
        x = _variants(session, job)["x"]
        original = x.text
        decided = decide(
            session=session,
            tenant_ids=[tenant.id],
            variant_id=x.id,
            action=DecisionAction.edited,
            decider=ALICE,
            text="  Shoes that  love the city. ",
        )
        assert decided.variant.review_state == "edited"
        assert decided.variant.text == "Shoes that love the city."
        ((_, event),) = _events(session, job)
        assert event.data.edited is True
        assert event.data.text == "Shoes that love the city."
        assert event.data.original_text == original
        assert decided.decision.text_before == original


def test_another_tenants_variant_and_job_are_not_found(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        other = create_tenant(session=session, name=f"other-{uuid.uuid4().hex[:8]}")
        job = reviewable_job(session, tenant)
        x = _variants(session, job)["x"]
        with pytest.raises(RequestError) as refused:
            decide(
                session=session,
                tenant_ids=[other.id],
                variant_id=x.id,
                action=DecisionAction.approved,
                decider=ALICE,
            )
        assert refused.value.code == ErrorCode.not_found
        with pytest.raises(RequestError) as refused:
            approve_job(session=session, tenant_ids=[other.id], job_id=job.id, decider=ALICE)
        assert refused.value.code == ErrorCode.not_found
        with pytest.raises(RequestError) as refused:
            history(session=session, tenant_ids=[other.id], job_id=job.id)
        assert refused.value.code == ErrorCode.not_found


def test_bulk_approve_answers_each_item_on_its_own_and_a_whole_job_can_be_approved(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        one = reviewable_job(session, tenant)
        two = reviewable_job(session, tenant, styles=("playful", "luxury"))
        ids = [v.id for v in _variants(session, one).values()]
        decide(
            session=session,
            tenant_ids=[tenant.id],
            variant_id=ids[0],
            action=DecisionAction.rejected,
            decider=ALICE,
        )
        outcomes = bulk_approve(
            session=session,
            tenant_ids=[tenant.id],
            variant_ids=[*ids, "var_missing"],
            decider=ALICE,
        )
        assert isinstance(outcomes[0], RequestError)
        assert outcomes[0].code == ErrorCode.already_decided
        assert not isinstance(outcomes[1], RequestError)
        assert isinstance(outcomes[2], RequestError)
        assert outcomes[2].code == ErrorCode.not_found
        whole = approve_job(session=session, tenant_ids=[tenant.id], job_id=two.id, decider=ALICE)
        assert len(whole) == 4
        assert (
            approve_job(session=session, tenant_ids=[tenant.id], job_id=two.id, decider=ALICE) == {}
        )


def test_auto_approved_variants_announce_themselves_in_the_results_transaction(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        job = reviewable_job(session, tenant, review_state="auto_approved")
        events = _events(session, job)
        assert [t for t, _ in events] == ["caption.approved", "caption.approved"]
        assert all(e.data.auto_approved and e.data.reviewer is None for _, e in events)
        assert all(not e.data.edited for _, e in events)
        succeeded = session.exec(
            select(Delivery).where(
                Delivery.job_id == job.id, Delivery.event_type == "job.succeeded"
            )
        ).all()
        assert len(succeeded) == 1
        with pytest.raises(RequestError) as refused:
            decide(
                session=session,
                tenant_ids=[tenant.id],
                variant_id=events[0][1].data.variant_id,
                action=DecisionAction.rejected,
                decider=ALICE,
            )
        assert refused.value.code == ErrorCode.already_decided


def test_a_job_without_a_callback_url_is_decided_without_an_event(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        job = reviewable_job(session, tenant, callback_url=None)
        decided = approve_job(session=session, tenant_ids=[tenant.id], job_id=job.id, decider=ALICE)
        assert [d.delivery for d in decided.values()] == [None, None]
        assert session.exec(select(Delivery).where(Delivery.job_id == job.id)).all() == []


def test_deleting_a_job_deletes_its_decisions(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        job = reviewable_job(session, tenant)
        approve_job(session=session, tenant_ids=[tenant.id], job_id=job.id, decider=ALICE)
    with session_scope(url) as session:
        assert delete_job(session=session, tenant_id=tenant.id, job_id=job.id, store="db")
    with session_scope(url) as session:
        assert session.exec(select(Decision).where(Decision.job_id == job.id)).all() == []


def test_the_queue_filters_pages_by_keyset_and_counts(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        jobs = [reviewable_job(session, tenant, score=0.1 * (i + 1)) for i in range(5)]
        flagged = reviewable_job(session, tenant, flags=["policy:claim.guarantee"], model_id="m2")
        ids = [tenant.id]
        everything = review_queue(session=session, tenant_ids=ids, filters=QueueFilter(), limit=2)
        assert (everything.total_jobs, everything.total_variants) == (6, 12)
        seen = [j.id for j in everything.jobs]
        cursor = everything.next_cursor
        while cursor:
            page = review_queue(
                session=session, tenant_ids=ids, filters=QueueFilter(), limit=2, cursor=cursor
            )
            seen += [j.id for j in page.jobs]
            cursor = page.next_cursor
        assert seen == [j.id for j in [*jobs, flagged]]  # oldest first, each once
        newest = review_queue(
            session=session, tenant_ids=ids, filters=QueueFilter(newest_first=True), limit=1
        )
        assert newest.jobs[0].id == flagged.id

        def count(**kw: object) -> tuple[int, int]:
            page = review_queue(
                session=session, tenant_ids=ids, filters=QueueFilter(**kw), limit=50
            )  # type: ignore[arg-type]
            return page.total_jobs, page.total_variants

        assert count(flagged=True) == (1, 2)
        assert count(flagged=False) == (5, 10)
        assert count(platform="x") == (6, 6)
        assert count(min_score=0.25, max_score=0.45) == (2, 4)
        assert count(model_id="m2") == (1, 2)
        assert count(tenant_id="ten_elsewhere") == (0, 0)
        approve_job(session=session, tenant_ids=ids, job_id=jobs[0].id, decider=ALICE)
        assert count() == (5, 10)
        page = review_queue(
            session=session, tenant_ids=ids, filters=QueueFilter(platform="x"), limit=1
        )
        assert [v.platform for v in page.pending[page.jobs[0].id]] == ["x"]


def test_stats_count_current_decisions_by_group_and_day(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        job = reviewable_job(session, tenant, styles=("playful", "luxury"))
        variants = session.exec(select(Variant).where(Variant.job_id == job.id)).all()
        actions = [
            DecisionAction.approved,
            DecisionAction.rejected,
            DecisionAction.approved,
            DecisionAction.approved,
        ]
        for variant, action in zip(variants, actions, strict=True):
            decide(
                session=session,
                tenant_ids=[tenant.id],
                variant_id=variant.id,
                action=action,
                decider=ALICE,
            )
        decide(
            session=session,
            tenant_ids=[tenant.id],
            variant_id=variants[1].id,
            action=DecisionAction.edited,
            decider=ADMIN,
            redecide=True,
            text="Shoes, newly worded.",
        )
        (overall,) = decision_tallies(session=session, tenant_ids=[tenant.id], group="tenant_id")
        assert (overall.approved, overall.edited, overall.rejected) == (3, 1, 0)
        assert overall.acceptance == 1.0
        assert overall.edit_rate == 0.25
        days = decision_tallies(session=session, tenant_ids=[tenant.id], group="day", days=7)
        assert len(days) == 7
        assert days[-1].decided == 4
        styles = {
            t.key: t
            for t in decision_tallies(session=session, tenant_ids=[tenant.id], group="style")
        }
        assert set(styles) == {"playful", "luxury"}
        assert json.dumps(sorted(styles)) == '["luxury", "playful"]'


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_daily_stats_count_utc_days_whatever_the_server_time_zone(db, zone: str) -> None:  # type: ignore[no-untyped-def]
    """A server whose time zone is 14 hours ahead of (or 11 behind) UTC puts decisions
    on another date unless days are taken in UTC, as the keys are."""
    url, tenant = db
    with session_scope(url) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text(f"SET TIME ZONE '{zone}'"))
        job = reviewable_job(session, tenant, styles=("playful",), platforms=("x",))
        (variant,) = session.exec(select(Variant).where(Variant.job_id == job.id)).all()
        decide(
            session=session,
            tenant_ids=[tenant.id],
            variant_id=variant.id,
            action=DecisionAction.approved,
            decider=ALICE,
        )
        days = decision_tallies(session=session, tenant_ids=[tenant.id], group="day", days=3)
        assert [d.decided for d in days] == [0, 0, 1]


@contextmanager
def statements_of(url: str, on_update_of_variants: Any = None) -> Iterator[list[str]]:
    """Every statement sent to the database meanwhile; ``on_update_of_variants(connection)``
    runs just before an ``UPDATE variant`` is sent (a decision landing in between)."""
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)
        if on_update_of_variants and statement.lstrip().upper().startswith("UPDATE VARIANT"):
            on_update_of_variants(cursor.connection)

    engine = engine_for(url)
    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def test_approving_a_job_approves_the_others_when_one_is_decided_meanwhile(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    with session_scope(url) as session:
        job = reviewable_job(session, tenant, styles=("playful", "luxury"))
        taken = _variants(session, job)["x"].id
    landed = []

    def decided_meanwhile(dbapi_connection: Any) -> None:
        if not landed:  # once, as another reviewer's rejection of one variant
            cursor = dbapi_connection.cursor()
            cursor.execute(
                "UPDATE variant SET review_state = 'rejected' WHERE id = "
                + ("%s" if "postgresql" in url else "?"),
                (taken,),
            )
            landed.append(taken)

    with session_scope(url) as session, statements_of(url, decided_meanwhile):
        outcomes = approve_job(
            session=session, tenant_ids=[tenant.id], job_id=job.id, decider=ALICE
        )
    assert landed == [taken]
    refused = outcomes.pop(taken)
    assert isinstance(refused, RequestError)
    assert refused.code == ErrorCode.already_decided
    assert len(outcomes) == 3
    assert all(o.variant.review_state == ReviewState.approved for o in outcomes.values())  # type: ignore[union-attr]
    with session_scope(url) as session:
        states = {
            v.id: v.review_state
            for v in session.exec(select(Variant).where(Variant.job_id == job.id)).all()
        }
        assert states == {taken: "rejected", **dict.fromkeys(outcomes, "approved")}
        decided = session.exec(select(Decision.variant_id).where(Decision.job_id == job.id)).all()
        assert sorted(decided) == sorted(outcomes)
        announced = [e.data.variant_id for kind, e in _events(session, job) if kind == APPROVED]
        assert sorted(announced) == sorted(outcomes)


def test_approving_a_job_takes_as_many_statements_for_eight_variants_as_for_two(db) -> None:  # type: ignore[no-untyped-def]
    url, tenant = db
    counts = []
    for styles, platforms in [
        (("playful",), ("x", "instagram")),
        (("playful", "luxury"), ("x", "instagram", "linkedin", "facebook")),
    ]:
        with session_scope(url) as session:
            job = reviewable_job(session, tenant, styles=styles, platforms=platforms)
        with session_scope(url) as session, statements_of(url) as seen:
            outcomes = approve_job(
                session=session, tenant_ids=[tenant.id], job_id=job.id, decider=ALICE
            )
        assert len(outcomes) == len(styles) * len(platforms)
        with session_scope(url) as session:
            assert len(_events(session, job)) == len(outcomes)
        counts.append([s for s in seen if not s.lstrip().upper().startswith(("BEGIN", "COMMIT"))])
    assert len(counts[0]) == len(counts[1]), counts
