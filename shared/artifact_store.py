"""Content-addressed store for artifact content too large to travel inline in an event.

The signals service writes (`put`), the artifacts service reads (`open`,
`read_chunks`, `verify`). Content lives at `<root>/sha256/<first two hex>/<full hex>`, so the same
bytes are stored once and a URI names its content: anyone can check what they read
against the `sha256` the `artifact.created` event carries.

`ARTIFACT_STORE_URL` picks the backend: `file:///absolute/folder` (the default is
`file://<working directory>/var/artifact-store`) or `s3://bucket/optional/prefix` for
AWS S3 or any S3-compatible server (MinIO...), whose keys are
`<prefix>/sha256/<aa>/<hex>` and URIs `s3://bucket/<key>`. For S3,
`ARTIFACT_STORE_S3_ENDPOINT_URL` points at a non-AWS server; credentials and region
come from boto's own sources (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_DEFAULT_REGION`, profiles, instance roles) and never appear in URLs, errors or
health output.

Readers only accept URIs inside their own store root and of the exact shape the
store writes: a URI from an event is input from the network, not a path to trust.

Garbage collection (the artifacts service's retention) lists blobs with their last
write time (`list_blobs`) and removes those no artifact references (`delete_stale`).
A `put` of bytes that are already stored counts as a write (it refreshes the time), so
a blob a running workflow has just produced again is never taken for garbage.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from shared.settings import IbflowSettings

DEFAULT_CHUNK_SIZE = 64 * 1024
_BLOB_KEY = re.compile(r"sha256/(?P<prefix>[0-9a-f]{2})/(?P<digest>[0-9a-f]{64})")


class ArtifactStoreError(Exception):
    """Base of every artifact store error; the message says what went wrong."""


class UnsupportedStoreError(ArtifactStoreError):
    """The store URL names a backend this build cannot use."""


class UnsafeUriError(ArtifactStoreError):
    """A URI outside the store root or not of the shape the store writes: refused."""


class BlobNotFoundError(ArtifactStoreError):
    """The URI is well-formed and inside the store, but no content is stored there."""


class ContentMismatchError(ArtifactStoreError):
    """Stored content no longer matches the sha256 (or size) it was stored under."""


class ArtifactStoreSettings(IbflowSettings):
    """`ARTIFACT_STORE_URL`; unset means `default_store_url()`.

    `ARTIFACT_STORE_S3_ENDPOINT_URL` (only for `s3://` stores): the S3-compatible server
    to talk to instead of AWS, e.g. `http://127.0.0.1:9000` for MinIO."""

    artifact_store_url: str | None = None
    artifact_store_s3_endpoint_url: str | None = None


@dataclass(frozen=True)
class StoredBlob:
    uri: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob as the garbage collector sees it."""

    uri: str
    sha256: str
    size_bytes: int
    written_at: datetime


def default_store_url() -> str:
    return (Path.cwd() / "var" / "artifact-store").resolve().as_uri()


