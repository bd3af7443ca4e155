"""The content-addressed artifact store: what it writes, and the URIs it refuses."""

import hashlib
import os
from pathlib import Path

import pytest

from shared.artifact_store import (
    ArtifactStore,
    ArtifactStoreSettings,
    BlobNotFoundError,
    ContentMismatchError,
    FileArtifactStore,
    S3ArtifactStore,
    UnsafeUriError,
    UnsupportedStoreError,
    default_store_url,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path) -> FileArtifactStore:
    store = ArtifactStore.from_url((tmp_path / "store").as_uri())
    assert isinstance(store, FileArtifactStore)
    return store


async def test_put_stores_the_bytes_under_their_sha256(store, tmp_path):
    data = b"open,high,low,close\n" * 10_000
    blob = await store.put(data)

    digest = hashlib.sha256(data).hexdigest()
    assert blob.sha256 == digest and blob.size_bytes == len(data)
    path = tmp_path / "store" / "sha256" / digest[:2] / digest
    assert blob.uri == path.as_uri()
    assert path.read_bytes() == data
    assert await store.read_bytes(blob.uri) == data


async def test_the_same_bytes_are_stored_once_and_no_temporary_file_is_left(store, tmp_path):
    first = await store.put(b"same")
    second = await store.put(b"same")
    assert first == second
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert files == [Path(first.uri.removeprefix("file://"))]


async def test_open_streams_chunks_and_knows_the_size(store):
    data = os.urandom(200_000)
    blob = await store.put(data)
    opened = await store.open(blob.uri, chunk_size=65_536)
    assert opened.size_bytes == len(data)
    chunks = [chunk async for chunk in opened]
    assert [len(c) for c in chunks] == [65_536, 65_536, 65_536, 200_000 - 3 * 65_536]
    assert b"".join(chunks) == data


async def test_verify_accepts_intact_content_and_reports_a_change(store):
    blob = await store.put(b"model bytes")
    assert await store.verify(blob.uri, blob.sha256, blob.size_bytes) == blob

    Path(blob.uri.removeprefix("file://")).write_bytes(b"tampered")
    with pytest.raises(ContentMismatchError, match="changed or corrupted"):
        await store.verify(blob.uri, blob.sha256)


async def test_verify_refuses_a_sha256_the_uri_does_not_name(store):
    blob = await store.put(b"a")
    other = hashlib.sha256(b"b").hexdigest()
    with pytest.raises(ContentMismatchError):
        await store.verify(blob.uri, other)


async def test_a_wellformed_uri_without_content_is_not_found(store):
    missing = store.uri_for(hashlib.sha256(b"never stored").hexdigest())
    with pytest.raises(BlobNotFoundError, match="no content stored"):
        await store.open(missing)


@pytest.mark.parametrize(
    "make_uri",
    [
        pytest.param(lambda root, blob: blob.uri.replace("/sha256/", "/sha256/../sha256/"), id="dot-dot"),
        pytest.param(lambda root, blob: "file:///etc/passwd", id="absolute-elsewhere"),
        pytest.param(lambda root, blob: f"{root}/../outside/sha256/aa/" + "a" * 64, id="parent-of-root"),
        pytest.param(lambda root, blob: blob.uri.replace("/sha256/", "%2Fsha256/"), id="encoded-slash"),
        pytest.param(lambda root, blob: blob.uri.replace("/sha256/", "/sha256%2F..%2F"), id="encoded-dot-dot"),
        pytest.param(lambda root, blob: blob.uri + "\n", id="trailing-newline"),
        pytest.param(lambda root, blob: blob.uri + "?x=1", id="query"),
        pytest.param(lambda root, blob: f"{root}2/sha256/" + blob.sha256[:2] + "/" + blob.sha256, id="sibling-root"),
        pytest.param(lambda root, blob: f"{root}/sha256/00/" + blob.sha256, id="wrong-prefix-folder"),
        pytest.param(lambda root, blob: blob.uri.replace("file://", "http://"), id="other-scheme"),
        pytest.param(lambda root, blob: blob.uri.removeprefix("file://"), id="bare-path"),
        pytest.param(lambda root, blob: "", id="empty"),
    ],
)
async def test_uris_outside_the_store_or_of_another_shape_are_refused(store, make_uri):
    blob = await store.put(b"secret-free content")
    uri = make_uri(store.url, blob)
    with pytest.raises(UnsafeUriError):
        await store.open(uri)
    with pytest.raises(UnsafeUriError):
        await store.verify(uri)


async def test_a_symlink_planted_in_the_store_cannot_lead_out_of_it(store, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not artifact content")
    digest = hashlib.sha256(b"x").hexdigest()
    link = tmp_path / "store" / "sha256" / digest[:2] / digest
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    with pytest.raises(UnsafeUriError, match="outside"):
        await store.open(store.uri_for(digest))


def test_the_default_store_is_a_folder_under_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARTIFACT_STORE_URL", raising=False)
    assert default_store_url() == (tmp_path / "var" / "artifact-store").as_uri()
    for url in (None, "", "  "):
        assert ArtifactStore.from_url(url).url == default_store_url()
    assert ArtifactStoreSettings(_env_file=None).artifact_store_url is None


def test_s3_is_a_store_and_unknown_schemes_are_refused_with_a_clear_error():
    assert isinstance(ArtifactStore.from_url("s3://bucket/prefix", s3_endpoint_url="http://127.0.0.1:9"),
                      S3ArtifactStore)
    with pytest.raises(UnsupportedStoreError, match="expected file://"):
        ArtifactStore.from_url("ftp://host/folder")
    with pytest.raises(UnsupportedStoreError, match="another host"):
        ArtifactStore.from_url("file://otherhost/folder")


async def test_a_store_path_with_a_space_round_trips(tmp_path):
    store = ArtifactStore.from_url(f"file://{tmp_path}/with space")
    blob = await store.put(b"content")
    assert await store.read_bytes(blob.uri) == b"content"
    assert (tmp_path / "with space" / "sha256").is_dir()


async def test_health_says_where_the_store_is_and_whether_it_is_writable(store):
    health = await store.health()
    assert health == {"url": store.url, "backend": "file", "writable": True}
