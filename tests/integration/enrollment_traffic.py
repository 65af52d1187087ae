"""Enrollment traffic for the fault tests: clients that enroll and add photos over HTTP while a
fault happens, recording every answer, and the checks that what was acknowledged was kept.

Each identity of the face data is enrolled at most once per server (a new person from its first
usable photo, later a second photo added), and an enrollment that failed is never sent again:
a person whose commit was cut off may exist without the client knowing, and a second person with
the same photo would make searches for it ambiguous.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

#: In the Hamilton clip the alert tests use: enrolled on purpose there, never as traffic.
IN_CLIP = {"lin_manuel_miranda", "alex_lacamoire", "barack_obama"}
#: Longest wait for one answer; only there so that a hung server fails the test.
REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Identity:
    name: str
    photos: list[Path]


def identities(faces_dir: Path, *, part: int = 0, parts: int = 1) -> list[Identity]:
    """The identities not in the clip, by name, split in ``parts`` disjoint parts."""
    folders = [
        folder
        for folder in sorted((faces_dir / "identities").iterdir())
        if folder.name not in IN_CLIP
    ]
    return [Identity(f.name, sorted(f.iterdir())) for f in folders[part::parts]]


@dataclass
class Answer:
    """One request and what came back (``status`` None: no answer, the connection failed)."""

    action: str  # "enroll" or "add"
    identity: str
    photo: Path
    status: int | None
    body: Any = None
    error: str | None = None
    person_id: int | None = None
    sent_at: float = 0.0
    answered_at: float = 0.0

    @property
    def acknowledged(self) -> bool:
        return self.status == 201

    def accepted_photos(self) -> list[str]:
        """SHA-256 of the photos the answer says were enrolled."""
        if not self.acknowledged:
            return []
        return [face["image_sha256"] for face in self.body["accepted"]]

    def describe(self) -> str:
        shown = self.error or str(self.body)[:300]
        return f"{self.action} {self.identity} ({self.photo.name}): {self.status} {shown}"


@dataclass
class EnrollmentTraffic:
    """Threads that enroll new persons and add photos to enrolled ones until stopped.

    Args:
        base_url: the server.
        token: an operator's bearer token.
        pool: the identities to enroll (each once at most).
        prefix: put before every person's name, so tests tell their persons apart.
        workers: enrolling threads; one more thread adds second photos.
        pause_s: wait between two requests of one thread.
        failure_pause_s: wait after a request that was not acknowledged, as a client backing
            off would (and so that an outage does not use up the pool).
    """

    base_url: str
    token: str
    pool: Sequence[Identity]
    prefix: str
    workers: int = 1
    pause_s: float = 0.0
    failure_pause_s: float = 0.5
    answers: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _next: int = 0
    _added: set[int] = field(default_factory=set)

    def start(self) -> EnrollmentTraffic:
        for number in range(self.workers):
            self._threads.append(
                threading.Thread(target=self._enroll_loop, name=f"enroll-{number}")
            )
        self._threads.append(threading.Thread(target=self._add_loop, name="add-photos"))
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 10)
        assert not any(t.is_alive() for t in self._threads), "a traffic thread hung"

    def __enter__(self) -> EnrollmentTraffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what happened ------------------------------------------------------------------------

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def acknowledged(self, action: str | None = None) -> list[Answer]:
        return [a for a in self.snapshot() if a.acknowledged and action in (None, a.action)]

    def wait_for(self, count: int, *, after: float = 0.0, timeout_s: float = 180.0) -> None:
        """Until ``count`` enrollments sent after time ``after`` were acknowledged."""
        deadline = time.monotonic() + timeout_s
        while True:
            done = [a for a in self.acknowledged("enroll") if a.sent_at >= after]
            if len(done) >= count:
                return
            assert time.monotonic() < deadline, (
                f"only {len(done)} of {count} enrollments acknowledged: "
                + "; ".join(a.describe() for a in self.snapshot()[-5:])
            )
            assert any(t.is_alive() for t in self._threads), "the traffic stopped"
            time.sleep(0.1)

    def exhausted(self) -> bool:
        with self._lock:
            return self._next >= len(self.pool)

    # --- the threads --------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=REQUEST_TIMEOUT_S,
        )

    def _take(self) -> Identity | None:
        with self._lock:
            if self._next >= len(self.pool):
                return None
            identity = self.pool[self._next]
            self._next += 1
            return identity

    def _enroll_loop(self) -> None:
        with self._client() as client:
            while not self._stop.is_set():
                identity = self._take()
                if identity is None:
                    return
                photo = identity.photos[0]
                name = f"{self.prefix}{identity.name}"
                files = [("photos", (photo.name, photo.read_bytes(), "application/octet-stream"))]
                answer = self._send(
                    client, "enroll", identity.name, photo, "/api/people", {"name": name}, files
                )
                if answer.acknowledged:
                    answer.person_id = int(answer.body["person"]["id"])
                self._stop.wait(self.pause_s if answer.acknowledged else self.failure_pause_s)

    def _add_loop(self) -> None:
        with self._client() as client:
            while not self._stop.is_set():
                target = next(
                    (
                        a
                        for a in self.acknowledged("enroll")
                        if a.person_id not in self._added and len(self._photos_of(a)) > 1
                    ),
                    None,
                )
                if target is None:
                    self._stop.wait(0.05)
                    continue
                assert target.person_id is not None
                self._added.add(target.person_id)
                photo = self._photos_of(target)[1]
                files = [("photos", (photo.name, photo.read_bytes(), "application/octet-stream"))]
                answer = self._send(
                    client,
                    "add",
                    target.identity,
                    photo,
                    f"/api/people/{target.person_id}/faces",
                    {},
                    files,
                )
                answer.person_id = target.person_id
                self._stop.wait(self.pause_s if answer.acknowledged else self.failure_pause_s)

    def _photos_of(self, answer: Answer) -> list[Path]:
        return next(i.photos for i in self.pool if i.name == answer.identity)

    def _send(
        self,
        client: httpx.Client,
        action: str,
        identity: str,
        photo: Path,
        path: str,
        data: dict[str, str],
        files: list[Any],
    ) -> Answer:
        sent = time.monotonic()
        try:
            response = client.post(path, data=data, files=files)
        except httpx.TransportError as exc:
            answer = Answer(action, identity, photo, None, error=f"{type(exc).__name__}: {exc}")
        else:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            answer = Answer(action, identity, photo, response.status_code, body)
        answer.sent_at, answer.answered_at = sent, time.monotonic()
        with self._lock:
            self.answers.append(answer)
        return answer


# --- checks -------------------------------------------------------------------------------------


def kept_persons(client: httpx.Client, traffic: EnrollmentTraffic) -> dict[int, int]:
    """Person id -> faces expected, from every acknowledged enrollment and photo addition."""
    expected: dict[int, int] = {}
    for answer in traffic.acknowledged("enroll"):
        assert answer.person_id is not None
        expected[answer.person_id] = expected.get(answer.person_id, 0) + len(
            answer.accepted_photos()
        )
    for answer in traffic.acknowledged("add"):
        assert answer.person_id is not None
        expected[answer.person_id] = expected.get(answer.person_id, 0) + len(
            answer.accepted_photos()
        )
    return expected


def assert_acknowledged_enrollments_kept(client: httpx.Client, traffic: EnrollmentTraffic) -> None:
    """Every acknowledged person is there with at least the faces acknowledged, and a search
    with each acknowledged photo finds its person first."""
    for person_id, faces in kept_persons(client, traffic).items():
        person = client.get(f"/api/people/{person_id}")
        assert person.status_code == 200, f"acknowledged person {person_id} is gone: {person.text}"
        # At least: an addition answered 503 may still have been committed.
        assert person.json()["face_count"] >= faces, person.json()
        stored = {
            f["image_sha256"] for f in client.get(f"/api/people/{person_id}/faces").json()["items"]
        }
        for answer in traffic.acknowledged():
            if answer.person_id == person_id:
                assert set(answer.accepted_photos()) <= stored, answer.describe()
    probes = [a for a in traffic.acknowledged() if a.accepted_photos()]
    for start in range(0, len(probes), 32):
        chunk = probes[start : start + 32]
        files = [("files", (a.photo.name, a.photo.read_bytes(), "image/jpeg")) for a in chunk]
        found = client.post("/api/faces/query/batch", files=files)
        assert found.status_code == 200, found.text
        for answer, result in zip(chunk, found.json()["results"], strict=True):
            best = [face["candidates"][0] for face in result.get("faces", []) if face["candidates"]]
            assert any(
                c["person_id"] == answer.person_id and c["similarity"] > 0.99 for c in best
            ), f"{answer.describe()}: a search with its photo finds {best}"
