"""store_batch on a real PostgreSQL: each event stored once, whatever is redelivered, and
runs and steps exactly where `lifecycle.apply_event` folding every new event in time
order puts them, though artifacts and log lines are copied and counted per batch."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import selectinload

from services.artifacts.database import new_engine, new_sessionmaker
from services.artifacts.db.models import Artifact, LogRecord, Run, RunEvent
from services.artifacts.ingest.lifecycle import apply_event, step_of
from services.artifacts.ingest.store import StoreResult, store_batch
from services.artifacts.migrate import migrate
from shared.database import normalize_database_url
from shared.events import (
    ArtifactCreated,
    Event,
    LogRecorded,
    RunFailed,
    RunRequested,
    RunStarted,
    RunSucceeded,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)

pytestmark = pytest.mark.integration
WF = "ibkr_trading_signal_workflow"
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


@pytest.fixture(scope="module")
async def sessions(new_database) -> AsyncIterator[async_sessionmaker]:
    url = new_database()
    await migrate(url)
    engine = new_engine(normalize_database_url(url))
    yield new_sessionmaker(engine)
    await engine.dispose()


async def store(sessions: async_sessionmaker, events: list[Event]) -> StoreResult:
    async with sessions() as session, session.begin():
        return await store_batch(session, events)


def ids(execution_id: str) -> dict:
    return {"workflow_id": WF, "execution_id": execution_id}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def stored_counts(sessions: async_sessionmaker, execution_id: str) -> dict:
    async with sessions() as session:
        run = await session.get(Run, execution_id, options=[selectinload(Run.steps)])

        def count(model):
            return select(func.count()).select_from(model).where(model.execution_id == execution_id)

        return {
            "artifacts": await session.scalar(count(Artifact)),
            "logs": await session.scalar(count(LogRecord)),
            "run_events": await session.scalar(count(RunEvent)),
            "artifact_count": run.artifact_count,
            "log_count": run.log_count,
            "status": run.status,
            "steps": [(s.step_name, s.position, s.status, s.artifact_count) for s in run.steps],
        }


async def test_duplicates_within_and_across_batches_are_stored_once(sessions):
    run = ids(f"dupes-{uuid.uuid4().hex[:8]}")
    artifact = ArtifactCreated(**run, step_name="train", name="model", kind="model", payload={"auc": 0.7},
                               occurred_at=at(1))
    log = LogRecorded(**run, step_name="train", message="training", fields={"epoch": 1}, occurred_at=at(2))
    assert await store(sessions, [artifact, artifact, log, log]) == StoreResult(stored=2, duplicates=2)

    # Redelivered with new ones, and the same artifact again under a new event_id.
    again = artifact.model_copy(update={"event_id": uuid.uuid4()})
    second = ArtifactCreated(**run, step_name="evaluate", name="metrics", kind="metrics", payload={"f1": 0.5},
                             occurred_at=at(3))
    late_log = LogRecorded(**run, message="done", occurred_at=at(4))
    result = await store(sessions, [log, artifact, again, second, late_log, late_log])
    assert result == StoreResult(stored=2, duplicates=4)
    assert await stored_counts(sessions, run["execution_id"]) == {
        "artifacts": 2, "logs": 2, "run_events": 0, "artifact_count": 2, "log_count": 2, "status": "external",
        "steps": [("train", 0, "external", 1), ("evaluate", 1, "external", 1)],
    }

    # The whole batch again: nothing new, nothing counted twice.
    assert await store(sessions, [artifact, log, second, late_log]) == StoreResult(stored=0, duplicates=4)
    assert (await stored_counts(sessions, run["execution_id"]))["artifact_count"] == 2


async def test_a_batch_mixing_lifecycle_artifacts_and_logs_of_several_runs(sessions):
    tag = uuid.uuid4().hex[:8]
    ibflow, outside, adopted = ids(f"ibflow-{tag}"), ids(f"outside-{tag}"), ids(f"adopted-{tag}")
    batch = [
        RunRequested(**ibflow, trigger="manual", occurred_at=at(0)),
        RunStarted(**ibflow, steps=STEPS[:2], occurred_at=at(1)),
        StepStarted(**ibflow, step_name=STEPS[0], occurred_at=at(2)),
        *[LogRecorded(**ibflow, step_name=STEPS[0], message=f"bar {i}", occurred_at=at(3 + i)) for i in range(5)],
        ArtifactCreated(**ibflow, step_name=STEPS[0], name="bars", kind="dataset", payload=[1], occurred_at=at(9)),
        StepSucceeded(**ibflow, step_name=STEPS[0], occurred_at=at(10)),
        *[ArtifactCreated(**outside, step_name=task, name=task, kind="metrics", payload={"n": i},
                          dag_id="my_dag", task_id=task, occurred_at=at(20 + i))
          for i, task in enumerate(["extract", "load", "extract"])],
        LogRecorded(**outside, message="no step", occurred_at=at(19)),
        ArtifactCreated(**adopted, step_name="late", name="early bird", kind="dataset", payload={}, occurred_at=at(30)),
    ]
    result = await store(sessions, random.Random(7).sample(batch, len(batch)))
    assert result == StoreResult(stored=len(batch), duplicates=0)
    assert await stored_counts(sessions, ibflow["execution_id"]) == {
        "artifacts": 1, "logs": 5, "run_events": 4, "artifact_count": 1, "log_count": 5, "status": "running",
        "steps": [(STEPS[0], 0, "succeeded", 1), (STEPS[1], 1, "pending", 0)],
    }
    assert await stored_counts(sessions, outside["execution_id"]) == {
        "artifacts": 3, "logs": 1, "run_events": 0, "artifact_count": 3, "log_count": 1, "status": "external",
        "steps": [("extract", 0, "external", 2), ("load", 1, "external", 1)],
    }
    # Its run.started arrives in a later batch with more artifacts: planned steps come first.
    await store(sessions, [
        RunStarted(**adopted, steps=["first", "late"], occurred_at=at(29)),
        ArtifactCreated(**adopted, step_name="late", name="second", kind="dataset", payload={}, occurred_at=at(31)),
    ])
    assert await stored_counts(sessions, adopted["execution_id"]) == {
        "artifacts": 2, "logs": 0, "run_events": 1, "artifact_count": 2, "log_count": 0, "status": "running",
        "steps": [("first", 0, "pending", 0), ("late", 1, "running", 2)],
    }


# --- the same result as folding every new event with apply_event --------------------------


class Reference:
    """What store_batch did before it copied and counted per batch: every new event of a
    batch folded into its run by `apply_event`, in time order, counts kept one by one."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.event_ids: set = set()
        self.artifact_ids: set = set()

    def store(self, events: list[Event]) -> int:
        unique = list({e.event_id: e for e in events}.values())
        for event in sorted(unique, key=lambda e: e.occurred_at):
            if event.execution_id not in self.runs:
                self.runs[event.execution_id] = Run(
                    execution_id=event.execution_id, workflow_id=event.workflow_id, status="queued",
                    opened_at=event.occurred_at, params={}, summary={}, planned_steps=[], artifact_count=0,
                    log_count=0, steps=[],
                )
        new = []
        for event in unique:
            if event.event_id in self.event_ids:
                continue
            if isinstance(event, ArtifactCreated):
                if event.artifact_id in self.artifact_ids:
                    continue
                self.artifact_ids.add(event.artifact_id)
            self.event_ids.add(event.event_id)
            new.append(event)
        for event in sorted(new, key=lambda e: e.occurred_at):
            run = self.runs[event.execution_id]
            apply_event(run, event)
            if isinstance(event, ArtifactCreated):
                run.artifact_count += 1
                if event.step_name is not None:
                    step_of(run, event.step_name, seen_running=True).artifact_count += 1
            elif isinstance(event, LogRecorded):
                run.log_count += 1
        return len(new)


