"""WordNet glosses as a labelled text set: gloss -> lexicographer class.

Debian's ``wordnet-base`` ships the WordNet 3.0 database; every synset line in
``data.{noun,verb,adj,adv}`` carries its lexicographer file number (one of 45
classes such as ``noun.animal`` or ``verb.motion``) and a gloss. That gives a
real, offline text-classification task whose class mix can be shifted to make
natural drift for benchmarks, the demo and the end-to-end test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORDNET_DIR_ENV = "DISTILLD_WORDNET_DIR"
DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")

# WordNet 3.0's lexnames file, in file-number order (Debian's package omits it).
LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
NUM_CLASSES = len(LEXNAMES)


@dataclass(frozen=True)
class Gloss:
    synset_offset: str
    pos: str
    label: int
    text: str

    @property
    def lexname(self) -> str:
        return LEXNAMES[self.label]


class WordNetNotInstalled(FileNotFoundError):
    pass


def wordnet_dir() -> Path:
    return Path(os.environ.get(WORDNET_DIR_ENV, DEFAULT_WORDNET_DIR))


def _parse_data_file(path: Path, pos: str) -> Iterator[Gloss]:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            # the licence header lines start with two spaces
            if line.startswith("  "):
                continue
            head, sep, gloss = line.partition(" | ")
            if not sep:
                continue
            fields = head.split(" ", 3)
            text = gloss.strip()
            if len(fields) < 3 or not text:
                continue
            yield Gloss(synset_offset=fields[0], pos=pos, label=int(fields[1]), text=text)


def load_glosses(root: Path | None = None) -> list[Gloss]:
    """Every synset gloss in the database (about 117k), in file order."""
    root = root or wordnet_dir()
    files = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
    missing = [name for name in files if not (root / f"data.{name}").exists()]
    if missing:
        raise WordNetNotInstalled(
            f"WordNet data files not found under {root} (missing data.{', data.'.join(missing)}); "
            "install Debian's wordnet-base (apt-get install wordnet-base) or set "
            f"{WORDNET_DIR_ENV}"
        )
    glosses: list[Gloss] = []
    for name, pos in files.items():
        glosses.extend(_parse_data_file(root / f"data.{name}", pos))
    return glosses


def class_mix_sample(
    glosses: list[Gloss], weights: dict[int, float], n: int, rng: np.random.Generator
) -> list[Gloss]:
    """Draw ``n`` glosses (with replacement) whose classes follow ``weights``.

    ``weights`` maps class id to relative weight; classes absent from it are
    never drawn. Within a class, glosses are drawn uniformly.
    """
    by_class: dict[int, list[Gloss]] = {}
    for g in glosses:
        if weights.get(g.label, 0.0) > 0:
            by_class.setdefault(g.label, []).append(g)
    classes = sorted(by_class)
    if not classes:
        raise ValueError("no gloss belongs to a class with positive weight")
    p = np.array([weights[c] for c in classes], dtype=float)
    p /= p.sum()
    picks = rng.choice(len(classes), size=n, p=p)
    out = []
    for ci in picks:
        pool = by_class[classes[ci]]
        out.append(pool[rng.integers(len(pool))])
    return out
