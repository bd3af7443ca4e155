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
from tests.chaos.chaos_ingest import (
    expected_once,
    ingest_events,
    send_all,
    stored,
    stored_exactly_once,
    wait_all_stored,
)
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
    events = ingest_events(prefix, EXECUTIONS, LOGS_PER_EXECUTION, ARTIFACTS_PER_EXECUTION)
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
            await send_all(producer, events[sent:point])
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
        await send_all(producer, events[sent:])
        assert await wait_all_stored(database_url, prefix, TOTAL) == TOTAL
        assert await stored_exactly_once(database_url, prefix, events) == expected_once(events)
        letters = await dead_letters(kafka_bootstrap, {f"{prefix}-{n:03d}" for n in range(EXECUTIONS)})
        assert letters == []
        # each kill came while the ingest was under way
        assert all(stored_then < TOTAL for _, _, stored_then in kills), kills
    finally:
        await producer.stop()
        for replica in replicas:  # one at a time (see above)
            replica.stop()
        shutil.rmtree(workdir, ignore_errors=True)