RUN_FIELDS = ("status", "opened_at", "last_event_at", "requested_at", "started_at", "finished_at", "trigger",
              "artifact_count", "log_count", "planned_steps", "error")
STEP_FIELDS = ("step_name", "position", "status", "attempt", "artifact_count", "started_at", "finished_at",
               "error", "skipped_reason")


def state(run: Run) -> dict:
    return {
        **{name: getattr(run, name) for name in RUN_FIELDS},
        "steps": sorted(tuple(getattr(s, name) for name in STEP_FIELDS) for s in run.steps),
    }


def random_runs(rng: random.Random, tag: str) -> list[Event]:
    """Runs of ibflow and of outside producers, their events' times shuffled a little."""
    events: list[Event] = []
    for n in range(4):
        run = ids(f"diff-{tag}-{n}")
        steps = rng.sample(STEPS, rng.randint(1, 4))
        clock = rng.uniform(0, 100)

        def when() -> datetime:
            return at(clock + rng.uniform(-3, 30))

        if rng.random() < 0.6:  # ibflow ran it
            events += [RunRequested(**run, trigger="manual", occurred_at=when()),
                       RunStarted(**run, steps=steps[: rng.randint(0, len(steps))], occurred_at=when())]
        for step in steps:
            if rng.random() < 0.6:
                events.append(StepStarted(**run, step_name=step, attempt=rng.randint(1, 2), occurred_at=when()))
            for i in range(rng.randint(0, 4)):
                events.append(LogRecorded(**run, step_name=rng.choice([step, None]), message=f"{step} {i}",
                                          occurred_at=when()))
            for i in range(rng.randint(0, 3)):
                events.append(ArtifactCreated(**run, step_name=rng.choice([step, step, None]), name=f"{step}-{i}",
                                              kind="dataset", payload={"i": i}, occurred_at=when()))
            outcome = rng.random()
            if outcome < 0.4:
                events.append(StepSucceeded(**run, step_name=step, occurred_at=when()))
            elif outcome < 0.5:
                events.append(StepFailed(**run, step_name=step, error="boom", occurred_at=when()))
            elif outcome < 0.6:
                events.append(StepSkipped(**run, step_name=step, reason="earlier failed", occurred_at=when()))
        ending = rng.random()
        if ending < 0.3:
            events.append(RunSucceeded(**run, occurred_at=when()))
        elif ending < 0.4:
            events.append(RunFailed(**run, error="boom", occurred_at=when()))
    return events


