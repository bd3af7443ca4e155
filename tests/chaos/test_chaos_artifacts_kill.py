"""kill -9 of artifacts replicas at random points of a 20,000-event ingest.

Three `ibflow artifacts` processes share one consumer group, so every kill is also a
rebalance: the dead member's partitions move to the others after its session timeout,
and its replacement takes some back. Whatever a killed replica had stored but not
committed comes again and must be skipped by event id; whatever it had fetched but not
stored must be stored by someone. At the end every event is a row exactly once.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from services.artifacts.ingest.consumer import CONSUMED_TOPICS
from shared.events import ArtifactCreated, Event, LogRecorded
from tests.chaos.chaos_db import fetch, fetch_value
from tests.chaos.chaos_kafka import dead_letters, skip_to_end
from tests.chaos.chaos_processes import ServiceProcess, consumer_running, ibflow_command
from tests.support import private_tmp

pytestmark = pytest.mark.chaos

SEED = 20261201
EXECUTIONS = 200
LOGS_PER_EXECUTION = 90
ARTIFACTS_PER_EXECUTION = 10
TOTAL = EXECUTIONS * (LOGS_PER_EXECUTION + ARTIFACTS_PER_EXECUTION)
KILLS = 3
REPLICAS = 3
WORKFLOW = "chaos_ingest"


def the_events(prefix: str) -> list[Event]:
    """Every execution's logs and artifacts, interleaved across executions (and so across
    partitions), each execution's own events in order."""
    per_execution = []
    for n in range(EXECUTIONS):
        ids = {"workflow_id": WORKFLOW, "execution_id": f"{prefix}-{n:03d}", "step_name": "ingest"}
        events: list[Event] = [LogRecorded(**ids, message=f"line {i}", fields={"i": i})
                               for i in range(LOGS_PER_EXECUTION)]
        events += [ArtifactCreated(**ids, name=f"artifact {i}", kind="dataset", payload={"i": i})
                   for i in range(ARTIFACTS_PER_EXECUTION)]
        per_execution.append(events)
    return [events[i] for i in range(LOGS_PER_EXECUTION + ARTIFACTS_PER_EXECUTION) for events in per_execution]


async def stored(database_url: str, prefix: str) -> int:
    return await fetch_value(
        database_url,
        "SELECT (SELECT count(*) FROM artifacts WHERE execution_id LIKE $1)"
        " + (SELECT count(*) FROM log_records WHERE execution_id LIKE $1)",
        f"{prefix}-%",
    )


async def wait_all_stored(database_url: str, prefix: str, timeout: float = 240) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    count = 0
    while loop.time() < deadline:
        count = await stored(database_url, prefix)
        if count >= TOTAL:
            return count
        await asyncio.sleep(0.5)
    raise AssertionError(f"only {count} of {TOTAL} events stored within {timeout:.0f}s")


def wait_group_settled(replicas: list[ServiceProcess], partitions: int, timeout: float = 90) -> None:
    """Until every replica holds partitions and together they hold each exactly once."""
    deadline = time.monotonic() + timeout
    held: list[list[str]] = []
    while time.monotonic() < deadline:
        held = [(replica.health() or {}).get("components", {}).get("consumer", {}).get("detail", {})
                .get("assigned_partitions") or [] for replica in replicas]
        flat = [tp for assigned in held for tp in assigned]
        if all(held) and len(flat) == len(set(flat)) == partitions:
            return
        time.sleep(0.3)
    raise AssertionError(f"the group did not settle within {timeout:.0f}s: {held}")


async def test_three_replicas_killed_at_random_points_lose_and_double_nothing(
    new_database, kafka_env, kafka_bootstrap
):
    rng = random.Random(SEED)
    database_url = new_database("chaos_ingest")
    ibflow_command("migrate", {"DATABASE_URL": database_url})
    group_id = f"ibflow-artifacts-chaos-{uuid.uuid4().hex[:8]}"
    partitions = await skip_to_end(kafka_bootstrap, group_id, CONSUMED_TOPICS)
    workdir = private_tmp("chaos-ingest")
    env = {**kafka_env, "DATABASE_URL": database_url, "ARTIFACTS_CONSUMER_GROUP_ID": group_id,
           "ARTIFACT_STORE_URL": (workdir / "store").as_uri(), "LOG_LEVEL": "WARNING"}
    replicas = [ServiceProcess("artifacts", env, workdir, name=f"artifacts-{i}") for i in range(REPLICAS)]
    prefix = f"chaos-{uuid.uuid4().hex[:8]}"
    events = the_events(prefix)
    # one kill at a random point of each third of the stream, each replica hit once
    third = TOTAL // KILLS
    kill_points = [rng.randrange(k * third + third // 10, (k + 1) * third - third // 10) for k in range(KILLS)]
    victims = rng.sample(replicas, KILLS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    kills = []
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            await asyncio.to_thread(replica.wait_healthy, consumer_running)
        await asyncio.to_thread(wait_group_settled, replicas, partitions)
        sent = 0
        for point, victim in zip(kill_points, victims, strict=True):
            await asyncio.gather(*[await producer.send(e.topic, e.to_bytes(), key=e.key) for e in events[sent:point]])
            sent = point
            # while the replicas are still storing what was just sent
            await asyncio.sleep(rng.uniform(0.05, 0.3))
            kills.append((victim.name, sent, await stored(database_url, prefix)))
            victim.kill()
            # the next kill waits for the group to settle: two members leaving in one
            # rebalance can wedge a tansu group for good
            victim.start()
            await asyncio.to_thread(victim.wait_healthy, consumer_running)
            await asyncio.to_thread(wait_group_settled, replicas, partitions)
        await asyncio.gather(*[await producer.send(e.topic, e.to_bytes(), key=e.key) for e in events[sent:]])
        assert await wait_all_stored(database_url, prefix) == TOTAL

        rows = await fetch(
            database_url,
            "SELECT event_id FROM artifacts WHERE execution_id LIKE $1"
            " UNION ALL SELECT event_id FROM log_records WHERE execution_id LIKE $1",
            f"{prefix}-%",
        )
        assert len(rows) == TOTAL
        assert {row["event_id"] for row in rows} == {e.event_id for e in events}
        # the runs' counters move only for events stored the first time: a redelivered
        # batch that counted twice would show here
        totals = (await fetch(
            database_url,
            "SELECT count(*) AS runs, sum(log_count) AS logs, sum(artifact_count) AS artifacts"
            " FROM runs WHERE execution_id LIKE $1",
            f"{prefix}-%",
        ))[0]
        assert dict(totals) == {"runs": EXECUTIONS, "logs": EXECUTIONS * LOGS_PER_EXECUTION,
                                "artifacts": EXECUTIONS * ARTIFACTS_PER_EXECUTION}
        letters = await dead_letters(kafka_bootstrap, {f"{prefix}-{n:03d}" for n in range(EXECUTIONS)})
        assert letters == []
        # each kill came while the ingest was under way
        assert all(stored_then < TOTAL for _, _, stored_then in kills), kills
    finally:
        await producer.stop()
        for replica in replicas:  # one at a time (see above)
            replica.stop()
        shutil.rmtree(workdir, ignore_errors=True)
