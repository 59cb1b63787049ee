"""A real single-node Apache Kafka broker (KRaft) for the embedded stack and the tests.

    python deploy/kafka/broker.py fetch             # resolve the jars once (Maven Central)
    python deploy/kafka/broker.py run [--port P]    # start, print the bootstrap address, stop on Ctrl-C

The jars come from ``pom.xml`` beside this file, resolved by Maven into a
git-ignored cache (``.cache/kafka`` at the repository root, or
``$DISTILLD_KAFKA_CACHE``). ``LocalKafka`` formats storage for one combined
broker+controller node, starts ``kafka.Kafka`` on 127.0.0.1 with a small heap,
waits until it serves and stops it cleanly. It only needs Java 17 and Maven;
the Python side uses the standard library alone so the demo and the test
fixtures can import it before anything else is installed.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

KIT_DIR = Path(__file__).resolve().parent
REPO_ROOT = KIT_DIR.parent.parent
POM = KIT_DIR / "pom.xml"
LOG4J2_CONFIG = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="STDOUT"/></Root>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="kafka.server.BrokerServer" level="INFO"/>
  </Loggers>
</Configuration>
"""
READY_LINE = "Kafka Server started"


class KafkaKitError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILLD_KAFKA_CACHE", REPO_ROOT / ".cache" / "kafka"))


def _kafka_version() -> str:
    text = POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>", start)]


def jars_dir() -> Path:
    return cache_dir() / f"jars-{_kafka_version()}"


def fetch_jars(quiet: bool = True) -> Path:
    """Resolve the broker's jars once; later calls return the cached folder."""
    target = jars_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    if shutil.which("mvn") is None:
        raise KafkaKitError(
            "Maven (mvn) is not on PATH; install it (apt-get install maven) to fetch the broker"
        )
    if shutil.which("java") is None:
        raise KafkaKitError(
            "Java is not on PATH; install a JRE 17+ (apt-get install openjdk-17-jre-headless)"
        )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        "mvn",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]
    if quiet:
        cmd.insert(1, "-q")
    print(
        f"fetching Apache Kafka {_kafka_version()} jars from Maven Central into {target} ...", file=sys.stderr
    )
    result = subprocess.run(cmd, capture_output=quiet, text=True)
    if result.returncode != 0:
        raise KafkaKitError(
            f"mvn failed ({result.returncode}):\n{(result.stdout or '')[-3000:]}{result.stderr or ''}"
        )
    if not any(partial.glob("kafka_2.13-*.jar")):
        raise KafkaKitError(f"mvn finished but no kafka_2.13 jar landed in {partial}")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (target / ".complete").write_text(_kafka_version())
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_id() -> str:
    # like Kafka's own Uuid.randomUuid: an id starting with "-" would be read
    # by the storage tool's argument parser as an option
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class LocalKafka:
    """One combined broker+controller node on 127.0.0.1.

    ``stop()`` then ``start()`` restarts the same broker on the same ports and
    log dir, which is how the tests take the broker away from a running daemon.
    """

    def __init__(self, work_dir: Path | None = None, port: int | None = None, heap_mb: int = 384):
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="distilld-kafka-"))
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap_mb = heap_mb
        self.process: subprocess.Popen | None = None
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "broker.log"

    def _write_config(self) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.work_dir / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        path = self.work_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.work_dir / "log4j2.xml").write_text(LOG4J2_CONFIG)
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        jars = fetch_jars()
        return [
            "java",
            f"-Xmx{self.heap_mb}m",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.xml'}",
            "-cp",
            str(jars / "*"),
            main,
            *args,
        ]

    def _format(self, config: Path) -> None:
        cmd = self._java(
            "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config), "--standalone"
        )
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise KafkaKitError(f"storage format failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
        self._formatted = True

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        if self.process is not None and self.process.poll() is None:
            return self
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not self._formatted:
            self._format(config)
        log = self.log_path.open("a")
        # a new session so Ctrl-C in the terminal reaches only us; we stop the broker ourselves
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(config)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise KafkaKitError(f"broker exited with {self.process.returncode}; log:\n{self._log_tail()}")
            with self.log_path.open() as fh:
                fh.seek(max(0, offset - 200))
                if READY_LINE in fh.read() and self._port_open():
                    return
            time.sleep(0.2)
        self.stop()
        raise KafkaKitError(f"broker not ready after {timeout_s:.0f}s; log:\n{self._log_tail()}")

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def _log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: for tests of what survives a crashed broker."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="resolve the broker jars into the cache")
    run = sub.add_parser("run", help="run a broker in the foreground until Ctrl-C")
    run.add_argument("--port", type=int, default=None)
    run.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir, removed on exit)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            print(fetch_jars(quiet=False))
            return 0
        broker = LocalKafka(work_dir=args.dir, port=args.port).start()
    except KafkaKitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"kafka ready at {broker.bootstrap} (log: {broker.log_path})", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop and broker.process is not None and broker.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if args.dir is None:
            broker.cleanup()
        else:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
