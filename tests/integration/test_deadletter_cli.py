"""`ibflow deadletter list|replay` against the real broker.

Other tests leave dead letters of their own on the shared broker, so each letter here
comes from a topic made for this module, and every assertion looks only at those.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ibflow import cli, deadletter, stack_config
from shared import topics
from shared.events import DeadLetter
from shared.kafka import ensure_topics
from shared.settings import KafkaSettings

pytestmark = pytest.mark.integration
T0 = datetime.now(UTC)


@pytest.fixture(scope="module")
def source_topic() -> str:
    return f"test.deadletter-cli.{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def settings(kafka_env) -> KafkaSettings:
    return KafkaSettings(**{key.lower(): value for key, value in kafka_env.items()})


@pytest.fixture(scope="module")
async def letters(settings, source_topic) -> list[DeadLetter]:
    """Three dead letters from `source_topic` (one of them not UTF-8), and a record that is no dead letter."""
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(source_topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    made = [
        DeadLetter.of(consumer="artifacts", topic=source_topic, value=b'{"event_type": "artifact.created"}',
                      reason="invalid event: name: Field required", partition=2, offset=7, key=b"run-a"),
        DeadLetter.of(consumer="scheduler", topic=source_topic, value=b"\xff\xfe not utf-8",
                      reason="not valid UTF-8 JSON", partition=0, offset=3, key=b"run-b"),
        DeadLetter.of(consumer="signals", topic=source_topic, value=b"[1, 2]",
                      reason="event must be a JSON object, got list", partition=1, offset=0, key=None),
    ]
    # Distinct times, oldest first, so the order of the listing is known.
    made = [letter.model_copy(update={"failed_at": T0 + timedelta(seconds=i)}) for i, letter in enumerate(made)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_idempotence=settings.kafka_enable_idempotence)
    await producer.start()
    try:
        await producer.send_and_wait(topics.DEADLETTER, b"not a dead letter", key=b"noise")
        for letter in reversed(made):  # the listing sorts by time, not by arrival
            await producer.send_and_wait(topics.DEADLETTER, letter.to_bytes(), key=letter.source_key
                                         and letter.source_key.encode())
    finally:
        await producer.stop()
    return made


@pytest.fixture
def cli_env(monkeypatch, tmp_path, kafka_env):
    """The CLI as a user runs it: the test broker's variables, no stack file, no .env."""
    for name in stack_config.RECORDED:
        monkeypatch.delenv(name, raising=False)
    for name, value in kafka_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(stack_config.STACK_FILE_ENV, str(tmp_path / "stack.json"))
    monkeypatch.chdir(tmp_path)


