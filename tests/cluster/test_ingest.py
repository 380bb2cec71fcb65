"""Bad requests to the ingest endpoint, against the real operator on the real control plane
(issue 18, "Bad requests to the ingest endpoint").

While legitimate collectors report three running trials (kwok pods) through the
collector's protocol, a fuzzer sends what a buggy or hostile client would: malformed
JSON, wrong types, huge bodies and batches, out-of-range and negative sequence numbers,
gaps, replays, another trial's token, an ended trial's token, a forged token, an unknown
trial, slow clients (slowloris: headers that never end, a body that trickles), a flood
of one trial, and many concurrent collectors of one trial. Every refusal is a 4xx with
its reason code (metrics/contract.py Reason), counted in
trialforge_observations_rejected_total{reason}; nothing wrong is stored; the legitimate
collectors' observations are all stored, exactly once and in order (correctness, not
time: latency under this load is measured by bench/ingest_fuzz.py).

A replay of a batch the operator already holds is answered 200 with ``accepted: 0``:
that is exactly what a collector whose answer was lost sends, so it cannot be refused;
what makes it harmless is that nothing is stored twice, which the test checks.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from clusterlib import KubeCluster
from operatorlib import Cluster, OperatorProcess, batch, experiment, post, token

from trialforge.kube.ingest import MAX_BATCH, MAX_REQUEST_BYTES, REJECTED_LABEL
from trialforge.metrics.contract import HTTP_STATUS, INGEST_PATH, Reason

pytestmark = pytest.mark.cluster

N = 240  # observations each legitimate collector reports
CHUNK = 4  # per request
PAUSE = 0.25  # between requests: 60 requests, long enough to overlap the whole fuzz


def loss(trial: str, step: int) -> float:
    """What trial ``trial`` reports at ``step``: distinct per trial, so a mix-up shows."""
    return round(1.0 / (step + 1) + 0.001 * (sum(trial.encode()) % 97), 9)


def rejected(port: int) -> Counter[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: Counter[str] = Counter()
    for line in text.splitlines():
        m = re.match(r'trialforge_observations_rejected_total\{reason="([^"]+)"\} (\S+)', line)
        if m:
            out[m.group(1)] = int(float(m.group(2)))
    return out


class Collector(threading.Thread):
    """A legitimate collector of one trial, by the protocol: one request in flight, the
    next batch after ``received``, a gap or a lower ``received`` sends again from there,
    a refusal to back off from (429, 503) is retried; at the end, ``wait`` until stored."""

    def __init__(
        self, port: int, namespace: str, trial: str, release: threading.Event, n: int = N
    ) -> None:
        super().__init__(daemon=True, name=f"collector-{trial}")
        self.port, self.ns, self.trial, self.n = port, namespace, trial, n
        # The second half waits for ``release`` (the fuzz is over); until then the
        # collector goes on asking, with nothing new: it is at work the whole time.
        self.release = release
        self.answers: Counter[int] = Counter()
        self.error: str | None = None
        self.stored = 0
        self.received = 0

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # reported by the test
            self.error = f"{type(e).__name__}: {e}"

    def _run(self) -> None:
        sent = 0
        deadline = time.monotonic() + 240
        while self.stored < self.n and time.monotonic() < deadline:
            first = sent + 1
            last = self.n if self.release.is_set() else self.n // 2
            points = [(s - 1, {"loss": loss(self.trial, s - 1)})
                      for s in range(first, min(first + CHUNK, last + 1))]  # fmt: skip
            body = batch(
                self.ns, self.trial, points, first_seq=first, wait=2.0 if not points else None
            )
            code, answer = post(self.port, body)
            self.answers[code] += 1
            if code in (429, 503):
                time.sleep(0.2)
                continue
            if code not in (200, 409):
                raise AssertionError(f"{self.trial}: {code} {answer}")
            sent = self.received = int(answer["received"])
            self.stored = int(answer["stored"])
            if sent >= self.n and self.stored < self.n:
                code, answer = post(self.port, batch(self.ns, self.trial, [], wait=5.0))
                self.answers[code] += 1
                if code == 200:
                    self.stored = int(answer["stored"])
            time.sleep(PAUSE)


def raw_request(port: int, head: bytes, body: list[bytes], pause: float = 0.0) -> tuple[int, dict]:
    """A request written by hand on a socket (sizes and speeds urllib will not send)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        try:
            for part in body:
                s.sendall(part)
                time.sleep(pause)
        except OSError:
            pass  # the server answered and closed before the rest: read the answer
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}")


