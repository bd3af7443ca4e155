"""Content-addressed store for artifact content too large to travel inline in an event.

The signals service writes (`put`), the artifacts service reads (`open`,
`read_chunks`, `verify`). Content lives at `<root>/sha256/<first two hex>/<full hex>`, so the same
bytes are stored once and a URI names its content: anyone can check what they read
against the `sha256` the `artifact.created` event carries.

`ARTIFACT_STORE_URL` picks the backend: `file:///absolute/folder` (the default is
`file://<working directory>/var/artifact-store`). `s3://bucket/prefix` is reserved
for an S3-compatible backend; it needs an S3 client library that is not installed
yet, so it is refused with `UnsupportedStoreError` rather than half-working.

Readers only accept URIs inside their own store root and of the exact shape the
store writes: a URI from an event is input from the network, not a path to trust.
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
    """`ARTIFACT_STORE_URL`; unset means `default_store_url()`."""

    artifact_store_url: str | None = None


@dataclass(frozen=True)
class StoredBlob:
    uri: str
    sha256: str
    size_bytes: int


def default_store_url() -> str:
    return (Path.cwd() / "var" / "artifact-store").resolve().as_uri()


class ArtifactStore(ABC):
    """Write-once, content-addressed blobs; see the module docstring."""

    url: str

    @staticmethod
    def from_url(url: str | None = None) -> ArtifactStore:
        url = (url or "").strip() or default_store_url()
        scheme = urlsplit(url).scheme.lower()
        if scheme == "file":
            return FileArtifactStore(_file_url_path(url))
        if scheme == "s3":
            raise UnsupportedStoreError(
                f"ARTIFACT_STORE_URL={url!r}: S3-compatible stores are not supported yet "
                "(no S3 client library is installed); use a file:// URL"
            )
        raise UnsupportedStoreError(
            f"ARTIFACT_STORE_URL={url!r}: expected file:///absolute/folder (or, later, s3://bucket/prefix)"
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
        if not (path.is_file() and path.stat().st_size == len(data)):
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


class OpenedBlob:
    """Stored content opened for reading: iterate it for chunks; closes at the end of
    the iteration, on `aclose()`, or when used as `async with`."""

    def __init__(self, *, uri: str, size_bytes: int, handle: BinaryIO, chunk_size: int) -> None:
        self.uri = uri
        self.size_bytes = size_bytes
        self._handle = handle
        self._chunk_size = chunk_size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(self._handle.read, self._chunk_size):
                yield chunk
        finally:
            self._handle.close()

    async def aclose(self) -> None:
        self._handle.close()

    async def __aenter__(self) -> OpenedBlob:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


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
