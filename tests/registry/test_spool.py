import json
from pathlib import Path

from distilld.daemon.spool import PermanentFailure, Spool


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_entries_and_attachments_survive_a_new_spool_object(tmp_path: Path):
    source = tmp_path / "export"
    (source / "adapter").mkdir(parents=True)
    (source / "adapter" / "w.bin").write_bytes(b"\x00\x01")
    spool = Spool(tmp_path / "spool")
    entry = spool.put("candidate", {"model": "intent"}, attachments={"export": source})
    (source / "adapter" / "w.bin").unlink()

    reopened = Spool(tmp_path / "spool")
    [again] = reopened.pending()
    assert again.id == entry.id
    assert again.payload == {"model": "intent"}
    assert (again.files_dir / "export" / "adapter" / "w.bin").read_bytes() == b"\x00\x01"


def test_backoff_doubles_up_to_the_cap(tmp_path: Path):
    clock = Clock()
    spool = Spool(tmp_path, retry_initial_s=5, retry_max_s=30, clock=clock)
    entry = spool.put("event", {})
    waits = []
    for _ in range(5):
        spool.retry_later(entry, "down")
        waits.append(entry.next_attempt_at - clock.now)
    assert waits == [5, 10, 20, 30, 30]
    assert spool.due() == []
    clock.now += 30
    assert [e.id for e in spool.due()] == [entry.id]
    assert spool.pending()[0].last_error == "down"


def test_drain_completes_retries_and_dead_letters(tmp_path: Path):
    clock = Clock()
    spool = Spool(tmp_path, clock=clock)
    ok = spool.put("a", {"n": 1})
    flaky = spool.put("b", {"n": 2})
    broken = spool.put("c", {"n": 3})

    def fail(entry):
        raise ConnectionError("refused")

    def permanent(entry):
        raise PermanentFailure("bad export")

    result = spool.drain({"a": lambda e: None, "b": fail, "c": permanent})
    assert result.done == [ok.id]
    assert result.retrying == [flaky.id]
    assert result.dead == [broken.id]
    assert [e.id for e in spool.pending()] == [flaky.id]
    assert spool.pending()[0].last_error == "ConnectionError: refused"
    [dead] = spool.dead()
    assert dead.last_error == "PermanentFailure: bad export"
    assert json.loads((tmp_path / "dead" / f"{broken.id}.json").read_text())["payload"] == {"n": 3}


def test_partial_writes_are_cleaned_on_open(tmp_path: Path):
    spool = Spool(tmp_path)
    (tmp_path / "123-abc.files.tmp").mkdir()
    (tmp_path / "456-def.files").mkdir()
    (tmp_path / "789.json.tmp").write_text("{")
    kept = spool.put("a", {}, attachments={"x": tmp_path / "789.json.tmp"})
    Spool(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["dead", f"{kept.id}.json", f"{kept.id}.files"]
    )
