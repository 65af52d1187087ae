"""Concurrency: enrollments and searches running at once always give consistent answers.

A search sees each write whole or not at all: a person with all their faces or not yet there,
never a wrong person, never a row with someone else's person id or a stale similarity. Two
watchlists share one store (as two processes would); each catches up with the other's writes.
PostgreSQL runs are skipped when no server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from facewatch.config import Settings, load_settings
from facewatch.images import decode_image
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.enrollment import Gates, choose_face
from facewatch.watchlist.index import NO_FACE, FaissIndex, Hits, IndexPolicy, PersonMatch
from facewatch.watchlist.service import Enrollment, Identification, Photo, Watchlist

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
#: Persons enrolled at once, one task each.
CAST_SIZE = 12
PHOTOS_PER_PERSON = 4
#: How far below the match threshold a probe must stay for every other person of the cast.
MARGIN = 0.05
#: More rows than the index ever holds in these tests: a search with it returns every row.
EVERY_ROW = 256
#: Tolerance on a similarity recomputed from the stored vectors.
SIMILARITY_TOLERANCE = 1e-4

T = TypeVar("T")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards; skips without a server."""
    admin = create_engine(
        f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"facewatch_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        reason = str(exc.orig or exc).strip().splitlines()[0]
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {reason}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


# --- the cast: persons whose probe photos only ever match themselves ---------------------------


@dataclass(frozen=True)
class Member:
    """A person to enroll: their photos, and one of them (always accepted) as a probe."""

    name: str
    photos: list[Photo]
    templates: NDArray[np.float32]  # (M, D) embeddings of the photos that pass the gates
    probe_image: NDArray[np.uint8]
    probe: NDArray[np.float32]  # (D,) embedding of the first usable photo


@pytest.fixture(scope="module")
def cast(faces_dir: Path, engine: FaceEngine) -> list[Member]:
    """Persons with at least two usable photos, none of whose probes reaches another's templates.

    So that "never a wrong person" is a sound claim: whatever subset of the cast is enrolled
    when a search runs, a probe is either its own person or below the threshold for all others.
    """
    options = load_settings().watchlist
    gates = Gates(
        options.enroll_min_face_size,
        options.enroll_min_score,
        options.enroll_min_sharpness,
        options.enroll_min_frontal,
        options.duplicate_similarity,
    )
    limit = engine.match_threshold - MARGIN
    chosen: list[Member] = []
    for identity in sorted((faces_dir / "identities").iterdir()):
        paths = sorted(identity.iterdir())[:PHOTOS_PER_PERSON]
        if len(paths) < 3:
            continue
        photos = [Photo(str(p), p.read_bytes()) for p in paths]
        images = [decode_image(photo.data) for photo in photos]
        usable = []
        for image, faces in zip(images, engine.embed(images), strict=True):
            verdict = choose_face(faces, gates, largest=True)
            if verdict.index is not None and faces.embedding is not None:
                usable.append((image, faces.embedding[verdict.index]))
        if len(usable) < 2:
            continue
        templates = np.stack([embedding for _, embedding in usable])
        member = Member(identity.name, photos, templates, usable[0][0], usable[0][1])
        if all(
            float(np.max(other.templates @ member.probe)) < limit
            and float(np.max(member.templates @ other.probe)) < limit
            for other in chosen
        ):
            chosen.append(member)
        if len(chosen) == CAST_SIZE:
            return chosen
    pytest.fail(f"only {len(chosen)} separable persons with usable photos in {faces_dir}")


def watchlist_settings(data_dir: Path, cache: Path, database_url: str) -> Settings:
    return load_settings(
        data_dir=data_dir,
        engine={"cache_dir": cache, "providers": ["cpu"]},
        # Snapshots are saved by a timer thread while the writes go on.
        watchlist={"database_url": database_url, "snapshot_interval_s": 0.01},
    )


def assert_index_agrees_with_store(watchlist: Watchlist) -> None:
    store, index = watchlist.store, watchlist.index
    expected = store.embeddings(watchlist.pack_id, index.dim)
    assert isinstance(index, FaissIndex)
    face_ids, person_ids, vectors = index.vectors()
    order = np.argsort(face_ids)
    assert face_ids[order].tolist() == expected.face_ids.tolist()
    assert person_ids[order].tolist() == expected.person_ids.tolist()
    np.testing.assert_allclose(vectors[order], expected.vectors, atol=1e-6)
    assert sorted(index.face_ids().tolist()) == sorted(
        store.embedded_face_ids(watchlist.pack_id).tolist()
    )
    assert len(index) == store.counts()["faces"]
    assert watchlist.applied_version == store.version()


# --- concurrent enrollments and searches ------------------------------------------------------

#: Bound on the concurrent phase (it needs a small fraction): a deadlock fails, it does not hang.
DEADLINE_S = 240


async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``asyncio.to_thread`` on a daemon thread of its own.

    The executor behind ``to_thread`` joins its threads when the interpreter exits, so one
    deadlocked call would hang the whole test run; a daemon thread lets the test fail instead.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[Any], None], value: Any) -> None:
        if not future.done():  # cancelled by the deadline meanwhile
            outcome(value)

    def run() -> None:
        try:
            try:
                result = function(*args, **kwargs)
            except BaseException as exc:  # handed to the awaiting task, raised there
                loop.call_soon_threadsafe(settle, future.set_exception, exc)
            else:
                loop.call_soon_threadsafe(settle, future.set_result, result)
        except RuntimeError:  # the loop is closed: the test is over, nobody waits for this
            pass

    threading.Thread(target=run, name=f"test-{function.__name__}", daemon=True).start()
    return await future


