"""Retention in the artifacts service, against a real PostgreSQL and a file:// store in tmp:
everything expired goes, nothing still referenced or protected does."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from services.artifacts.database import new_engine, new_sessionmaker
from services.artifacts.db.models import Artifact, LogRecord, RetentionLedgerEntry, Run, RunStep
from services.artifacts.ingest.store import store_batch
from services.artifacts.migrate import migrate
from services.artifacts.retention import blobs as blob_collection
from services.artifacts.retention.job import ArtifactsRetention, retention_job
from services.artifacts.settings import ArtifactsSettings
from shared.artifact_store import ArtifactStore, FileArtifactStore
from shared.database import normalize_database_url
from shared.events import ArtifactCreated, LogRecorded, RunFailed, RunRequested, RunStarted, RunSucceeded, StepStarted

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)
WORKFLOW = "wf_retention"


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def settings_for(url: str, store: FileArtifactStore, **retention) -> ArtifactsSettings:
    return ArtifactsSettings(database_url=url, artifacts_consumer_enabled=False, artifact_store_url=store.url,
                             retention_first_sweep_delay_seconds=0, **retention)


class Db:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = new_engine(normalize_database_url(url))
        self.sessions = new_sessionmaker(self.engine)

    async def store(self, *events) -> None:
        async with self.sessions.begin() as session:
            await store_batch(session, list(events))

    async def scalar(self, statement):
        async with self.sessions() as session:
            return await session.scalar(statement)

    async def artifact_names(self) -> set[str]:
        async with self.sessions() as session:
            return set(await session.scalars(select(Artifact.name)))

    async def run(self, execution_id: str) -> Run:
        async with self.sessions() as session:
            return await session.get(Run, execution_id)


@pytest.fixture
async def db(new_database) -> AsyncIterator[Db]:
    url = new_database()
    await migrate(url)
    db = Db(url)
    try:
        yield db
    finally:
        await db.engine.dispose()


@pytest.fixture
def store(tmp_path) -> FileArtifactStore:
    store = ArtifactStore.from_url((tmp_path / "store").as_uri())
    assert isinstance(store, FileArtifactStore)
    return store


def run_events(execution_id: str, at: datetime, outcome: str = "succeeded", step: str = "train") -> list:
    events = [
        RunRequested(workflow_id=WORKFLOW, execution_id=execution_id, trigger="manual", occurred_at=at),
        RunStarted(workflow_id=WORKFLOW, execution_id=execution_id, steps=[step], occurred_at=at),
        StepStarted(workflow_id=WORKFLOW, execution_id=execution_id, step_name=step, occurred_at=at),
    ]
    if outcome == "succeeded":
        events.append(RunSucceeded(workflow_id=WORKFLOW, execution_id=execution_id, occurred_at=at + timedelta(minutes=5)))
    elif outcome == "failed":
        events.append(RunFailed(workflow_id=WORKFLOW, execution_id=execution_id, error="boom",
                                occurred_at=at + timedelta(minutes=5)))
    return events


def inline(execution_id: str, name: str, kind: str, at: datetime, step: str = "train") -> ArtifactCreated:
    return ArtifactCreated(workflow_id=WORKFLOW, execution_id=execution_id, step_name=step, name=name, kind=kind,
                           payload={"name": name}, occurred_at=at)


async def stored(store: FileArtifactStore, execution_id: str, name: str, data: bytes, at: datetime,
                 step: str = "train") -> ArtifactCreated:
    blob = await store.put(data)
    return ArtifactCreated(workflow_id=WORKFLOW, execution_id=execution_id, step_name=step, name=name,
                           kind="dataset", media_type="text/csv", uri=blob.uri, size_bytes=blob.size_bytes,
                           sha256=blob.sha256, occurred_at=at)


def log(execution_id: str, message: str, at: datetime) -> LogRecorded:
    return LogRecorded(workflow_id=WORKFLOW, execution_id=execution_id, step_name="train", message=message,
                       occurred_at=at)


def age_blob(store: FileArtifactStore, data: bytes, hours: float) -> Path:
    digest = hashlib.sha256(data).hexdigest()
    path = store.root / "sha256" / digest[:2] / digest
    then = (NOW - timedelta(hours=hours)).timestamp()
    os.utime(path, (then, then))
    return path


async def test_retention_off_by_default_deletes_nothing_and_starts_no_task(db, store):
    await db.store(*run_events("old-run", days_ago(400)), inline("old-run", "old chart", "chart", days_ago(400)),
                   log("old-run", "ancient", days_ago(400)))
    settings = settings_for(db.url, store)
    job = retention_job(settings, db.engine, db.sessions, store)
    assert job.rules == []
    job.start()
    assert job._task is None
    assert await ArtifactsRetention(settings, db.sessions, store).sweep() == []
    assert await db.artifact_names() == {"old chart"}
    assert await db.scalar(select(func.count()).select_from(LogRecord)) == 1


async def test_expired_artifacts_and_logs_go_and_the_protected_ones_stay(db, store):
    # Three old succeeded runs (two are the newest kept), an old failed one, a recent one,
    # a run still in flight whose first artifact is old, and an external run.
    await db.store(
        *run_events("s1", days_ago(90)), *run_events("s2", days_ago(80)), *run_events("s3", days_ago(70)),
        *run_events("f1", days_ago(85), outcome="failed"), *run_events("recent", days_ago(1), outcome="failed"),
        *run_events("flying", days_ago(0.01), outcome="running"),
        inline("s1", "s1 chart", "chart", days_ago(90)), inline("s1", "s1 model", "model", days_ago(90)),
        inline("s1", "s1 metrics", "metrics", days_ago(90)),
        inline("s2", "s2 chart", "chart", days_ago(80)), inline("s2", "s2 metrics", "metrics", days_ago(80)),
        inline("s3", "s3 chart", "chart", days_ago(70)), inline("s3", "s3 metrics", "metrics", days_ago(70)),
        inline("f1", "f1 chart", "chart", days_ago(85)), inline("f1", "f1 metrics", "metrics", days_ago(85)),
        inline("f1", "f1 model", "model", days_ago(85)),
        inline("recent", "recent chart", "chart", days_ago(1)), inline("recent", "recent metrics", "metrics", days_ago(1)),
        inline("recent", "recent old-ish chart", "chart", days_ago(10)),
        inline("flying", "flying old metrics", "metrics", days_ago(50)),
        inline("outside", "external metrics", "metrics", days_ago(60), step="extract"),
        *(log("s1", f"s1 line {i}", days_ago(90)) for i in range(7)),
        log("recent", "recent line", days_ago(1)), log("recent", "month-old line", days_ago(31)),
        log("flying", "flying line", days_ago(0.01)),
    )
    settings = settings_for(db.url, store, retention_logs_days=30, retention_artifacts_days=30,
                            retention_artifacts_days_by_kind="chart=7,model=never", retention_keep_successful_runs=2,
                            retention_batch_rows=3)
    job = retention_job(settings, db.engine, db.sessions, store)
    counted = {"service": "artifacts", "target": "log_records"}
    counted_before = REGISTRY.get_sample_value("ibflow_retention_removed_total", counted) or 0
    removals = await job.run_once()
    assert REGISTRY.get_sample_value("ibflow_retention_removed_total", counted) - counted_before == 8

    assert await db.artifact_names() == {
        "s1 model", "f1 model",                              # model=never
        "s2 chart", "s2 metrics", "s3 chart", "s3 metrics",  # the last two succeeded runs, whatever their age
        "recent chart", "recent metrics",                    # young enough
        "flying old metrics",                                # its run is still in flight
    }
    async with db.sessions() as session:
        messages = set(await session.scalars(select(LogRecord.message)))
    assert messages == {"recent line", "flying line"}

    # The counters the consumer keeps follow what is left.
    s1, recent, f1 = await db.run("s1"), await db.run("recent"), await db.run("f1")
    assert (s1.artifact_count, s1.log_count) == (1, 0)
    assert (recent.artifact_count, recent.log_count) == (2, 1)
    assert f1.artifact_count == 1
    async with db.sessions() as session:
        step = await session.get(RunStep, ("s1", "train"))
    assert step.artifact_count == 1

    by_rule = {r.rule: r for r in removals}
    logs = next(r for r in removals if r.target == "log_records")
    assert logs.removed == 8 and logs.batches == 3  # batches of at most 3 rows
    charts = by_rule["artifacts of kind chart older than 7 days, except those of the last 2 succeeded runs "
                     "of each workflow and of runs still in flight"]
    assert charts.removed == 3 and charts.detail["kinds"] == {"chart": 3}
    others = next(r for r in removals if r.rule.startswith("artifacts of every other kind older than 30 days"))
    assert others.removed == 3 and others.detail["kinds"] == {"metrics": 3}

    async with db.sessions() as session:
        ledger = (await session.scalars(select(RetentionLedgerEntry).order_by(RetentionLedgerEntry.id))).all()
    assert [(row.target, row.removed) for row in ledger] == [("log_records", 8), ("artifacts", 3), ("artifacts", 3)]
    assert all(row.cutoff is not None and row.error is None for row in ledger)

    # A second sweep finds nothing more and records nothing.
    again = await job.run_once()
    assert sum(r.removed for r in again) == 0
    assert await db.scalar(select(func.count()).select_from(RetentionLedgerEntry)) == 3


async def test_blobs_no_artifact_references_are_collected_and_shared_or_fresh_ones_stay(db, store, monkeypatch):
    monkeypatch.setattr(blob_collection, "CHUNK", 2)  # several chunks, each with its own references
    shared, only_expired, orphan, fresh_orphan, put_again = (
        f"{name}\n".encode() * 1000 for name in ("shared", "only-expired", "orphan", "fresh-orphan", "put-again"))
    await db.store(
        *run_events("old", days_ago(90), outcome="failed"), *run_events("kept", days_ago(80)),
        await stored(store, "old", "shared csv", shared, days_ago(90)),
        await stored(store, "old", "expired csv", only_expired, days_ago(90)),
        await stored(store, "kept", "kept csv", shared, days_ago(80)),
    )
    for data in (orphan, fresh_orphan, put_again):
        await store.put(data)
    for data in (shared, only_expired, orphan, put_again):
        age_blob(store, data, hours=48)
    await store.put(put_again)  # written again by a run: as new as a fresh blob

    settings = settings_for(db.url, store, retention_artifacts_days=30, retention_keep_successful_runs=1,
                            retention_blob_grace_hours=24)
    removals = await retention_job(settings, db.engine, db.sessions, store).run_once()

    blobs = next(r for r in removals if r.target == "blobs")
    assert blobs.removed == 2 and blobs.batches == 2 and blobs.detail["candidates"] == 3
    assert blobs.removed_bytes == len(only_expired) + len(orphan)
    assert set(blobs.detail["sample"]) == {hashlib.sha256(d).hexdigest() for d in (only_expired, orphan)}
    left = {p.name for p in (store.root / "sha256").rglob("*") if p.is_file()}
    assert left == {hashlib.sha256(d).hexdigest() for d in (shared, fresh_orphan, put_again)}
    assert await db.artifact_names() == {"kept csv"}
    # What is kept still reads back and matches its hash.
    async with db.sessions() as session:
        kept = await session.scalar(select(Artifact).where(Artifact.name == "kept csv"))
    assert await store.read_bytes(kept.uri) == shared


async def test_no_blob_is_collected_that_a_run_in_flight_may_have_written(db, store):
    orphan = b"written by the run still going, its event not stored yet\n" * 100
    await db.store(*run_events("slow", NOW - timedelta(hours=40), outcome="running"),
                   log("slow", "still working", NOW - timedelta(minutes=1)))
    await store.put(orphan)
    age_blob(store, orphan, hours=30)  # older than the grace, younger than the run
    settings = settings_for(db.url, store, retention_blob_grace_hours=24)
    removals = await retention_job(settings, db.engine, db.sessions, store).run_once()
    assert next(r for r in removals if r.target == "blobs").removed == 0
    assert list((store.root / "sha256").rglob(hashlib.sha256(orphan).hexdigest()))

    # Once the run has been quiet for longer than the abandoned window it no longer counts.
    quiet = settings_for(db.url, store, retention_blob_grace_hours=24, artifacts_run_abandoned_after_seconds=30)
    removals = await retention_job(quiet, db.engine, db.sessions, store).run_once()
    assert next(r for r in removals if r.target == "blobs").removed == 1


async def test_a_row_the_consumer_holds_is_skipped_not_waited_for(db, store):
    await db.store(*run_events("old", days_ago(90), outcome="failed"),
                   *(log("old", f"line {i}", days_ago(90)) for i in range(4)))
    settings = settings_for(db.url, store, retention_logs_days=30)
    async with db.engine.connect() as holder:
        held = await holder.scalar(text("SELECT id FROM log_records ORDER BY id LIMIT 1 FOR UPDATE"))
        removals = await retention_job(settings, db.engine, db.sessions, store).run_once()
        assert removals[0].removed == 3
        await holder.rollback()
    async with db.sessions() as session:
        assert list(await session.scalars(select(LogRecord.id))) == [held]
    removals = await retention_job(settings, db.engine, db.sessions, store).run_once()
    assert removals[0].removed == 1


async def test_one_replica_sweeps_at_a_time(db, store):
    await db.store(*run_events("old", days_ago(90), outcome="failed"), log("old", "line", days_ago(90)))
    settings = settings_for(db.url, store, retention_logs_days=30)
    async with db.engine.connect() as other_replica:
        await other_replica.execute(text("SELECT pg_advisory_lock(hashtext('ibflow-artifacts-retention'))"))
        assert await retention_job(settings, db.engine, db.sessions, store).run_once() is None
        await other_replica.execute(text("SELECT pg_advisory_unlock(hashtext('ibflow-artifacts-retention'))"))
    assert (await retention_job(settings, db.engine, db.sessions, store).run_once())[0].removed == 1


async def test_the_periodic_job_sweeps_by_itself(db, store):
    await db.store(*run_events("old", days_ago(90), outcome="failed"), log("old", "line", days_ago(90)))
    settings = settings_for(db.url, store, retention_logs_days=30, retention_interval_seconds=0.2)
    job = retention_job(settings, db.engine, db.sessions, store).start()
    try:
        for _ in range(300):
            if await db.scalar(select(func.count()).select_from(RetentionLedgerEntry)):
                break
            await asyncio.sleep(0.1)
    finally:
        await job.stop()
    assert await db.scalar(select(func.count()).select_from(LogRecord)) == 0


def test_kind_days_are_read_from_the_environment_form():
    parsed = ArtifactsSettings(database_url="postgresql://x@h/db",
                               retention_artifacts_days_by_kind="chart=7, model=never,report = 90")
    assert parsed.retention_artifacts_days_by_kind == {"chart": 7, "model": None, "report": 90}
    with pytest.raises(ValueError, match="KIND=DAYS"):
        ArtifactsSettings(database_url="postgresql://x@h/db", retention_artifacts_days_by_kind="chart:7")
    with pytest.raises(ValueError, match="at least 1 day"):
        ArtifactsSettings(database_url="postgresql://x@h/db", retention_artifacts_days_by_kind="chart=0")
