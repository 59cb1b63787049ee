"""sha256 manifests of model folders, and their verification.

A manifest is the trainer's format (``trainers/export.py``)::

    {"manifest_version": 1, "files": {"relative/path": {"sha256": hex, "bytes": n}, ...}, ...}

stored as ``manifest.json`` inside the folder and not listing itself. The
digest of the manifest (sha256 of its canonical JSON) is recorded in the
registry, outside the artifact store, so that rewriting both a file and the
manifest is still caught.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_CHUNK_BYTES = 1 << 20


class IntegrityError(RuntimeError):
    """A model's files do not match their recorded sha256. The model must not be used."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def hash_folder(folder: Path, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> dict[str, str]:
    """sha256 of every regular file below ``folder``, keyed by POSIX relative path."""
    folder = Path(folder)
    files: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        if rel in exclude:
            continue
        files[rel] = sha256_file(path)
    return files


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def manifest_for(folder: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    folder = Path(folder)
    files = {
        rel: {"sha256": digest, "bytes": (folder / rel).stat().st_size}
        for rel, digest in hash_folder(folder).items()
    }
    return {**(extra or {}), "manifest_version": MANIFEST_VERSION, "files": files}


def manifest_sha256(manifest: dict[str, Any]) -> dict[str, str]:
    """``{relative/path: sha256 hex}`` of a manifest."""
    return {rel: entry["sha256"] for rel, entry in manifest["files"].items()}


def write_manifest(folder: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hash ``folder`` and write its ``manifest.json``; returns the manifest."""
    manifest = manifest_for(folder, extra)
    (Path(folder) / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise IntegrityError(f"{folder} has no {MANIFEST_NAME}")
    manifest = json.loads(path.read_text())
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise IntegrityError(f"{path} lists no files")
    if not all(isinstance(entry, dict) and isinstance(entry.get("sha256"), str) for entry in files.values()):
        raise IntegrityError(f"{path} is not a distilld manifest (files must map to {{sha256, bytes}})")
    return manifest


def verify_folder(folder: Path, expected_digest: str | None = None) -> dict[str, Any]:
    """Check every file of ``folder`` against its manifest; returns the manifest.

    ``expected_digest`` is the manifest digest recorded at registration; when
    given, the manifest itself must match it. Files present but not listed are
    refused too: a used folder must be exactly what was written.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if expected_digest is not None:
        actual = manifest_digest(manifest)
        if actual != expected_digest:
            raise IntegrityError(
                f"{folder}/{MANIFEST_NAME} digest {actual} differs from the registered {expected_digest}"
            )
    actual_files = hash_folder(folder)
    expected_files = manifest_sha256(manifest)
    missing = sorted(set(expected_files) - set(actual_files))
    unexpected = sorted(set(actual_files) - set(expected_files))
    changed = sorted(
        p for p in expected_files.keys() & actual_files.keys() if expected_files[p] != actual_files[p]
    )
    if missing or unexpected or changed:
        logger.error(
            "integrity check failed",
            extra={"folder": str(folder), "missing": missing, "unexpected": unexpected, "changed": changed},
        )
        raise IntegrityError(
            f"{folder} does not match its manifest: changed={changed} missing={missing} unexpected={unexpected}"
        )
    return manifest
