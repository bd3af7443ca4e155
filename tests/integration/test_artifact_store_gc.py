"""What the garbage collector asks of the artifact stores: blobs listed with the time they
were last written, a put of stored bytes that counts as a write, and a delete that
spares a blob written again since; file:// in tmp and s3:// on moto."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest

from shared.artifact_store import ArtifactStore, FileArtifactStore
from tests.integration.test_artifact_store_s3 import PREFIX, bucket, endpoint, fake_credentials, s3  # noqa: F401

pytestmark = pytest.mark.integration
LATER = datetime.now(UTC) + timedelta(hours=1)
EARLIER = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
def file_store(tmp_path) -> FileArtifactStore:
    return ArtifactStore.from_url((tmp_path / "store").as_uri())


@pytest.fixture
def s3_store(bucket, endpoint):  # noqa: F811
    return ArtifactStore.from_url(f"s3://{bucket}/{PREFIX}", s3_endpoint_url=endpoint)


@pytest.fixture(params=["file", "s3"])
def store(request) -> ArtifactStore:
    return request.getfixturevalue(f"{request.param}_store")


async def test_blobs_are_listed_with_their_time_and_deleted_only_when_stale(store):
    kept, doomed = b"kept\n" * 100, b"doomed\n" * 100
    blobs = {data: await store.put(data) for data in (kept, doomed)}
    listed = {b.sha256: b async for b in store.list_blobs(LATER)}
    assert set(listed) == {hashlib.sha256(d).hexdigest() for d in (kept, doomed)}
    assert listed[blobs[doomed].sha256].size_bytes == len(doomed)
    assert [b async for b in store.list_blobs(EARLIER)] == []

    assert await store.delete_stale(blobs[kept].uri, EARLIER) is False  # written after the cutoff: spared
    assert await store.delete_stale(blobs[doomed].uri, LATER) is True
    assert await store.delete_stale(blobs[doomed].uri, LATER) is False  # already gone
    assert await store.read_bytes(blobs[kept].uri) == kept
    assert {b.sha256 async for b in store.list_blobs(LATER)} == {blobs[kept].sha256}


async def test_putting_stored_bytes_again_counts_as_writing_them(file_store):
    data = b"the same market data, fetched again\n" * 50
    blob = await file_store.put(data)
    path = file_store.root / "sha256" / blob.sha256[:2] / blob.sha256
    old = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    os.utime(path, (old, old))
    cutoff = datetime.now(UTC) - timedelta(days=1)
    assert [b.sha256 async for b in file_store.list_blobs(cutoff)] == [blob.sha256]
    await file_store.put(data)
    assert [b async for b in file_store.list_blobs(cutoff)] == []
    assert await file_store.delete_stale(blob.uri, cutoff) is False
    assert path.read_bytes() == data


async def test_putting_stored_bytes_again_refreshes_an_s3_blob(s3_store, s3, bucket):  # noqa: F811
    data = b"again\n" * 10
    blob = await s3_store.put(data)
    key = blob.uri.removeprefix(f"s3://{bucket}/")
    first = s3.head_object(Bucket=bucket, Key=key)["LastModified"]
    await asyncio.sleep(1.1)  # LastModified has whole seconds
    await s3_store.put(data)
    assert s3.head_object(Bucket=bucket, Key=key)["LastModified"] > first
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


async def test_a_blob_a_collector_left_aside_is_put_back_by_the_next_listing(file_store):
    data = b"moved aside, then the collector stopped\n"
    blob = await file_store.put(data)
    path = file_store.root / "sha256" / blob.sha256[:2] / blob.sha256
    aside = path.with_name(f".gc-{path.name}")
    os.rename(path, aside)
    assert [b.sha256 async for b in file_store.list_blobs(LATER)] == []  # this listing settles it
    assert path.read_bytes() == data and not aside.exists()
    assert [b.sha256 async for b in file_store.list_blobs(LATER)] == [blob.sha256]


async def test_only_blobs_of_the_stores_shape_are_listed(file_store):
    blob = await file_store.put(b"real\n")
    folder = file_store.root / "sha256" / blob.sha256[:2]
    (folder / "notes.txt").write_text("not a blob")
    (folder / ("0" * 64)).write_text("a digest in the wrong folder")
    assert [b.sha256 async for b in file_store.list_blobs(LATER)] == [blob.sha256]