def random_batches(rng: random.Random, events: list[Event]) -> list[list[Event]]:
    """Arrival in a few batches, some events twice (in one batch or in a later one) and an
    artifact sent again under a new event_id."""
    order = rng.sample(events, len(events))
    again = rng.sample(order, len(order) // 5)
    artifacts = [e for e in order if isinstance(e, ArtifactCreated)]
    if artifacts:
        again.append(rng.choice(artifacts).model_copy(update={"event_id": uuid.uuid4()}))
    for event in again:
        order.insert(rng.randint(0, len(order)), event)
    cuts = sorted(rng.sample(range(1, len(order)), min(3, len(order) - 1)))
    return [order[start:end] for start, end in zip([0, *cuts], [*cuts, len(order)], strict=True)]


@pytest.mark.parametrize("seed", range(25))
async def test_runs_and_steps_end_where_folding_each_new_event_puts_them(sessions, seed):
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    reference = Reference()
    for batch in random_batches(rng, random_runs(rng, tag)):
        result = await store(sessions, batch)
        assert result.stored == reference.store(batch)
        assert result.stored + result.duplicates == len(batch)
    async with sessions() as session:
        stored = (await session.scalars(
            select(Run).where(Run.execution_id.in_(list(reference.runs))).options(selectinload(Run.steps))
        )).all()
    assert {run.execution_id: state(run) for run in stored} == {
        execution_id: state(run) for execution_id, run in reference.runs.items()
    }