def headers(length: int | None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST {INGEST_PATH} HTTP/1.1\r\nHost: x\r\n{size}\r\n\r\n".encode()


class Slowloris(threading.Thread):
    """Opens connections and sends their headers a byte at a time, never finishing."""

    def __init__(self, port: int, connections: int = 30) -> None:
        super().__init__(daemon=True, name="slowloris")
        self.port, self.n = port, connections
        self.stop = threading.Event()
        self.held = 0

    def run(self) -> None:
        socks = []
        for _ in range(self.n):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            socks.append(s)
        self.held = len(socks)
        line = f"POST {INGEST_PATH} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode()
        i = 0
        while not self.stop.is_set():
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(line[i : i + 1] if i < len(line) else b"a")
            i += 1
            self.stop.wait(0.5)
        for s in socks:
            s.close()


def test_bad_requests_are_refused_by_reason_counted_and_store_nothing(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    port, key, ns = operator.port, operator.key, namespace
    kube.create(experiment("ended", max_trials=1, run_seconds="1", gpus=0))
    kube.create(experiment("fuzz", max_trials=4, parallelism=4, run_seconds="600", gpus=0))
    a, b, crowd, victim = (f"fuzz-{i}" for i in range(4))
    kube.until(
        lambda: sum(p.status.phase == "Running" for p in kube.pods("fuzz")) == 4, 90, "4 pods run"
    )
    kube.until(
        lambda: (kube.trial("ended-0").get("status") or {}).get("phase") in ("Succeeded", "Failed"),
        90,
        "the trial of experiment 'ended' to end",
    )
    before = rejected(port)

    slow = Slowloris(port)
    slow.start()
    release = threading.Event()
    legit = [Collector(port, ns, a, release), Collector(port, ns, b, release)]
    # Many concurrent collectors of one trial, all sending its one true series.
    crowd_collectors = [Collector(port, ns, crowd, release) for _ in range(12)]
    for c in [*legit, *crowd_collectors]:
        c.start()

    good = batch(ns, victim, [(0, {"loss": loss(victim, 0)})])
    ended = batch(ns, "ended-0", [(0, {"loss": 1.0})])

    def obs(**fields: Any) -> dict[str, Any]:
        return dict(good, observations=[{**good["observations"][0], **fields}])

    cases: list[tuple[str, Callable[[], tuple[int, dict]], Reason]] = [
        ("malformed JSON", lambda: raw_request(port, headers(5), [b"{nope"]), Reason.BAD_REQUEST),
        ("nested 100k deep", lambda: raw_request(
            port, headers(200_000), [b"[" * 100_000 + b"]" * 100_000]), Reason.BAD_REQUEST),
        ("NaN literal", lambda: raw_request(
            port, headers(len(s := json.dumps(obs(time=float("nan"))).encode())), [s]),
         Reason.BAD_REQUEST),
        ("a JSON list", lambda: post(port, [good]), Reason.BAD_REQUEST),
        ("token a number", lambda: post(port, dict(good, token=12345)), Reason.BAD_REQUEST),
        ("observations an object", lambda: post(port, dict(good, observations={"seq": 1})),
         Reason.BAD_REQUEST),
        ("seq a string", lambda: post(port, obs(seq="1")), Reason.BAD_REQUEST),
        ("seq a float", lambda: post(port, obs(seq=1.5)), Reason.BAD_REQUEST),
        ("seq zero", lambda: post(port, obs(seq=0)), Reason.BAD_REQUEST),
        ("seq negative", lambda: post(port, obs(seq=-3)), Reason.BAD_REQUEST),
        ("seq beyond 2^53", lambda: post(port, obs(seq=2**63)), Reason.BAD_REQUEST),
        ("step negative", lambda: post(port, obs(step=-1)), Reason.BAD_REQUEST),
        ("step a bool", lambda: post(port, obs(step=True)), Reason.BAD_REQUEST),
        ("metric a string", lambda: post(port, obs(metrics={"loss": "low"})), Reason.BAD_REQUEST),
        ("metric name 10k chars", lambda: post(port, obs(metrics={"x" * 10_000: 1.0})),
         Reason.BAD_REQUEST),
        ("5001 metrics", lambda: post(port, obs(metrics={f"m{i}": i for i in range(5001)})),
         Reason.BAD_REQUEST),
        ("a seq twice", lambda: post(port, dict(good, observations=good["observations"] * 2)),
         Reason.BAD_REQUEST),
        ("a batch over the limit", lambda: post(port, dict(
            good, observations=[dict(good["observations"][0], seq=i + 1)
                                for i in range(MAX_BATCH + 1)])), Reason.BAD_REQUEST),
        ("9 MiB said by Content-Length", lambda: raw_request(
            port, headers(MAX_REQUEST_BYTES + 1024 * 1024), [b" " * 65536]), Reason.TOO_LARGE),
        ("9 MiB chunked", lambda: raw_request(
            port, headers(None), [b"10000\r\n" + b" " * 65536 + b"\r\n"] * 144), Reason.TOO_LARGE),
        ("a body that trickles", lambda: raw_request(
            port, headers(len(s := json.dumps(good).encode())),
            [s[i:i + 4] for i in range(0, 24, 4)], pause=2.5), Reason.TOO_SLOW),
        ("a gap far ahead", lambda: post(port, obs(seq=10**6)), Reason.SEQUENCE_GAP),
        ("a forged token", lambda: post(port, dict(good, token="f" * 64)), Reason.UNAUTHORIZED),
        ("a non-ASCII token", lambda: post(port, dict(good, token="ü" * 64)), Reason.UNAUTHORIZED),
        ("another trial's token", lambda: post(port, dict(good, token=token(key, ns, a))),
         Reason.UNAUTHORIZED),
        ("an unknown trial", lambda: post(port, batch(ns, "fuzz-99", [(0, {"loss": 1.0})])),
         Reason.UNKNOWN_TRIAL),
        ("an ended trial's token", lambda: post(port, ended), Reason.TRIAL_ENDED),
    ]  # fmt: skip
    wrong: list[str] = []
    expected: Counter[str] = Counter()
    try:
        # Sent a few at once, while the collectors report (the slow ones take 10 s).
        held_before = [c.received for c in legit]
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda case: case[1](), cases))
        held_after = [c.received for c in legit]
        for (what, _, reason), (code, body) in zip(cases, answers, strict=True):
            expected[REJECTED_LABEL[reason]] += 1
            if code != HTTP_STATUS[reason] or body.get("reason") != reason.value:
                wrong.append(f"{what}: {code} {body}, expected {HTTP_STATUS[reason]} {reason}")
            elif not 400 <= code < 500 or not body.get("error"):
                wrong.append(f"{what}: {code} {body}: no 4xx with a reason and an error")
        if not all(x < y for x, y in zip(held_before, held_after, strict=True)):
            wrong.append(f"the collectors made no progress during the fuzz: {held_before} "
                         f"-> {held_after}")  # fmt: skip
        # A flood of one trial: the first requests are admitted, the rest refused by rate.
        flood = [post(port, dict(good, observations=[]))[0] for _ in range(60)]
        expected["rate_limited"] += flood.count(429)
        if 429 not in flood or set(flood) - {200, 429}:
            wrong.append(f"the flood was answered {Counter(flood)}")
        # A replay of what the victim's collector sent and was told is held: taken once.
        time.sleep(1.5)  # the victim's rate budget refills
        first = post(port, good)
        replay = post(port, good)
        if first[0] != 200 or first[1]["accepted"] != 1:
            wrong.append(f"the victim's own first batch: {first}")
        if replay[0] != 200 or replay[1]["accepted"] != 0 or replay[1]["received"] != 1:
            wrong.append(f"a replay was taken again: {replay}")
    finally:
        release.set()
        for c in [*legit, *crowd_collectors]:
            c.join(300)
        slow.stop.set()
        slow.join(10)
    kube.check(not wrong, "\n".join(wrong))
    kube.check(slow.held == 30, f"slowloris held {slow.held} connections")

    # Counted by reason: each refusal once (the legitimate collectors add only gaps, rate
    # and busy answers, which they are told to expect).
    after = rejected(port)
    delta = {k: after[k] - before[k] for k in set(after) | set(before)}
    for label, n in expected.items():
        if label in ("gap", "rate_limited", "busy"):
            kube.check(delta.get(label, 0) >= n, f"{label}: counted {delta}, sent {expected}")
        else:
            kube.check(delta.get(label, 0) == n, f"{label}: counted {delta}, sent {expected}")

    # The legitimate collectors kept working: every observation stored once, in order.
    for c in [*legit, *crowd_collectors]:
        kube.check(c.error is None, f"{c.name}: {c.error}")
        kube.check(c.stored == N, f"{c.name} saw {c.stored} of {N} stored ({c.answers})")
    for trial in (a, b, crowd):
        status = kube.trial(trial)["status"]
        kube.check(
            status["lastSequence"] == N, f"{trial}: lastSequence {status.get('lastSequence')}"
        )
        points = status["history"]["loss"]
        steps = [p["step"] for p in points]
        kube.check(steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == N - 1,
                   f"{trial}: history steps {steps}")  # fmt: skip
        bad = [p for p in points if p["value"] != loss(trial, p["step"])]
        kube.check(not bad, f"{trial}: values that are not its own: {bad[:5]}")
        kube.check(status["metrics"]["loss"]["latest"] == loss(trial, N - 1), f"{trial}: {status}")
    # Nothing wrong stored anywhere else: the victim holds its one observation, the ended
    # trial what it had, no trial was made for the unknown name.
    kube.until(lambda: (kube.trial(victim).get("status") or {}).get("lastSequence") == 1, 30,
               "the victim's one observation stored")  # fmt: skip
    victim_status = kube.trial(victim)["status"]
    kube.check([p["step"] for p in victim_status["history"]["loss"]] == [0], f"{victim_status}")
    kube.check(
        "lastSequence" not in (kube.trial("ended-0").get("status") or {}), "ended-0 took data"
    )
    kube.check(all(t["metadata"]["name"] != "fuzz-99" for t in kube.trials()), "fuzz-99 exists")
