"""The S3 artifact store against a real S3-compatible server (moto) over TCP."""

import hashlib
import json
import os
import uuid
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from shared.artifact_store import (
    ArtifactStore,
    ArtifactStoreError,
    BlobNotFoundError,
    ContentMismatchError,
    S3ArtifactStore,
    UnsafeUriError,
    UnsupportedStoreError,
)

pytestmark = pytest.mark.integration

ACCESS_KEY_ID = "AKIAFAKEKEYID0000042"
SECRET_ACCESS_KEY = "fake-secret-Zq8yW2xL5nR7tP0vK3mB"
PREFIX = "runs/artifacts"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture
def s3(endpoint, fake_credentials):
    """A plain boto3 client on the same server: what an operator (or an attacker) could do."""
    return boto3.client("s3", endpoint_url=endpoint)


@pytest.fixture
def bucket(s3) -> str:
    name = f"artifacts-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(bucket, endpoint) -> S3ArtifactStore:
    store = ArtifactStore.from_url(f"s3://{bucket}/{PREFIX}", s3_endpoint_url=endpoint)
    assert isinstance(store, S3ArtifactStore)
    return store


async def test_put_stores_the_bytes_under_their_sha256_and_reads_them_back(store, s3, bucket):
    data = b"open,high,low,close\n" * 10_000
    blob = await store.put(data)

    digest = hashlib.sha256(data).hexdigest()
    key = f"{PREFIX}/sha256/{digest[:2]}/{digest}"
    assert blob.sha256 == digest and blob.size_bytes == len(data)
    assert blob.uri == f"s3://{bucket}/{key}"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert await store.read_bytes(blob.uri) == data


async def test_the_same_bytes_are_stored_once(store, s3, bucket):
    first = await store.put(b"same")
    second = await store.put(b"same")
    assert first == second
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [first.uri.removeprefix(f"s3://{bucket}/")]


async def test_open_streams_chunks_and_knows_the_size(store):
    data = os.urandom(200_000)
    blob = await store.put(data)
    opened = await store.open(blob.uri, chunk_size=65_536)
    assert opened.size_bytes == len(data)
    chunks = [chunk async for chunk in opened]
    assert all(len(chunk) <= 65_536 for chunk in chunks) and len(chunks) >= 4
    assert b"".join(chunks) == data


async def test_verify_accepts_intact_content_and_checks_the_event_size(store):
    blob = await store.put(b"model bytes")
    assert await store.verify(blob.uri, blob.sha256, blob.size_bytes) == blob
    with pytest.raises(ContentMismatchError, match="bytes"):
        await store.verify(blob.uri, blob.sha256, blob.size_bytes + 1)
    with pytest.raises(ContentMismatchError):
        await store.verify(blob.uri, hashlib.sha256(b"other").hexdigest())


async def test_tampered_content_is_refused_on_verify_and_on_read(store, s3, bucket):
    blob = await store.put(b"the real model bytes")
    key = blob.uri.removeprefix(f"s3://{bucket}/")
    s3.put_object(Bucket=bucket, Key=key, Body=b"tampered")

    with pytest.raises(ContentMismatchError, match="changed or corrupted"):
        await store.verify(blob.uri, blob.sha256, blob.size_bytes)
    with pytest.raises(ContentMismatchError, match="changed or corrupted"):
        await store.read_bytes(blob.uri)


async def test_a_wellformed_uri_without_content_is_not_found(store):
    missing = store.uri_for(hashlib.sha256(b"never stored").hexdigest())
    with pytest.raises(BlobNotFoundError, match="no content stored"):
        await store.open(missing)
    with pytest.raises(BlobNotFoundError):
        await store.verify(missing)


