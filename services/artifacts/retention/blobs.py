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

The referenced set is read after the listing, so an artifact stored meanwhile is
seen; the store re-checks each blob's time as it deletes it (`delete_stale`).
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
    candidates: list[BlobInfo] = [blob async for blob in store.list_blobs(cutoff)]
    if not candidates:
        return removal
    referenced = await referenced_digests(sessions)
    sample: list[str] = []
    for blob in candidates:
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
    removal.batches = 1 if removal.removed else 0
    removal.detail = {"candidates": len(candidates), "sample": sample}
    return removal


async def referenced_digests(sessions: async_sessionmaker) -> set[str]:
    """Every sha256 an artifact names, as its `sha256` or as the last part of its URI."""
    async with sessions() as session:
        result = await session.stream(
            select(Artifact.sha256, Artifact.uri).where(Artifact.uri.is_not(None)).execution_options(yield_per=10_000)
        )
        digests: set[str] = set()
        async for sha256, uri in result:
            if sha256:
                digests.add(sha256.lower())
            if uri and len(uri) >= _DIGEST_TAIL:
                digests.add(uri[-_DIGEST_TAIL:].lower())
        return digests