def thread_stacks() -> str:
    """Every thread's Python stack, for the message of a test that got stuck."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return "\n".join(
        f"--- {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
    )


@dataclass
class Seen:
    """What the searching tasks saw, checked against the store once everything is done."""

    matches: list[list[list[PersonMatch]]] = field(default_factory=list)
    views: list[Hits] = field(default_factory=list)
    identified: list[list[list[Identification]]] = field(default_factory=list)
    refreshed: list[int] = field(default_factory=list)


@pytest.mark.slow
async def test_concurrent_enrollments_and_searches_agree(
    cast: list[Member], engine: FaceEngine, model_cache: Path, database_url: str, tmp_path: Path
) -> None:
    first = Watchlist.open(watchlist_settings(tmp_path / "a", model_cache, database_url), engine)
    # The second shares the store but not the index, as another process would.
    second = Watchlist.open(watchlist_settings(tmp_path / "b", model_cache, database_url), engine)
    watchlists = (first, second)
    probes = np.stack([member.probe for member in cast])
    names = [member.name for member in cast]
    seen = Seen()
    writing = True
    searchers_ready = asyncio.Barrier(6)

    async def enroll(i: int, member: Member) -> Enrollment:
        return await in_thread(
            watchlists[i % 2].enroll, {"name": member.name}, member.photos, largest=True
        )

    async def keep_matching(watchlist: Watchlist) -> None:
        await searchers_ready.wait()
        while writing:
            seen.matches.append(await in_thread(watchlist.match, probes))
            seen.views.append(await in_thread(watchlist.index.search, probes, EVERY_ROW))

    async def keep_refreshing(watchlist: Watchlist) -> None:
        await searchers_ready.wait()
        while writing:
            seen.refreshed.append(await in_thread(watchlist.refresh))

    async def keep_identifying(watchlist: Watchlist) -> None:
        images = [member.probe_image for member in cast]
        await searchers_ready.wait()
        while writing:
            seen.identified.append(await in_thread(watchlist.identify, images, names))

    stuck = False
    try:
        try:
            async with asyncio.timeout(DEADLINE_S), asyncio.TaskGroup() as searchers:
                for watchlist in watchlists:
                    searchers.create_task(keep_matching(watchlist))
                    searchers.create_task(keep_refreshing(watchlist))
                searchers.create_task(keep_identifying(first))
                await searchers_ready.wait()
                async with asyncio.TaskGroup() as writers:
                    tasks = [writers.create_task(enroll(i, m)) for i, m in enumerate(cast)]
                writing = False
        except TimeoutError:
            stuck = True
            pytest.fail(f"not done after {DEADLINE_S} s; deadlocked?\n{thread_stacks()}")
        enrollments = {m.name: task.result() for m, task in zip(cast, tasks, strict=True)}

        for watchlist in watchlists:
            watchlist.refresh()
        store = first.store
        persons = {p.name: p for p in store.search_persons(limit=1000).items}
        assert sorted(persons) == sorted(names)  # everybody, once
        person_ids = {name: persons[name].id for name in names}
        for name, enrollment in enrollments.items():
            assert enrollment.person.id == person_ids[name]
            assert [f.id for f in enrollment.accepted] == [
                f.id for f in store.faces_of(person_ids[name])
            ]
        rows = store.embeddings(first.pack_id, engine.embedding_dim)
        owner = dict(zip(rows.face_ids.tolist(), rows.person_ids.tolist(), strict=True))
        vector = dict(zip(rows.face_ids.tolist(), rows.vectors, strict=True))
        faces_of = {pid: {f for f, p in owner.items() if p == pid} for pid in person_ids.values()}
        threshold = engine.match_threshold

        for matches in seen.matches:
            for member, candidates in zip(cast, matches, strict=True):
                for match in candidates:
                    assert owner[match.face_id] == match.person_id
                    assert abs(match.similarity - float(vector[match.face_id] @ member.probe)) < (
                        SIMILARITY_TOLERANCE
                    )
                if candidates and candidates[0].similarity >= threshold:
                    assert candidates[0].person_id == person_ids[member.name]
        for view in seen.views:
            assert_whole_view(view, probes, owner, vector, faces_of)
        for batch in seen.identified:
            for member, faces in zip(cast, batch, strict=True):
                assert {face.person for face in faces} <= {None, member.name}
        assert all(changed >= 0 for changed in seen.refreshed)

        for watchlist in watchlists:
            assert_index_agrees_with_store(watchlist)
            assert watchlist.refresh() == 0 and watchlist.sync() == 0
            found = watchlist.identify([member.probe_image for member in cast], names)
            for member, faces in zip(cast, found, strict=True):
                assert member.name in {face.person for face in faces}
    finally:
        if not stuck:  # close() would wait on the stuck threads' locks
            for watchlist in watchlists:
                watchlist.close()


def assert_whole_view(
    view: Hits,
    probes: NDArray[np.float32],
    owner: dict[int, int],
    vector: dict[int, NDArray[np.float32]],
    faces_of: dict[int, set[int]],
) -> None:
    """One search asked for every row: each person in it with all their faces, right values."""
    rows_seen = None
    for q in range(len(view)):
        valid = view.face_ids[q] != NO_FACE
        face_ids = view.face_ids[q][valid].tolist()
        assert len(face_ids) == len(set(face_ids))
        if rows_seen is None:
            rows_seen = set(face_ids)
        assert set(face_ids) == rows_seen  # one search, one state, for every query
        for face_id, person_id, similarity in zip(
            face_ids, view.person_ids[q][valid].tolist(), view.similarity[q][valid], strict=True
        ):
            assert owner[face_id] == person_id
            assert abs(float(similarity) - float(vector[face_id] @ probes[q])) < (
                SIMILARITY_TOLERANCE
            )
    persons: dict[int, set[int]] = {}
    for face_id in rows_seen or ():
        persons.setdefault(owner[face_id], set()).add(face_id)
    for person_id, faces in persons.items():
        assert faces == faces_of[person_id], f"person {person_id} seen half enrolled"


# --- the FAISS index alone: one writer, many readers --------------------------------------------

DIM = 32
ROWS_PER_BATCH = 5
BATCHES = 300
READERS = 4
QUERIES_PER_SEARCH = 8


def unit(rows: NDArray[Any]) -> NDArray[np.float32]:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


#: One query per batch; the batch's rows are that query plus a little noise, so that a search
#: for it ranks exactly those rows first (checked below) whatever else the index holds.
BATCH_QUERIES = unit(np.random.default_rng(1).normal(size=(BATCHES, DIM)))
ROW_VECTORS = unit(
    np.repeat(BATCH_QUERIES, ROWS_PER_BATCH, axis=0)
    + 0.02 * np.random.default_rng(2).normal(size=(BATCHES * ROWS_PER_BATCH, DIM))
)


def batch_ids(batch: int) -> NDArray[np.int64]:
    return np.arange(batch * ROWS_PER_BATCH, (batch + 1) * ROWS_PER_BATCH, dtype=np.int64)


@dataclass
class History:
    """The writer's operations on a logical clock: (start, end) of each batch's add / removal.

    The writer ticks the clock before and after every call; a reader reads it before and after
    each search. An operation that ended before a search began must show in it; one that began
    after the search ended must not.
    """

    clock: int = 0
    current: int = 0  # the batch being written: readers look there most
    added: dict[int, tuple[int, int]] = field(default_factory=dict)
    removed: dict[int, tuple[int, int]] = field(default_factory=dict)

    def tick(self) -> int:
        self.clock += 1
        return self.clock


@dataclass(frozen=True)
class Observation:
    batches: NDArray[np.int64]
    before: int
    after: int
    hits: Hits


def write(index: FaissIndex, history: History) -> None:
    """Add every batch in one call each, replace the one before, now and then drop an old one."""
    for batch in range(BATCHES):
        history.current = batch
        ids = batch_ids(batch)
        start = history.tick()
        index.add(ids, np.full(len(ids), batch), ROW_VECTORS[ids])
        history.added[batch] = (start, history.tick())
        if batch > 0:  # the previous rows again: a replacement, never a gap or a double
            again = batch_ids(batch - 1)
            index.add(again, np.full(len(again), batch - 1), ROW_VECTORS[again])
        if batch % 5 == 4:
            start = history.tick()
            assert index.remove(batch_ids(batch - 4).tolist()) == ROWS_PER_BATCH
            history.removed[batch - 4] = (start, history.tick())


def read(
    index: FaissIndex, history: History, writing: threading.Event, seed: int
) -> list[Observation]:
    rng = np.random.default_rng(seed)
    seen = []
    while True:
        last = not writing.is_set()
        # Where the writer is (the batch it adds, the one it replaces, the one it removes) and
        # anywhere else.
        hot = np.clip(history.current + np.array([0, 1, -1, -4]), 0, BATCHES - 1)
        batches = np.concatenate([hot, rng.integers(0, BATCHES, QUERIES_PER_SEARCH - len(hot))])
        before = history.clock
        hits = index.search(BATCH_QUERIES[batches], ROWS_PER_BATCH)
        seen.append(Observation(batches, before, history.clock, hits))
        face_ids = index.face_ids()
        counts = np.unique(face_ids // ROWS_PER_BATCH, return_counts=True)[1]
        assert len(face_ids) == len(np.unique(face_ids)), "a face id listed twice"
        assert np.all(counts == ROWS_PER_BATCH), "face_ids() holds a batch in part"
        assert len(index) % ROWS_PER_BATCH == 0, "len() counts a batch in part"
        if last:
            return seen


def check(observation: Observation, history: History) -> None:
    hits = observation.hits
    for q, batch in enumerate(observation.batches.tolist()):
        valid = hits.face_ids[q] != NO_FACE
        face_ids = hits.face_ids[q][valid]
        assert np.all(face_ids < BATCHES * ROWS_PER_BATCH), "a face id never added"
        assert np.array_equal(hits.person_ids[q][valid], face_ids // ROWS_PER_BATCH)
        expected = ROW_VECTORS[face_ids] @ BATCH_QUERIES[batch]
        np.testing.assert_allclose(hits.similarity[q][valid], expected, atol=SIMILARITY_TOLERANCE)
        mine = int(np.count_nonzero(hits.person_ids[q][valid] == batch))
        assert mine in (0, ROWS_PER_BATCH), f"batch {batch} seen in part ({mine} rows)"
        added_start, added_end = history.added[batch]
        removal = history.removed.get(batch)
        if added_end <= observation.before and (removal is None or removal[0] > observation.after):
            assert mine == ROWS_PER_BATCH, f"batch {batch} missing from a search after its add"
        if added_start > observation.after or (
            removal is not None and removal[1] <= observation.before
        ):
            assert mine == 0, f"batch {batch} seen before its add or after its removal"


POLICIES = {
    # Small bounds: the base is rebuilt (beside the published state) every few batches.
    "exact": IndexPolicy(delta_limit=16, delta_fraction=0.05, removed_limit=8),
    # IVF probing every cell: approximate machinery, exact answers.
    "ivf": IndexPolicy(
        approximate_above=64, approximate="ivf", nprobe=65536, delta_limit=16, removed_limit=8
    ),
    # Compressed scan re-ranking every row exactly: approximate machinery, exact answers.
    "pq": IndexPolicy(
        approximate_above=64, approximate="pq", refine_factor=10**6, delta_limit=16, removed_limit=8
    ),
}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_faiss_readers_see_each_write_whole_while_one_thread_writes(policy: str) -> None:
    # The premise: a batch's own rows outrank every other row for its query.
    similarity = BATCH_QUERIES @ ROW_VECTORS.T
    own = np.repeat(np.eye(BATCHES, dtype=bool), ROWS_PER_BATCH, axis=1)
    assert similarity[own].min() > similarity[~own].max() + 0.1

    index = FaissIndex(DIM, POLICIES[policy], use_gpu=False)
    history = History()
    writing = threading.Event()
    writing.set()
    errors: list[str] = []
    results: list[list[Observation]] = []

    def guarded(target: Any, *args: Any) -> None:
        try:
            outcome = target(*args)
            if outcome is not None:
                results.append(outcome)
        except BaseException:
            errors.append(traceback.format_exc())
        finally:
            if target is write:
                writing.clear()

    readers = [
        threading.Thread(target=guarded, args=(read, index, history, writing, seed))
        for seed in range(READERS)
    ]
    writer = threading.Thread(target=guarded, args=(write, index, history))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads take turns often: more interleavings per run
    try:
        for thread in (*readers, writer):
            thread.start()
        for thread in (writer, *readers):
            thread.join()
    finally:
        sys.setswitchinterval(switch)

    assert errors == []
    assert len(results) == READERS
    observations = [o for seen in results for o in seen]
    for observation in observations:
        check(observation, history)
    live = [b for b in range(BATCHES) if b not in history.removed]
    assert (
        sorted(index.face_ids().tolist()) == np.concatenate([batch_ids(b) for b in live]).tolist()
    )
    if policy != "exact":
        assert index.kind == policy
