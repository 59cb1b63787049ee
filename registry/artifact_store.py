"""Blob storage for the daemon's own files (training snapshots): a local folder or S3.

MLflow artifacts do not go through here: MLflow writes them itself to the
experiment's artifact location (a folder or ``s3://``), configured in
``RegistryConfig``. Both use the same S3 endpoint and the standard AWS
credential chain.
"""

from __future__ import annotations

import logging
import shutil
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

logger = logging.getLogger(__name__)


class ArtifactStore(ABC):
    """Keys are POSIX relative paths (``model/version/file``); folders are key prefixes."""

    @abstractmethod
    def put_file(self, local: Path, key: str) -> str:
        """Store one file; returns its URI."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> Path: ...

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    def put_dir(self, local: Path, prefix: str) -> str:
        """Store every file below ``local`` under ``prefix``; returns the prefix URI."""
        local = Path(local)
        for path in sorted(local.rglob("*")):
            if path.is_file():
                self.put_file(path, _join(prefix, path.relative_to(local).as_posix()))
        return self.uri(prefix)

    def get_dir(self, prefix: str, dest: Path) -> Path:
        dest = Path(dest)
        base = prefix.strip("/")
        for key in self.list_keys(prefix):
            rel = key[len(base) :].lstrip("/") if base else key
            self.get_file(key, dest / rel)
        return dest


def _join(prefix: str, rel: str) -> str:
    return str(PurePosixPath(prefix.strip("/")) / rel) if prefix.strip("/") else rel


def _check_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not parts or ".." in parts or key.startswith("/"):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def put_file(self, local: Path, key: str) -> str:
        target = self.root / _check_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(local, tmp)
        tmp.replace(target)
        return self.uri(key)

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / _check_key(key), dest)
        return dest

    def list_keys(self, prefix: str) -> list[str]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if base.is_file():
            return [prefix.strip("/")]
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def uri(self, key: str) -> str:
        return (self.root / key.strip("/")).resolve().as_uri()


class S3ArtifactStore(ArtifactStore):
    """S3 or an S3-compatible server; credentials from the standard boto3 chain."""

    def __init__(
        self, bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str | None = None
    ):
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _key(self, key: str) -> str:
        return _join(self.prefix, _check_key(key)) if self.prefix else _check_key(key)

    def put_file(self, local: Path, key: str) -> str:
        self._s3.upload_file(str(local), self.bucket, self._key(key))
        return self.uri(key)

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._s3.download_file(self.bucket, self._key(key), str(dest))
        return dest

    def list_keys(self, prefix: str) -> list[str]:
        full = _join(self.prefix, prefix.strip("/")) if prefix.strip("/") else self.prefix
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                keys.append(key[len(self.prefix) :].lstrip("/") if self.prefix else key)
        return sorted(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{_join(self.prefix, key.strip('/')) if self.prefix else key.strip('/')}"


def artifact_store_from_location(
    location: str | Path, endpoint_url: str | None = None, region: str | None = None
) -> ArtifactStore:
    """``s3://bucket/prefix`` → S3; a path or ``file://`` URI → local folder."""
    text = str(location)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        return S3ArtifactStore(parsed.netloc, parsed.path, endpoint_url=endpoint_url, region=region)
    if parsed.scheme == "file":
        return LocalArtifactStore(Path(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ValueError(f"unsupported artifact location {text!r} (use a folder, file:// or s3://)")
    return LocalArtifactStore(Path(text))