async def read_all(settings: KafkaSettings, topic: str, idle_seconds: float = 1.5) -> list:
    """Every record of `topic`: read until each partition has answered and nothing came for a while."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    found = []
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        quiet_since = time.monotonic()
        while (any(consumer.highwater(tp) is None for tp in partitions)
               or time.monotonic() - quiet_since < idle_seconds):
            for records in (await consumer.getmany(timeout_ms=250)).values():
                found.extend(records)
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return found


async def replays_of(settings: KafkaSettings, topic: str, letter: DeadLetter, timeout: float = 60) -> list:
    """The records replayed from `letter`, once at least one has arrived."""
    header = (deadletter.REPLAY_HEADER, str(letter.dead_letter_id).encode())
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in await read_all(settings, topic) if header in list(r.headers)]
        if found or time.monotonic() > deadline:
            return found


def cli_main(*argv: str) -> int:
    # The CLI runs its own event loop, as from a shell: keep it off the test's loop.
    return asyncio.get_running_loop().run_in_executor(None, cli.main, list(argv))


async def test_reading_finds_every_letter_and_skips_what_is_not_one(settings, letters, source_topic):
    reading = await deadletter.read_letters(settings, source_topic=source_topic)
    assert [found.letter for found in reading.letters] == letters
    assert reading.unreadable >= 1
    assert reading.letters[1].original == b"\xff\xfe not utf-8"


async def test_list_shows_time_consumer_source_and_reason(cli_env, capsys, letters, source_topic):
    assert await cli_main("deadletter", "list", "--topic", source_topic) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == list(deadletter.LIST_COLUMNS)
    rows = lines[1:]
    assert [row.split()[2] for row in rows] == [str(letter.dead_letter_id) for letter in letters]
    first = rows[0]
    assert T0.strftime("%Y-%m-%d %H:%M:%S") in first
    assert "artifacts" in first and f"{source_topic}[2]@7" in first and "run-a" in first
    assert first.endswith("invalid event: name: Field required")


async def test_list_limit_keeps_the_most_recent(cli_env, capsys, letters, source_topic):
    assert await cli_main("deadletter", "list", "--topic", source_topic, "--limit", "2") == 0
    captured = capsys.readouterr()
    ids = [str(letter.dead_letter_id) for letter in letters[1:]]
    assert [row.split()[2] for row in captured.out.splitlines()[1:]] == ids
    assert "2 of 3 dead letter(s) shown" in captured.err


async def test_replay_publishes_the_original_bytes_with_the_original_key(cli_env, capsys, settings, letters,
                                                                          source_topic):
    letter = letters[1]
    prefix = str(letter.dead_letter_id)[:13]  # a unique prefix is enough
    assert await cli_main("deadletter", "replay", "--id", prefix, "--yes") == 0
    assert f"replayed {letter.dead_letter_id} to {source_topic}" in capsys.readouterr().out
    (record,) = await replays_of(settings, source_topic, letter)
    assert record.value == b"\xff\xfe not utf-8"
    assert record.key == b"run-b"


async def test_replay_asks_first_and_without_a_terminal_needs_yes(cli_env, capsys, settings, letters,
                                                                   source_topic):
    before = await read_all(settings, source_topic)
    assert await cli_main("deadletter", "replay", "--all", "--topic", source_topic) == 1
    assert "pass --yes" in capsys.readouterr().err
    assert len(await read_all(settings, source_topic)) == len(before)


async def test_replay_all_of_a_topic(cli_env, capsys, settings, letters, source_topic):
    assert await cli_main("deadletter", "replay", "--all", "--topic", source_topic, "--yes") == 0
    assert capsys.readouterr().out.count("replayed ") == 3
    for letter in letters:
        replayed = await replays_of(settings, source_topic, letter)
        assert replayed, f"{letter.dead_letter_id} was not replayed"
        assert {(r.key, r.value) for r in replayed} == {
            (letter.source_key and letter.source_key.encode(), deadletter.Letter(letter, 0, 0).original)}


async def test_an_unknown_id_is_refused(cli_env, capsys, letters):
    assert await cli_main("deadletter", "replay", "--id", str(uuid.uuid4()), "--yes") == 1
    assert "no dead letter with id" in capsys.readouterr().err


async def test_a_letter_from_a_topic_that_no_longer_exists_is_not_replayed(settings, letters):
    gone = letters[0].model_copy(update={"source_topic": f"test.gone.{uuid.uuid4().hex[:8]}"})
    reading = await deadletter.read_letters(settings, source_topic=letters[0].source_topic)
    with pytest.raises(deadletter.DeadLetterError, match="no longer exists"):
        deadletter.check_replayable([deadletter.Letter(gone, 0, 0)], reading.existing_topics)
    with pytest.raises(deadletter.DeadLetterError, match="loop"):
        looped = letters[0].model_copy(update={"source_topic": topics.DEADLETTER})
        deadletter.check_replayable([deadletter.Letter(looped, 0, 0)], reading.existing_topics)


def test_letters_round_trip_through_json():
    letter = DeadLetter.of(consumer="c", topic="t", value=b"\x00\xff", reason="r")
    newer = {**json.loads(letter.to_bytes()), "attempts": 3}  # a field a newer producer adds
    parsed = deadletter.parse(json.dumps(newer).encode(), 0, 5)
    assert parsed is not None and parsed.letter == letter and parsed.original == b"\x00\xff"
    assert deadletter.parse(b"[]", 0, 6) is None
