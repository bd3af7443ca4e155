"""kill -9 of a scheduler between claiming a slot and publishing its RunRequested.

Two real `ibflow scheduler` processes on one database: the first claims a due slot
and is killed before its publication reaches the broker (its publisher is replaced by
one that never returns, so the kill lands exactly there); the second, started after,
re-publishes the claimed slot once the claim's lease has run out. The topic holds
exactly one RunRequested per slot, with the event id the claim fixed.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from services.scheduler.execution_ids import request_event_id
from shared import topics
from shared.events import decode_event
from tests.chaos.chaos_db import fetch
from tests.chaos.chaos_kafka import read_topic
from tests.chaos.chaos_processes import ServiceProcess, ibflow_command
from tests.support import private_tmp

pytestmark = pytest.mark.chaos

LEASE_SECONDS = 3
MARKER = "claimed, not publishing:"
# The scheduler service as `ibflow scheduler` runs it, with a publisher that never
# returns: the process is killed while it waits there, after its claim committed.
CLAIM_THEN_HANG = f"""
import asyncio, sys
from services.scheduler import publisher

async def publish_never(self, key, value, **_):
    print({MARKER!r}, key.decode(), flush=True)
    await asyncio.Event().wait()

publisher.KafkaRunPublisher.publish = publish_never
from ibflow.cli import main
sys.exit(main(["scheduler"]))
"""


async def add_minutely_schedule(database_url: str, workflow_id: str) -> None:
    """A schedule whose last look was just before the latest minute: that minute is due now."""
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0)
    await fetch(
        database_url,
        "INSERT INTO schedules (workflow_id, cron, timezone, paused, misfire_policy, misfire_window_seconds,"
        " max_active_runs, calendar, default_params, evaluated_until, created_at, updated_at)"
        " VALUES ($1, '* * * * *', 'UTC', false, 'all', 3600, NULL, NULL, '{}'::jsonb, $2, $3, $3)",
        workflow_id, minute - timedelta(seconds=1), now,
    )


async def slots(database_url: str, workflow_id: str) -> dict[str, dict]:
    rows = await fetch(database_url, "SELECT execution_id, state, claimed_by, attempts FROM schedule_slots"
                                     " WHERE workflow_id = $1", workflow_id)
    return {row["execution_id"]: dict(row) for row in rows}


def wait_for_marker(process: ServiceProcess, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.alive, f"the scheduler exited:\n{process.log_tail()}"
        for line in process.log_path.read_text(errors="replace").splitlines():
            if line.startswith(MARKER):
                return line.removeprefix(MARKER).strip()
        time.sleep(0.1)
    raise AssertionError(f"the scheduler claimed nothing within {timeout}s:\n{process.log_tail()}")


async def wait_published(database_url: str, workflow_id: str, execution_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        slot = (await slots(database_url, workflow_id)).get(execution_id)
        if slot and slot["state"] == "published":
            return slot
        await asyncio.sleep(0.3)
    raise AssertionError(f"slot {execution_id} not published within {timeout}s: {slot}")


async def test_a_scheduler_killed_between_claim_and_publish_leaves_exactly_one_request(
    new_database, kafka_env, kafka_bootstrap
):
    database_url = new_database("chaos_scheduler")
    ibflow_command("migrate", {"DATABASE_URL": database_url})
    workflow_id = f"chaos_scheduler_{uuid.uuid4().hex[:8]}"
    await add_minutely_schedule(database_url, workflow_id)
    workdir = private_tmp("chaos-scheduler")
    env = {**kafka_env, "DATABASE_URL": database_url, "SCHEDULER_PUBLISH_LEASE_SECONDS": str(LEASE_SECONDS),
           "SCHEDULER_TICK_SECONDS": "0.5", "SCHEDULER_MISFIRE_GRACE_SECONDS": "300"}
    doomed = ServiceProcess("scheduler", {**env, "SCHEDULER_INSTANCE_ID": "doomed"}, workdir, name="doomed",
                            argv=[sys.executable, "-c", CLAIM_THEN_HANG])
    survivor = ServiceProcess("scheduler", {**env, "SCHEDULER_INSTANCE_ID": "survivor"}, workdir, name="survivor")

    def requests_of_this_schedule(record) -> bool:
        return record.key is not None and record.key.decode(errors="replace").startswith(f"scheduled-{workflow_id}-")

    try:
        doomed.start()
        execution_id = await asyncio.to_thread(wait_for_marker, doomed)
        doomed.kill()
        claimed = (await slots(database_url, workflow_id))[execution_id]
        assert (claimed["state"], claimed["claimed_by"], claimed["attempts"]) == ("claimed", "doomed", 1)
        assert await read_topic(kafka_bootstrap, topics.RUNS_REQUESTED, requests_of_this_schedule) == []

        survivor.start()
        published = await wait_published(database_url, workflow_id, execution_id)
        assert (published["claimed_by"], published["attempts"]) == ("survivor", 2)
        records = await read_topic(kafka_bootstrap, topics.RUNS_REQUESTED, requests_of_this_schedule)
    finally:
        survivor.stop()
        doomed.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    per_slot = Counter(record.key.decode() for record in records)
    assert per_slot[execution_id] == 1
    # slots that came due meanwhile went out normally, each once too
    fired = {key for key, slot in (await slots(database_url, workflow_id)).items() if slot["state"] == "published"}
    assert set(per_slot) <= fired and max(per_slot.values()) == 1, per_slot
    request = next(decode_event(r.value) for r in records if r.key.decode() == execution_id)
    assert request.event_id == request_event_id(execution_id)
    assert request.trigger == "schedule"
    ledger = await fetch(database_url, "SELECT outcome, detail, recorded_by FROM schedule_ledger"
                                       " WHERE execution_id = $1", execution_id)
    assert any(row["recorded_by"] == "survivor" and "attempt 2" in row["detail"] for row in ledger), ledger