@pytest.mark.parametrize(
    "make_uri",
    [
        pytest.param(lambda blob, bucket, other: blob.uri.replace(f"s3://{bucket}/", f"s3://{other}/"), id="other-bucket"),
        pytest.param(lambda blob, bucket, other: blob.uri.replace(f"/{PREFIX}/", "/"), id="outside-prefix"),
        pytest.param(lambda blob, bucket, other: blob.uri.replace("/sha256/", "/sha256/../sha256/"), id="dot-dot"),
        pytest.param(lambda blob, bucket, other: blob.uri.replace(f"/{PREFIX}/", f"/{PREFIX}/../{PREFIX}/"), id="dot-dot-prefix"),
        pytest.param(lambda blob, bucket, other: blob.uri.replace("/sha256/", "%2Fsha256/"), id="encoded-slash"),
        pytest.param(lambda blob, bucket, other: blob.uri.replace(f"s3://{bucket}/", f"s3://{bucket}2/"), id="sibling-bucket"),
        pytest.param(lambda blob, bucket, other: blob.uri + "?versionId=1", id="query"),
        pytest.param(lambda blob, bucket, other: blob.uri + "\n", id="trailing-newline"),
        pytest.param(lambda blob, bucket, other: blob.uri.replace(f"/{blob.sha256[:2]}/", "/00/"), id="wrong-prefix-folder"),
        pytest.param(lambda blob, bucket, other: blob.uri.replace("s3://", "https://"), id="other-scheme"),
        pytest.param(lambda blob, bucket, other: "", id="empty"),
    ],
)
async def test_uris_outside_the_store_or_of_another_shape_are_refused(store, s3, bucket, make_uri):
    blob = await store.put(b"secret-free content")
    # The same content really is readable at the other places, so only the URI check stops it.
    other = f"other-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    key = blob.uri.removeprefix(f"s3://{bucket}/")
    for target_bucket, target_key in ((other, key), (bucket, key.removeprefix(f"{PREFIX}/"))):
        s3.put_object(Bucket=target_bucket, Key=target_key, Body=b"secret-free content")

    uri = make_uri(blob, bucket, other)
    with pytest.raises(UnsafeUriError):
        await store.open(uri)
    with pytest.raises(UnsafeUriError):
        await store.verify(uri)


async def test_health_reports_the_store_without_credentials(store, bucket, endpoint, monkeypatch):
    health = await store.health()
    assert health["backend"] == "s3" and health["reachable"] is True
    assert health["url"] == f"s3://{bucket}/{PREFIX}" and health["endpoint"] == endpoint
    assert health.get("writable") is not False
    text = json.dumps(health)
    assert SECRET_ACCESS_KEY not in text and ACCESS_KEY_ID not in text

    gone = ArtifactStore.from_url(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}", s3_endpoint_url=endpoint)
    health = await gone.health()
    assert health["reachable"] is False and health["writable"] is False and health["error"]
    text = json.dumps(health)
    assert SECRET_ACCESS_KEY not in text and ACCESS_KEY_ID not in text


async def test_errors_do_not_carry_credentials(endpoint):
    gone = ArtifactStore.from_url(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}", s3_endpoint_url=endpoint)
    with pytest.raises(ArtifactStoreError) as failure:
        await gone.put(b"content")
    assert not isinstance(failure.value, BlobNotFoundError)
    assert "does not exist" in str(failure.value)
    assert SECRET_ACCESS_KEY not in str(failure.value) and ACCESS_KEY_ID not in str(failure.value)

    with pytest.raises(UnsupportedStoreError) as failure:
        ArtifactStore.from_url(f"s3://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@bucket/prefix")
    assert SECRET_ACCESS_KEY not in str(failure.value) and ACCESS_KEY_ID not in str(failure.value)


async def test_the_endpoint_comes_from_the_environment(bucket, endpoint, monkeypatch):
    monkeypatch.setenv("ARTIFACT_STORE_S3_ENDPOINT_URL", endpoint)
    store = ArtifactStore.from_url(f"s3://{bucket}")
    assert isinstance(store, S3ArtifactStore) and store.endpoint_url == endpoint
    blob = await store.put(b"no prefix")
    assert blob.uri == f"s3://{bucket}/sha256/{blob.sha256[:2]}/{blob.sha256}"
    assert await store.read_bytes(blob.uri) == b"no prefix"
