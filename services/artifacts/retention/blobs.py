"""Garbage collection of artifact store blobs that no artifact references.

The store is content-addressed: one blob may back artifacts of many runs, so a blob
goes only when no artifact row names it, by its sha256 or by its URI. A blob that is
referenced by nothing yet may be on its way: the run that wrote it has not had its
`artifact.created` stored. So a blob also has to be older than both

- the grace period (`RETENTION_BLOB_GRACE_HOURS`): a `put` of bytes already stored
  refreshes the blob's time, so whatever a producer wrote or re-wrote within the grace
  is spared, ibflow's runs and outside producers alike; and
- the start of every run still in flight (queued or running and not abandoned), less
  a margin for clocks: a long run's early blobs wait until the run ends.

Blobs go in chunks: the references of a chunk are read after it was listed, so an
artifact stored meanwhile is seen, and the store re-checks each blob's time as it
deletes it (`delete_stale`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.artifacts.db.models import Artifact, Run
from shared.artifact_store import ArtifactStore, BlobInfo, UnsafeUriError
from shared.retention import Removal

# Clocks of the producer (a run's times) and of the store (a blob's) may differ by this much.
CLOCK_MARGIN = timedelta(minutes=10)
SAMPLE = 50
# Blobs judged per round trip to the database.
CHUNK = 5000
_DIGEST_TAIL = 64


async def collect_blobs(store: ArtifactStore, sessions: async_sessionmaker, *, now: datetime, grace: timedelta,
                        alive_since: datetime, rule: str) -> Removal:
    cutoff = now - grace
    async with sessions() as session:
        earliest_in_flight = await session.scalar(
            select(func.min(Run.opened_at)).where(
                Run.status.in_(("queued", "running")),
                func.coalesce(Run.last_event_at, Run.opened_at) >= alive_since,
            )
        )
    if earliest_in_flight is not None:
        cutoff = min(cutoff, earliest_in_flight - CLOCK_MARGIN)
    removal = Removal(target="blobs", rule=rule, cutoff=cutoff, removed_bytes=0)
    sample: list[str] = []
    candidates = 0
    chunk: list[BlobInfo] = []

    async def collect(blobs: list[BlobInfo]) -> None:
        # Asked after the listing: an artifact stored meanwhile is seen.
        referenced = await referenced_digests(sessions, [blob.sha256 for blob in blobs])
        for blob in blobs:
            if blob.sha256 in referenced:
                continue
            try:
                deleted = await store.delete_stale(blob.uri, cutoff)
            except UnsafeUriError:
                continue
            if deleted:
                removal.removed += 1
                removal.removed_bytes += blob.size_bytes
                if len(sample) < SAMPLE:
                    sample.append(blob.sha256)
        removal.batches += 1

    # In chunks, so neither the listing nor the references of a big store sit in memory.
    async for blob in store.list_blobs(cutoff):
        chunk.append(blob)
        candidates += 1
        if len(chunk) == CHUNK:
            await collect(chunk)
            chunk = []
    if chunk:
        await collect(chunk)
    removal.detail = {"candidates": candidates, "sample": sample}
    return removal


async def referenced_digests(sessions: async_sessionmaker, digests: list[str]) -> set[str]:
    """Those of `digests` that an artifact names, as its `sha256` or as the last part of its URI."""
    tail = func.right(Artifact.uri, _DIGEST_TAIL)
    async with sessions() as session:
        by_hash = await session.scalars(select(Artifact.sha256).where(Artifact.sha256.in_(digests)))
        by_uri = await session.scalars(select(tail).where(Artifact.uri.is_not(None), tail.in_(digests)))
        return {d.lower() for d in (*by_hash, *by_uri) if d}
