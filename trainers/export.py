"""The exported candidate folder, and its integrity manifest.

Layout::

    model/          merged student (safetensors + config) and its tokenizer: servable as is
    adapter/        the LoRA adapter on its own (absent for full fine-tuning)
    metrics.json    evaluation of candidate and champion (see evaluate.py)
    spec.json       the job spec that produced it
    manifest.json   sha256 and size of every other file, relative paths, sorted

The registry uploads the folder and re-verifies the manifest wherever it lands.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from peft import PeftModel
from torch import nn

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


class ManifestError(ValueError):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listed_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)


def write_manifest(folder: Path) -> dict:
    files = {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in _listed_files(folder)
    }
    manifest = {"manifest_version": MANIFEST_VERSION, "created_at": time.time(), "files": files}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def verify_manifest(folder: Path) -> dict:
    """Check every file against the manifest (and that none is missing or extra); return the manifest."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise ManifestError(f"{folder} has no {MANIFEST_FILE}") from None
    expected = manifest["files"]
    present = {p.relative_to(folder).as_posix() for p in _listed_files(folder)}
    problems = [f"missing: {name}" for name in sorted(set(expected) - present)]
    problems += [f"not in manifest: {name}" for name in sorted(present - set(expected))]
    for name in sorted(set(expected) & present):
        if sha256_file(folder / name) != expected[name]["sha256"]:
            problems.append(f"sha256 mismatch: {name}")
    if problems:
        raise ManifestError(f"{folder}: " + "; ".join(problems))
    return manifest


def export_candidate(model: nn.Module, tokenizer, out_dir: Path, metrics: dict, spec_json: str) -> nn.Module:
    """Write the candidate folder; return the merged model (LoRA adapters folded into the weights)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(out_dir / "adapter")
        tokenizer.save_pretrained(out_dir / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out_dir / "model", safe_serialization=True)
    tokenizer.save_pretrained(out_dir / "model")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "spec.json").write_text(spec_json)
    write_manifest(out_dir)
    return model
