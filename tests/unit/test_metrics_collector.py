"""The metrics collector's pieces: tailing, the journal, backoff, the push server, the
wrapper, and whole collector processes against a stand-in ingest endpoint that keeps
the operator's protocol (seq dedup, 409 on a gap, ``received`` at once and ``stored``
later in every answer, ``wait`` for a request with nothing new).

The real operator's ingest is exercised by tests/cluster/test_collector.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from trialforge.metrics import collector as col
from trialforge.metrics import contract
from trialforge.metrics.contract import HTTP_STATUS, Reason, answer_body
from trialforge.metrics.parsers import ObservationReader, make_parser

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pydantic", "kubernetes", "kopf", "optuna", "scipy", "numpy", "matplotlib", "yaml")


# -- a stand-in for the ingest endpoint ---------------------------------------------------


class Ingest:
    """The ingest protocol, in memory: what it received, what it stored (a moment
    later, as the operator's flusher does), in order, and every request."""

    def __init__(self, token: str = "tok", store_every: float = 0.02) -> None:
        self.token = token
        self.stored: list[dict[str, Any]] = []
        self.held: list[dict[str, Any]] = []  # received, not yet stored
        self.requests: list[int] = []  # status codes answered
        self.waits: list[float] = []  # the ``wait`` of each request that had one
        self.fail_next = 0  # answer 503 to this many requests
        self.storing = True  # False: hold everything received (a slow API server)
        self.ended = False  # True: the trial takes no more (TrialEnded)
        self.lock = threading.Condition()
        self._closed = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code, answer = outer.handle(body)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def store() -> None:
            while not self._closed.wait(store_every):
                with self.lock:
                    if self.storing and self.held:
                        self.stored.extend(self.held)
                        self.held.clear()
                        self.lock.notify_all()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/observations"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=store, daemon=True).start()

    def restart(self) -> None:
        """The operator dies and comes back: what it held but had not stored is gone."""
        with self.lock:
            self.held.clear()

    def _marks(self) -> dict[str, int]:
        return {"stored": len(self.stored), "received": len(self.stored) + len(self.held)}

    def handle(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            received = len(self.stored) + len(self.held)
            if self.fail_next > 0:
                self.fail_next -= 1
                reason, answer = Reason.BUSY, answer_body(Reason.BUSY, "busy")
            elif body["token"] != self.token:
                reason = Reason.UNAUTHORIZED
                answer = answer_body(reason, "the token is not this trial's")
            elif self.ended:
                reason = Reason.TRIAL_ENDED
                answer = answer_body(reason, "the trial is over", **self._marks())
            else:
                fresh = [o for o in body["observations"] if o["seq"] > received]
                if fresh and fresh[0]["seq"] != received + 1:
                    reason = Reason.SEQUENCE_GAP
                    answer = answer_body(reason, "gap", **self._marks())
                else:
                    for o in fresh:
                        if o["seq"] != len(self.stored) + len(self.held) + 1:
                            break
                        self.held.append(o)
                    if body.get("wait"):
                        self.waits.append(body["wait"])
                        self.lock.wait_for(lambda: not self.held, timeout=body["wait"])
                    reason = Reason.ACCEPTED
                    answer = answer_body(reason, **self._marks())
            self.requests.append(HTTP_STATUS[reason])
            return HTTP_STATUS[reason], dict(answer)

    def close(self) -> None:
        self._closed.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    server = Ingest()
    yield server
    server.close()


def config(tmp_path: Path, url: str, **kw: Any) -> col.Config:
    env = {
        contract.ENV_INGEST_URL: url,
        contract.ENV_TOKEN: "tok",
        contract.ENV_NAMESPACE: "ns",
        contract.ENV_TRIAL: "t-0",
        contract.ENV_SHARED_DIR: str(tmp_path),
    }
    cfg = col.Config.from_env(env, **{k: v for k, v in kw.items() if k in ("source", "path")})
    cfg.backoff_base, cfg.backoff_cap, cfg.poll_interval, cfg.flush_timeout = 0.01, 0.05, 0.02, 5
    cfg.send_interval = 0.42
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def reader() -> ObservationReader:
    return ObservationReader(make_parser("json"))


# -- tailing ---------------------------------------------------------------------------------


def test_partial_lines_wait_for_their_newline_and_crlf_split_across_reads(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    path.write_bytes(b'{"step": 0, "loss": 1.0}\n{"step": 1, "lo')
    tail = col.LineTail(path, reader(), {})
    assert [o.metrics for o in tail.poll()] == [{"loss": 1.0}]
    with open(path, "ab") as f:
        f.write(b'ss": 0.5}\r')
    assert tail.poll() == []  # a bare CR at the end may be half a CRLF
    with open(path, "ab") as f:
        f.write(b'\n{"step": 2, "loss": 0.25}')
    assert [(o.step, o.metrics["loss"]) for o in tail.poll()] == [(1, 0.5)]
    # The unterminated last line counts once the file is final.
    assert [(o.step, o.metrics["loss"]) for o in tail.poll(final=True)] == [(2, 0.25)]
    assert tail.reader.lines == 3 and tail.reader.junk == 0


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    path.write_text('{"loss": 1}\n')
    tail = col.LineTail(path, reader(), {})
    assert len(tail.poll()) == 1
    with open(path, "a") as f:
        f.write('{"loss": 2}\n{"loss": 3}')  # written before the rename, partial last line
    path.rename(tmp_path / "m.log.1")
    path.write_text('{"loss": 4}\n')
    got = [o.metrics["loss"] for o in tail.poll()]
    assert got == [2.0, 3.0, 4.0]
    assert tail.rotations == 1


def test_copy_truncate_starts_again_from_the_beginning(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    path.write_text("".join(f'{{"loss": {i}}}\n' for i in range(5)))
    tail = col.LineTail(path, reader(), {})
    assert len(tail.poll()) == 5
    with open(path, "w") as f:  # truncated in place, then written again
        f.write('{"loss": 9}\n')
    assert [o.metrics["loss"] for o in tail.poll()] == [9.0]
    assert tail.truncations == 1


def test_resuming_from_a_position_rereads_only_the_unfinished_line(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    path.write_text('{"step": 0, "loss": 1}\n{"step": 1, "lo')
    first = col.LineTail(path, reader(), {})
    assert len(first.poll()) == 1
    saved = first.position()
    first.close()
    with open(path, "a") as f:
        f.write('ss": 2}\n')
    again = col.LineTail(path, reader(), saved)
    assert [(o.step, o.metrics) for o in again.poll()] == [(1, {"loss": 2.0})]


def test_resuming_after_a_rotation_finds_the_old_file_by_inode(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    path.write_text('{"loss": 1}\n')
    first = col.LineTail(path, reader(), {})
    first.poll()
    saved = first.position()
    first.close()
    with open(path, "a") as f:
        f.write('{"loss": 2}\n')
    path.rename(tmp_path / "m.log.1")
    path.write_text('{"loss": 3}\n')
    again = col.LineTail(path, reader(), saved)
    assert [o.metrics["loss"] for o in again.poll()] == [2.0, 3.0]


def test_junk_and_overlong_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    big = b"x" * (col.MAX_LINE + 10)
    path.write_bytes(b"starting\n" + big + b"\n" + b'{"loss": 1}\n{"bad json\n')
    tail = col.LineTail(path, reader(), {})
    got = tail.poll(final=True)
    assert [o.metrics for o in got] == [{"loss": 1.0}]
    assert tail.reader.junk == 3 and tail.reader.observations == 1


# -- the journal -----------------------------------------------------------------------------


def obs(step: int) -> Any:
    from trialforge.api.observation import Observation

    return Observation(step, {"loss": 1.0 / (step + 1)}, 1000.0 + step)


def test_journal_numbers_keeps_and_forgets_what_is_acknowledged(tmp_path: Path) -> None:
    j = col.Journal(tmp_path, capacity=100)
    j.append([obs(0), obs(1), obs(2)], {"offset": 10})
    assert [s for s, _ in j.batch(10)] == [1, 2, 3]
    j.ack(2)
    assert [s for s, _ in j.batch(10)] == [3]
    assert j.room() == 99
    j.close()
    # A restarted collector resumes: same numbering, only the unacknowledged re-sent.
    k = col.Journal(tmp_path, capacity=100)
    assert k.resumed and k.acked == 2 and k.next_seq == 4
    assert [json.loads(t)["step"] for _, t in k.batch(10)] == [2]
    assert k.state["source"] == {"offset": 10}
    k.append([obs(3)])
    assert [s for s, _ in k.batch(10)] == [3, 4]


def test_journal_lines_the_state_never_counted_are_dropped_on_restart(tmp_path: Path) -> None:
    j = col.Journal(tmp_path, capacity=100)
    j.append([obs(0)], {"offset": 5})
    j.close()
    # A crash between the journal write and the state write: an uncounted line and a torn one.
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write(col.encode(2, obs(1), 0) + "\n" + '{"seq": 3, "st')
    k = col.Journal(tmp_path, capacity=100)
    assert [s for s, _ in k.batch(10)] == [1] and k.next_seq == 2
    assert k.state["source"] == {"offset": 5}  # so the source re-reads observation 2


def test_journal_renumbers_when_the_operator_lacks_what_was_forgotten(tmp_path: Path) -> None:
    j = col.Journal(tmp_path, capacity=100)
    j.append([obs(i) for i in range(5)])
    j.ack(3)
    j.renumber(1)
    assert [(s, json.loads(t)["seq"]) for s, t in j.batch(10)] == [(2, 2), (3, 3)]
    assert j.next_seq == 4


def test_non_finite_values_travel_as_strings() -> None:
    from trialforge.api.observation import Observation

    text = col.encode(7, Observation(3, {"loss": float("nan"), "g": float("inf")}), now=5.0)
    assert json.loads(text) == {
        "seq": 7,
        "step": 3,
        "time": 5.0,
        "metrics": {"loss": "nan", "g": "inf"},
    }


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    delays = col.backoff_delays(0.1, 5.0, random.Random(1))
    got = [next(delays) for _ in range(12)]
    for n, d in enumerate(got):
        ceiling = min(5.0, 0.1 * 2**n)
        assert ceiling / 2 <= d <= ceiling
    assert max(got) <= 5.0 and got[-1] >= 2.5
    other = col.backoff_delays(0.1, 5.0, random.Random(2))
    assert [next(other) for _ in range(12)] != got  # jittered: collectors do not align


# -- whole collectors --------------------------------------------------------------------------


def run_collector(cfg: col.Config) -> tuple[int, col.Collector]:
    c = col.Collector(cfg)
    return c.run(), c


def test_stdout_source_delivers_everything_once_in_order_then_exits(
    tmp_path: Path, ingest: Ingest
) -> None:
    lines = [json.dumps({"step": i, "loss": 1 / (i + 1)}) for i in range(1200)]
    (tmp_path / contract.STDOUT_FILE).write_text("epoch 0 starting\n" + "\n".join(lines))
    (tmp_path / contract.EXIT_FILE).write_text("0\n")
    ingest.fail_next = 3  # the operator is busy at first: backoff, then delivery
    code, c = run_collector(config(tmp_path, ingest.url, batch_size=100))
    assert code == 0
    assert [o["seq"] for o in ingest.stored] == list(range(1, 1201))
    assert [o["step"] for o in ingest.stored] == list(range(1200))
    assert c.reader.junk == 1 and 503 in ingest.requests


def test_a_forged_token_is_refused_and_the_collector_says_it_could_not_deliver(
    tmp_path: Path, ingest: Ingest
) -> None:
    (tmp_path / contract.STDOUT_FILE).write_text('{"loss": 1}\n')
    (tmp_path / contract.EXIT_FILE).write_text("0\n")
    cfg = config(tmp_path, ingest.url, flush_timeout=0.5)
    cfg.token = "forged"
    code, _ = run_collector(cfg)
    assert code == 1 and ingest.stored == [] and set(ingest.requests) == {403}


def test_an_ended_trial_stops_the_sending_and_the_collector_exits_cleanly(
    tmp_path: Path, ingest: Ingest
) -> None:
    (tmp_path / contract.STDOUT_FILE).write_text('{"loss": 1}\n{"loss": 2}\n')
    (tmp_path / contract.EXIT_FILE).write_text("0\n")
    ingest.ended = True
    code, c = run_collector(config(tmp_path, ingest.url))
    # One answer is enough: no retries into a trial that takes nothing any more.
    assert code == 0 and c.trial_ended and ingest.requests == [409] and ingest.stored == []


def test_a_collector_that_thinks_it_is_ahead_resends_from_what_the_operator_has(
    tmp_path: Path, ingest: Ingest
) -> None:
    ingest.stored = [{"seq": 1, "step": 0}]
    j = col.Journal(tmp_path / "collector", 100)
    j.append([obs(i) for i in range(4)])
    j.ack(2)  # it believes 2 are stored; the operator has 1
    j.close()
    (tmp_path / contract.EXIT_FILE).write_text("0\n")
    (tmp_path / contract.STDOUT_FILE).write_text("")
    code, _ = run_collector(config(tmp_path, ingest.url))
    assert code == 0 and [o["seq"] for o in ingest.stored] == [1, 2, 3]


def test_file_source_follows_a_growing_rotating_file_until_the_trainer_exits(
    tmp_path: Path, ingest: Ingest
) -> None:
    cfg = config(tmp_path, ingest.url, source="file", path="logs/train.log", format="keyvalue")
    cfg.format = "keyvalue"
    (tmp_path / "logs").mkdir()
    log_path = tmp_path / "logs" / "train.log"
    c = col.Collector(cfg)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(c.run()))
    t.start()
    for i in range(30):
        with open(log_path, "a") as f:
            f.write(f"step={i} loss={1 / (i + 1):.4f}")
            time.sleep(0.005)
            f.write(" acc=0.5\n")
        if i == 14:
            log_path.rename(tmp_path / "logs" / "train.log.1")
        time.sleep(0.01)
    (tmp_path / contract.EXIT_FILE).write_text("0\n")
    t.join(20)
    assert result == [0]
    assert [o["step"] for o in ingest.stored] == list(range(30))
    assert all(o["metrics"]["acc"] == 0.5 for o in ingest.stored)


def test_push_server_takes_reports_and_answers_503_when_the_buffer_is_full(
    tmp_path: Path, ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trialforge import report

    j = col.Journal(tmp_path / "j", capacity=2)
    server = col.PushServer(0, j, ObservationReader(make_parser("json")))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/report"
        monkeypatch.setenv(contract.ENV_REPORT_URL, url)
        report(step=3, loss=0.5)
        report(loss=float("nan"))
        assert [json.loads(t)["metrics"] for _, t in j.batch(10)] == [
            {"loss": 0.5},
            {"loss": "nan"},
        ]
        assert [json.loads(t)["step"] for _, t in j.batch(10)] == [3, 4]
        assert server.accept(json.dumps({"loss": 1.0}))[0] == 503
        assert server.accept("not json")[0] == 503  # full first
        j.ack(2)
        assert server.accept("not json")[0] == 400
    finally:
        server.close()


def test_push_server_takes_reports_from_loopback_only() -> None:
    from trialforge.metrics.collector.sources.push import may_report

    assert may_report("127.0.0.1") and may_report("::1") and may_report("127.3.2.1")
    assert not may_report("10.244.0.1") and not may_report("192.0.2.7")
    assert not may_report("not-an-address")


def test_push_source_end_to_end(tmp_path: Path, ingest: Ingest) -> None:
    cfg = config(tmp_path, ingest.url, source="push", push_port=0)
    c = col.Collector(cfg)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(c.run()))
    t.start()
    assert isinstance(c.source, col.PushSource)
    env = dict(os.environ, **{contract.ENV_REPORT_URL: contract.report_url(c.source.port)})
    trainer = "import trialforge\nfor i in range(50): trialforge.report(step=i, acc=i / 50)\n"
    subprocess.run([sys.executable, "-c", trainer], env=env, check=True, timeout=60)
    (tmp_path / contract.EXIT_FILE).write_text("0\n")
    t.join(20)
    assert result == [0]
    assert [(o["seq"], o["step"]) for o in ingest.stored] == [(i + 1, i) for i in range(50)]


def collector_process(tmp_path: Path, url: str, **env: str) -> subprocess.Popen[bytes]:
    full = {
        **os.environ,
        contract.ENV_INGEST_URL: url,
        contract.ENV_TOKEN: "tok",
        contract.ENV_NAMESPACE: "ns",
        contract.ENV_TRIAL: "t-0",
        contract.ENV_SHARED_DIR: str(tmp_path),
        contract.ENV_BATCH_SIZE: "7",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "trialforge.cli", "collector"],
        env=full,
        stderr=open(tmp_path / "collector.log", "ab"),
    )


def test_a_killed_collector_restarts_without_losing_repeating_or_skipping(
    tmp_path: Path, ingest: Ingest
) -> None:
    out = tmp_path / contract.STDOUT_FILE
    proc = collector_process(tmp_path, ingest.url)
    try:
        for i in range(300):
            with open(out, "a") as f:
                f.write(json.dumps({"step": i, "loss": i}) + "\n")
            if i in (100, 200):  # SIGKILL mid-stream, then a new collector in its place
                while len(ingest.stored) < i // 2:
                    time.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                proc = collector_process(tmp_path, ingest.url)
            time.sleep(0.002)
        (tmp_path / contract.EXIT_FILE).write_text("0\n")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [o["seq"] for o in ingest.stored] == list(range(1, 301))
    assert [o["step"] for o in ingest.stored] == list(range(300))
    assert "resumed" in (tmp_path / "collector.log").read_text()


def test_sigterm_flushes_what_is_there_and_exits(tmp_path: Path, ingest: Ingest) -> None:
    (tmp_path / contract.STDOUT_FILE).write_text("".join(f'{{"loss": {i}}}\n' for i in range(40)))
    proc = collector_process(tmp_path, ingest.url)
    time.sleep(1.0)
    with open(tmp_path / contract.STDOUT_FILE, "a") as f:
        f.write('{"loss": 40}')  # no newline: still the last line
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert [o["metrics"]["loss"] for o in ingest.stored] == list(range(41))


def test_rank_other_than_zero_reports_nothing(tmp_path: Path, ingest: Ingest) -> None:
    (tmp_path / contract.STDOUT_FILE).write_text('{"loss": 1}\n')
    (tmp_path / contract.EXIT_FILE).write_text("0\n")
    proc = collector_process(tmp_path, ingest.url, **{contract.ENV_RANK: "1"})
    assert proc.wait(30) == 0 and ingest.requests == []


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=contract.ENV_METRICS_PATH):
        col.Config.from_env(
            {
                contract.ENV_INGEST_URL: "http://x",
                contract.ENV_TOKEN: "t",
                contract.ENV_NAMESPACE: "n",
                contract.ENV_TRIAL: "t",
                contract.ENV_METRICS_SOURCE: "file",
            }
        )
    with pytest.raises(ValueError, match="needs ingest_url, token"):
        col.Config.from_env({})
    proc = subprocess.run(
        [sys.executable, "-m", "trialforge.cli", "collector"],
        env={k: v for k, v in os.environ.items() if not k.startswith("TRIALFORGE_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "needs ingest_url" in proc.stderr


def test_the_collector_imports_nothing_heavy() -> None:
    code = (
        "import sys, trialforge.cli, trialforge.metrics.collector\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the trainer's entrypoint (entrypoint/, Go; its own behaviour is in main_test.go) ----------


@pytest.fixture(scope="module")
def entrypoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The entrypoint program, built from entrypoint/ as the operator image builds it."""
    out = tmp_path_factory.mktemp("entrypoint") / contract.ENTRYPOINT_NAME
    source = Path(__file__).parents[2] / "entrypoint"
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local")
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=source, env=env, check=True)
    return out


def test_what_the_entrypoint_writes_is_where_the_collector_reads_it(
    entrypoint: Path, tmp_path: Path
) -> None:
    # The program installs itself where the Job's command points (the init container).
    bin_dir = tmp_path / "bin"
    subprocess.run([str(entrypoint), "install", str(bin_dir)], check=True, timeout=60)
    installed = bin_dir / contract.ENTRYPOINT_NAME
    assert contract.ENTRYPOINT.rsplit("/", 1)[1] == installed.name
    trainer = "import sys; print('{\"loss\": 1}'); print('oops', file=sys.stderr); sys.exit(3)"
    command = contract.entrypoint_command([sys.executable, "-c", trainer])
    env = dict(os.environ, **{contract.ENV_SHARED_DIR: str(tmp_path)})
    proc = subprocess.run(
        [str(installed), *command[1:]], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3
    assert proc.stdout == '{"loss": 1}\noops\n'  # what kubectl logs shows
    cfg = col.Config.from_env(
        {
            contract.ENV_INGEST_URL: "http://127.0.0.1:1/v1/observations",
            contract.ENV_TOKEN: "t",
            contract.ENV_NAMESPACE: "ns",
            contract.ENV_TRIAL: "xp-0",
            contract.ENV_SHARED_DIR: str(tmp_path),
        }
    )
    assert cfg.exit_marker.read_text().strip() == "3"
    path = col.StdoutTail.path_of(cfg)
    assert path == tmp_path / contract.STDOUT_FILE
    assert path.read_text() == '{"loss": 1}\noops\n'


# -- TensorBoard ---------------------------------------------------------------------------------


def test_tensorboard_scalars_are_read_incrementally_and_resumed(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(tmp_path / "run1"))

    def scalar(step: int, **values: float) -> None:
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]
        )
        writer.add_event(event_pb2.Event(wall_time=1000.0 + step, step=step, summary=summary))
        writer.flush()

    for step in range(3):
        scalar(step, loss=1.0 / (step + 1), acc=step / 10)
    source = col.TensorBoardSource(tmp_path, {})
    first = source.poll()
    assert [(o.step, o.metrics) for o in first] == [
        (s, {"loss": pytest.approx(1.0 / (s + 1)), "acc": pytest.approx(s / 10)}) for s in range(3)
    ]
    assert first[0].time == 1000.0
    scalar(3, loss=0.2)
    assert [o.step for o in source.poll()] == [3]
    saved = source.position()
    scalar(4, loss=0.1)
    writer.close()
    resumed = col.TensorBoardSource(tmp_path, saved)
    assert [(o.step, o.metrics) for o in resumed.poll()] == [(4, {"loss": pytest.approx(0.1)})]


def test_what_the_operator_only_received_is_kept_until_stored_and_sent_again_after_a_restart(
    tmp_path: Path, ingest: Ingest
) -> None:
    ingest.storing = False  # the operator holds what it receives and stores nothing yet
    out = tmp_path / contract.STDOUT_FILE
    out.write_text("".join(json.dumps({"step": i, "loss": i}) + "\n" for i in range(50)))
    proc = collector_process(tmp_path, ingest.url)
    try:
        deadline = time.monotonic() + 30
        while len(ingest.held) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(ingest.held) == 50 and ingest.stored == []
        # Received is not stored: the journal still has all of it.
        state = json.loads((tmp_path / "collector" / "state.json").read_text())
        assert state["acked"] == 0 and state["next_seq"] == 51
        ingest.restart()  # the operator dies holding all 50, and comes back
        ingest.storing = True
        with open(out, "a") as f:
            f.write("".join(json.dumps({"step": i, "loss": i}) + "\n" for i in range(50, 60)))
        (tmp_path / contract.EXIT_FILE).write_text("0\n")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [o["seq"] for o in ingest.stored] == list(range(1, 61))
    assert [o["step"] for o in ingest.stored] == list(range(60))
    assert 409 in ingest.requests  # the new operator asked for what it lacked
    # At the end it asked the operator to answer once everything was stored.
    assert ingest.waits and all(w > 0 for w in ingest.waits)


def test_a_batch_starts_after_what_the_operator_already_holds(tmp_path: Path) -> None:
    j = col.Journal(tmp_path, 100)
    j.append([obs(i) for i in range(10)])
    j.ack(3)
    assert [s for s, _ in j.batch(4)] == [4, 5, 6, 7]
    assert [s for s, _ in j.batch(4, after=6)] == [7, 8, 9, 10]
    assert [s for s, _ in j.batch(4, after=2)] == [4, 5, 6, 7]  # nothing below the pending
    assert j.batch(4, after=10) == []
    j.close()


def test_while_the_trainer_runs_requests_are_spaced_by_the_send_interval(
    tmp_path: Path, ingest: Ingest
) -> None:
    out = tmp_path / contract.STDOUT_FILE
    out.write_text("")
    cfg = config(tmp_path, ingest.url, source="stdout")
    cfg.send_interval = 0.4
    collector = col.Collector(cfg)
    collector.rng = _Fixed(0.9)  # every pause 0.4 * (1 + 0.5 * 0.8) = 0.56 s
    thread = threading.Thread(target=collector.run, daemon=True)
    thread.start()
    for i in range(100):  # a line every 20 ms for 2 s
        with open(out, "a") as f:
            f.write(json.dumps({"step": i, "loss": i}) + "\n")
        time.sleep(0.02)
    (tmp_path / contract.EXIT_FILE).write_text("0\n")
    thread.join(30)
    assert [o["step"] for o in ingest.stored] == list(range(100))
    # About 2 s / 0.56 s requests with observations, plus the end's; polling every
    # 20 ms without the interval would make dozens.
    assert len(ingest.requests) <= 10, ingest.requests
    # The pause after each answer is the one drawn from the collector's rng.
    assert collector.next_request - collector.last_request == pytest.approx(0.56)


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_each_pause_between_requests_is_drawn_from_half_to_one_and_a_half_intervals() -> None:
    rng = random.Random(7)
    pauses = [col.send_pause(0.4, rng) for _ in range(2000)]
    assert 0.2 <= min(pauses) < 0.21
    assert 0.59 < max(pauses) < 0.6
    # Uniform over the range: collectors answered together drift apart, and stay
    # apart; on average one request per interval, as without the jitter.
    assert sum(pauses) / len(pauses) == pytest.approx(0.4, abs=0.01)
    assert sum(p < 0.4 for p in pauses) == pytest.approx(1000, abs=100)


def test_a_new_pod_s_collector_numbers_after_the_earlier_runs_of_its_trial(
    tmp_path: Path, ingest: Ingest
) -> None:
    """Issue 22's bug: a fresh collector of a trial that ran before (a pod the Job made
    again after a disruption, a Pause and resume) began again at seq 1, and the operator
    took its first observations for ones it had stored and dropped them."""
    ingest.stored = [{"seq": s, "step": s - 1, "metrics": {"loss": 9.0}} for s in range(1, 6)]
    lines = [json.dumps({"step": i, "loss": float(i)}) for i in range(3, 10)]  # resumed at 3
    (tmp_path / contract.STDOUT_FILE).write_text("\n".join(lines) + "\n")
    (tmp_path / contract.EXIT_FILE).write_text("0\n")
    code, _ = run_collector(config(tmp_path, ingest.url))
    assert code == 0
    assert [o["seq"] for o in ingest.stored] == list(range(1, 13))
    assert [o["step"] for o in ingest.stored[5:]] == list(range(3, 10))  # none dropped
