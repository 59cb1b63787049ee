from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from distilld.trainers.job_spec import TeacherSource
from distilld.trainers.teacher import HttpTeacher, fill_teacher_targets
from tests.trainers.builders import N_CLASSES, synthetic_split


class TeacherServer(ThreadingHTTPServer):
    """A real HTTP teacher: logits are a function of the text; the first ``fail_first`` calls get a 503."""

    def __init__(self, fail_first: int = 0, always_fail: bool = False):
        super().__init__(("127.0.0.1", 0), TeacherHandler)
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/logits"


def text_logits(text: str) -> list[float]:
    return [float(len(text) % (k + 2)) for k in range(N_CLASSES)]


class TeacherHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        srv: TeacherServer = self.server
        with srv.lock:
            srv.calls += 1
            call = srv.calls
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["texts"]
            time.sleep(0.02)
            if srv.always_fail or call <= srv.fail_first:
                self.send_response(503)
                self.end_headers()
                return
            body = json.dumps({"logits": [text_logits(t) for t in texts]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with srv.lock:
                srv.in_flight -= 1


@pytest.fixture
def serve():
    servers = []

    def start(**kwargs) -> TeacherServer:
        srv = TeacherServer(**kwargs)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_http_teacher_fills_gaps_with_retries_and_bounded_concurrency(serve):
    srv = serve(fail_first=2)
    split = synthetic_split(60, 0, "h", teacher_share=0.3)
    logged = split.teacher_logits[split.has_teacher].copy()
    missing = np.flatnonzero(~split.has_teacher)
    source = TeacherSource(
        kind="http", url=srv.url, batch_size_records=4, max_concurrency=3, retries=2, retry_backoff_s=0.01
    )
    report = fill_teacher_targets(split, HttpTeacher(source))
    assert report.filled == len(missing) and report.failed == 0
    assert split.has_teacher.all()
    np.testing.assert_array_equal(split.teacher_logits[missing[0]], text_logits(split.texts[missing[0]]))
    np.testing.assert_array_equal(split.teacher_logits[~np.isin(np.arange(60), missing)], logged)
    assert srv.max_in_flight <= 3
    assert srv.calls == -(-len(missing) // 4) + 2


def test_http_teacher_that_keeps_failing_leaves_records_without_target(serve):
    srv = serve(always_fail=True)
    split = synthetic_split(10, 0, "h", teacher_share=0.0)
    source = TeacherSource(kind="http", url=srv.url, timeout_s=2, retries=1, retry_backoff_s=0.01)
    report = fill_teacher_targets(split, HttpTeacher(source))
    assert (report.filled, report.failed) == (0, 10)
    assert not split.has_teacher.any()
    assert srv.calls == 2