class ArtifactStore(ABC):
    """Write-once, content-addressed blobs; see the module docstring."""

    url: str

    @staticmethod
    def from_url(url: str | None = None, *, s3_endpoint_url: str | None = None) -> ArtifactStore:
        """The store `url` names. For `s3://`, `s3_endpoint_url` defaults to
        `ARTIFACT_STORE_S3_ENDPOINT_URL` (environment or `.env`)."""
        url = (url or "").strip() or default_store_url()
        scheme = urlsplit(url).scheme.lower()
        if scheme == "file":
            return FileArtifactStore(_file_url_path(url))
        if scheme == "s3":
            if s3_endpoint_url is None:
                s3_endpoint_url = ArtifactStoreSettings().artifact_store_s3_endpoint_url
            bucket, prefix = _s3_url_parts(url)
            return S3ArtifactStore(bucket, prefix, endpoint_url=s3_endpoint_url)
        raise UnsupportedStoreError(
            f"ARTIFACT_STORE_URL={_redacted(url)!r}: expected file:///absolute/folder or s3://bucket/prefix"
        )

    @abstractmethod
    async def put(self, data: bytes) -> StoredBlob:
        """Store `data` (idempotent: the same bytes always get the same URI)."""

    @abstractmethod
    async def open(self, uri: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> OpenedBlob:
        """Open the content at `uri` for reading.

        Raises `UnsafeUriError` / `BlobNotFoundError` here, before any byte is read, so
        an HTTP handler can still answer with an error status instead of a broken stream.
        """

    async def read_chunks(self, uri: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        async with await self.open(uri, chunk_size) as blob:
            async for chunk in blob:
                yield chunk

    async def read_bytes(self, uri: str) -> bytes:
        return b"".join([chunk async for chunk in self.read_chunks(uri)])

    async def verify(self, uri: str, sha256: str | None = None, size_bytes: int | None = None) -> StoredBlob:
        """Hash the content at `uri`; raise `ContentMismatchError` unless it matches.

        The expected digest defaults to the one the URI names (content addressing);
        pass the event's `sha256` / `size_bytes` to check those too.
        """
        named = self.digest_of(uri)
        expected = (sha256 or named).lower()
        digest = hashlib.sha256()
        size = 0
        async for chunk in self.read_chunks(uri):
            digest.update(chunk)
            size += len(chunk)
        actual = digest.hexdigest()
        if actual != expected or actual != named:
            raise ContentMismatchError(
                f"content at {uri} has sha256 {actual}, expected {expected}: it was changed or corrupted "
                "after it was stored"
            )
        if size_bytes is not None and size != size_bytes:
            raise ContentMismatchError(f"content at {uri} has {size} bytes, expected {size_bytes}")
        return StoredBlob(uri=uri, sha256=actual, size_bytes=size)

    @abstractmethod
    def digest_of(self, uri: str) -> str:
        """The sha256 a URI of this store names; raises `UnsafeUriError` for anything else."""

    @abstractmethod
    def list_blobs(self, written_before: datetime) -> AsyncIterator[BlobInfo]:
        """Every blob last written (or put again) before `written_before`."""

    @abstractmethod
    async def delete_stale(self, uri: str, written_before: datetime) -> bool:
        """Delete the blob unless it was written (or put again) at or after
        `written_before`; whether it was deleted."""

    async def health(self) -> dict[str, object]:
        """What `/health` shows about the store: where it is and whether it is usable."""
        return {"url": self.url}


class FileArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise UnsupportedStoreError(f"artifact store folder must be an absolute path, got {str(root)!r}")
        self.root = Path(os.path.normpath(root))
        self.url = self.root.as_uri()

    def _path_for(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def uri_for(self, digest: str) -> str:
        return self._path_for(digest).as_uri()

    def digest_of(self, uri: str) -> str:
        return _BLOB_KEY.fullmatch(self._key_of(uri)).group("digest")  # type: ignore[union-attr]

    def _key_of(self, uri: str) -> str:
        if not isinstance(uri, str) or not uri:
            raise UnsafeUriError("artifact URI is empty")
        # Compared on the exact form `put` writes: the key after the root may only be
        # `sha256/<aa>/<hex>`, which leaves no room for '..', encoded slashes, queries.
        root = self.url.rstrip("/") + "/"
        if not uri.startswith(root):
            raise UnsafeUriError(f"{uri!r} is outside the artifact store root {self.url}")
        key = uri[len(root) :]
        match = _BLOB_KEY.fullmatch(key)
        if match is None or match.group("digest")[:2] != match.group("prefix"):
            raise UnsafeUriError(f"{uri!r} does not name content in the store (expected .../sha256/<aa>/<sha256>)")
        return key

    def _checked_path(self, uri: str) -> Path:
        path = self.root / self._key_of(uri)
        # A symlink planted inside the store must not lead out of it.
        if path.exists() and not path.resolve().is_relative_to(self.root.resolve()):
            raise UnsafeUriError(f"{uri!r} resolves outside the artifact store root {self.url}")
        return path

    async def put(self, data: bytes) -> StoredBlob:
        return await asyncio.to_thread(self._put, bytes(data))

    def _put(self, data: bytes) -> StoredBlob:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path_for(digest)
        if not _touched(path, len(data)):
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write to a temporary file in the same folder, then rename: a reader never
            # sees a half-written blob, and two writers of the same bytes both succeed.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{digest[:8]}-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return StoredBlob(uri=path.as_uri(), sha256=digest, size_bytes=len(data))

    async def open(self, uri: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> OpenedBlob:
        path = self._checked_path(uri)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"no content stored at {uri}") from None
        size = os.fstat(handle.fileno()).st_size
        return OpenedBlob(uri=uri, size_bytes=size, handle=handle, chunk_size=chunk_size)

    async def health(self) -> dict[str, object]:
        writable = await asyncio.to_thread(_writable_folder, self.root)
        return {"url": self.url, "backend": "file", "writable": writable}

    async def list_blobs(self, written_before: datetime) -> AsyncIterator[BlobInfo]:
        folders = await asyncio.to_thread(_subfolders, self.root / "sha256")
        for folder in folders:
            for blob in await asyncio.to_thread(self._old_blobs_in, folder, written_before.timestamp()):
                yield blob

    def _old_blobs_in(self, folder: Path, before: float) -> list[BlobInfo]:
        found = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(_GC_PREFIX):
                    _settle_interrupted_delete(Path(entry.path))
                    continue
                if not _HEX_DIGEST.fullmatch(entry.name) or entry.name[:2] != folder.name:
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.is_file(follow_symlinks=False) and stat.st_mtime < before:
                    found.append(BlobInfo(uri=Path(entry.path).as_uri(), sha256=entry.name,
                                          size_bytes=stat.st_size,
                                          written_at=datetime.fromtimestamp(stat.st_mtime, UTC)))
        return found

    async def delete_stale(self, uri: str, written_before: datetime) -> bool:
        return await asyncio.to_thread(self._delete_stale, self._checked_path(uri), written_before.timestamp())

    @staticmethod
    def _delete_stale(path: Path, before: float) -> bool:
        # Moved aside first (atomic), then judged: a `put` that refreshed the blob before
        # the move shows in its time and the blob goes back; a `put` after the move finds
        # no blob and writes it again. Either way the blob a `put` returned stays.
        aside = path.with_name(f"{_GC_PREFIX}{path.name}")
        try:
            os.rename(path, aside)
            if aside.stat().st_mtime >= before:
                os.replace(aside, path)
                return False
            aside.unlink()
        except FileNotFoundError:
            return False
        return True


_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_S3_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}


class S3ArtifactStore(ArtifactStore):
    """Blobs in an S3 bucket (AWS or any S3-compatible server), under an optional prefix.

    Uses boto3's synchronous client, each call run in a worker thread; reads stream
    the object body in chunks and hash it on the way (see `OpenedBlob`)."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise UnsupportedStoreError(
                "s3:// artifact stores need boto3: install ibflow[artifacts] or ibflow[signals]"
            ) from None
        if not _S3_BUCKET.fullmatch(bucket) or ".." in bucket:
            raise UnsupportedStoreError(f"{bucket!r} is not a valid S3 bucket name")
        if prefix and not all(_S3_PREFIX_SEGMENT.fullmatch(part) for part in prefix.split("/")):
            raise UnsupportedStoreError(
                f"S3 prefix {prefix!r}: use '/'-separated segments of letters, digits, '.', '_', '-'"
            )
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = _s3_endpoint(endpoint_url)
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        config = Config(
            signature_version="s3v4",
            # S3-compatible servers (MinIO...) are addressed by path, not by bucket subdomain.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            # Checksums only where S3 requires them: not every S3-compatible server
            # supports the newer default ones; content is hashed on read anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session per store: boto3's default session is not safe to share across threads.
        self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, config=config)

    def _key_for(self, digest: str) -> str:
        key = f"sha256/{digest[:2]}/{digest}"
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self._key_for(digest)}"

    def digest_of(self, uri: str) -> str:
        return self._match(uri).group("digest")

    def _match(self, uri: str) -> re.Match[str]:
        if not isinstance(uri, str) or not uri:
            raise UnsafeUriError("artifact URI is empty")
        # Same rule as the file store: exactly `<store url>/sha256/<aa>/<hex>`, so another
        # bucket, another prefix, '..', encoded characters or a query are all refused.
        root = self.url.rstrip("/") + "/"
        if not uri.startswith(root):
            raise UnsafeUriError(f"{uri!r} is outside the artifact store {self.url}")
        match = _BLOB_KEY.fullmatch(uri[len(root) :])
        if match is None or match.group("digest")[:2] != match.group("prefix"):
            raise UnsafeUriError(f"{uri!r} does not name content in the store (expected .../sha256/<aa>/<sha256>)")
        return match

    async def put(self, data: bytes) -> StoredBlob:
        return await asyncio.to_thread(self._put, bytes(data))

    def _put(self, data: bytes) -> StoredBlob:
        digest = hashlib.sha256(data).hexdigest()
        key = self._key_for(digest)
        uri = self.uri_for(digest)
        try:
            existing = self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - mapped below
            if not _is_client_error(exc, _S3_NOT_FOUND | {"403", "Forbidden"}):
                raise self._error(exc, "put", uri) from None
            existing = None
        if existing is None or existing.get("ContentLength") != len(data):
            # A single PUT is atomic: readers see the old object or the whole new one.
            try:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentLength=len(data),
                    ContentType="application/octet-stream",
                    Metadata={"sha256": digest},
                )
            except Exception as exc:  # noqa: BLE001 - mapped below
                raise self._error(exc, "put", uri) from None
        else:
            # Put again counts as written now (the garbage collector spares new blobs):
            # a copy onto itself, inside S3, refreshes LastModified without the bytes.
            try:
                self._client.copy_object(
                    Bucket=self.bucket,
                    Key=key,
                    CopySource={"Bucket": self.bucket, "Key": key},
                    MetadataDirective="REPLACE",
                    ContentType="application/octet-stream",
                    Metadata={"sha256": digest},
                )
            except Exception as exc:  # noqa: BLE001 - mapped below
                raise self._error(exc, "put", uri) from None
        return StoredBlob(uri=uri, sha256=digest, size_bytes=len(data))

    async def list_blobs(self, written_before: datetime) -> AsyncIterator[BlobInfo]:
        prefix = f"{self.prefix}/sha256/" if self.prefix else "sha256/"
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        iterator = iter(pages)
        while True:
            try:
                page = await asyncio.to_thread(next, iterator, None)
            except Exception as exc:  # noqa: BLE001 - mapped below
                raise self._error(exc, "list", self.url) from None
            if page is None:
                return
            for item in page.get("Contents", []):
                uri = f"s3://{self.bucket}/{item['Key']}"
                try:
                    digest = self.digest_of(uri)
                except UnsafeUriError:
                    continue
                if item["LastModified"] < written_before:
                    yield BlobInfo(uri=uri, sha256=digest, size_bytes=int(item["Size"]),
                                   written_at=item["LastModified"])

    async def delete_stale(self, uri: str, written_before: datetime) -> bool:
        self._match(uri)
        return await asyncio.to_thread(self._delete_stale, uri[len(f"s3://{self.bucket}/") :], uri, written_before)

    def _delete_stale(self, key: str, uri: str, before: datetime) -> bool:
        # S3 has no atomic move: the check and the delete are two requests, so a put in
        # between (milliseconds) is lost. The collector's grace period is the guard.
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
            if head["LastModified"] >= before:
                return False
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - mapped below
            if _is_client_error(exc, _S3_NOT_FOUND):
                return False
            raise self._error(exc, "delete", uri) from None
        return True

    async def open(self, uri: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> OpenedBlob:
        match = self._match(uri)
        key = uri[len(f"s3://{self.bucket}/") :]
        try:
            response = await asyncio.to_thread(self._client.get_object, Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - mapped below
            raise self._error(exc, "read", uri) from None
        return OpenedBlob(
            uri=uri,
            size_bytes=int(response["ContentLength"]),
            handle=response["Body"],
            chunk_size=chunk_size,
            expected_sha256=match.group("digest"),
        )

    async def health(self) -> dict[str, object]:
        detail: dict[str, object] = {"url": self.url, "backend": "s3", "endpoint": self.endpoint_url or "aws"}
        try:
            await asyncio.to_thread(self._client.head_bucket, Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            detail |= {"reachable": False, "writable": False, "error": str(self._error(exc, "check", self.url))}
        else:
            detail |= {"reachable": True}
        return detail

    def _error(self, exc: BaseException, action: str, uri: str) -> ArtifactStoreError:
        """An `ArtifactStoreError` naming what failed, built from error codes and class
        names only: boto messages can echo request details, never credentials here."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        if isinstance(exc, ClientError):
            if _is_client_error(exc, _S3_NOT_FOUND):
                return BlobNotFoundError(f"no content stored at {uri}")
            error = exc.response.get("Error", {})
            code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return ArtifactStoreError(f"S3 {action} of {uri} failed: bucket {self.bucket!r} does not exist")
            return ArtifactStoreError(f"S3 {action} of {uri} failed: {code}")
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return ArtifactStoreError(
                f"S3 {action} of {uri} failed: no usable credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        if isinstance(exc, BotoCoreError):
            where = self.endpoint_url or "AWS S3"
            return ArtifactStoreError(f"S3 {action} of {uri} failed: {type(exc).__name__} talking to {where}")
        raise exc


def _is_client_error(exc: BaseException, codes: set[str]) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    # By code, not HTTP status: a missing bucket is a 404 too, and must not pass for a missing blob.
    return str(exc.response.get("Error", {}).get("Code", "")) in codes


def _s3_url_parts(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        # Do not echo it: the part before '@' may be a key and secret.
        raise UnsupportedStoreError(
            "ARTIFACT_STORE_URL: credentials do not go in an s3:// URL; use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    if parts.query or parts.fragment or not parts.netloc:
        raise UnsupportedStoreError(f"ARTIFACT_STORE_URL={url!r}: expected s3://bucket or s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


def _s3_endpoint(endpoint_url: str | None) -> str | None:
    endpoint_url = (endpoint_url or "").strip()
    if not endpoint_url:
        return None
    parts = urlsplit(endpoint_url)
    if "@" in parts.netloc:
        raise UnsupportedStoreError(
            "ARTIFACT_STORE_S3_ENDPOINT_URL: credentials do not go in the URL; use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UnsupportedStoreError(
            f"ARTIFACT_STORE_S3_ENDPOINT_URL={endpoint_url!r}: expected http(s)://host[:port]"
        )
    return endpoint_url.rstrip("/")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()
    return url


class OpenedBlob:
    """Stored content opened for reading: iterate it for chunks; closes at the end of
    the iteration, on `aclose()`, or when used as `async with`.

    With `expected_sha256` (the S3 store passes the digest its key names), the bytes are
    hashed as they are read and the iteration ends with `ContentMismatchError` instead
    of finishing normally when they do not match."""

    def __init__(
        self,
        *,
        uri: str,
        size_bytes: int,
        handle: BinaryIO,
        chunk_size: int,
        expected_sha256: str | None = None,
    ) -> None:
        self.uri = uri
        self.size_bytes = size_bytes
        self._handle = handle
        self._chunk_size = chunk_size
        self._expected_sha256 = expected_sha256

    async def __aiter__(self) -> AsyncIterator[bytes]:
        digest = hashlib.sha256()
        size = 0
        try:
            while chunk := await asyncio.to_thread(self._handle.read, self._chunk_size):
                if self._expected_sha256 is not None:
                    digest.update(chunk)
                    size += len(chunk)
                yield chunk
        finally:
            self._handle.close()
        if self._expected_sha256 is not None and (
            digest.hexdigest() != self._expected_sha256 or size != self.size_bytes
        ):
            raise ContentMismatchError(
                f"content at {self.uri} has sha256 {digest.hexdigest()} ({size} bytes), expected "
                f"{self._expected_sha256}: it was changed or corrupted after it was stored"
            )

    async def aclose(self) -> None:
        self._handle.close()

    async def __aenter__(self) -> OpenedBlob:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


_GC_PREFIX = ".gc-"
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _touched(path: Path, size: int) -> bool:
    """Whether `path` holds `size` bytes already; if so its time becomes now, because a
    blob put again is as new as a blob written (the garbage collector spares new ones)."""
    try:
        if not path.is_file() or path.stat().st_size != size:
            return False
        os.utime(path)
    except FileNotFoundError:  # collected between the two calls: write it again
        return False
    return True


def _subfolders(root: Path) -> list[Path]:
    try:
        return sorted(Path(entry.path) for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []


def _settle_interrupted_delete(aside: Path) -> None:
    """A blob a collector moved aside and then stopped: back if nothing replaced it,
    else gone (the replacement holds the same bytes)."""
    blob = aside.with_name(aside.name.removeprefix(_GC_PREFIX))
    try:
        if blob.exists():
            aside.unlink()
        else:
            os.rename(aside, blob)
    except FileNotFoundError:
        pass


def _writable_folder(root: Path) -> bool:
    probe = root
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK)


def _file_url_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UnsupportedStoreError(f"ARTIFACT_STORE_URL={url!r}: file URLs on another host are not supported")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise UnsupportedStoreError(f"ARTIFACT_STORE_URL={url!r}: use an absolute path, file:///folder")
    return Path(path)
