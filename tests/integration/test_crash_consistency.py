"""Crash consistency: a SIGKILLed import leaves a whole watchlist, and running it again resumes it.

The store is the source of truth: a person is there with all their faces or not at all. On start
the index comes from its snapshot, which may be missing, damaged or stale (another process wrote
after it, or the store went back to an older copy); either way it must end up agreeing with the
store, row for row.

The import kill happens at a moment drawn at random (after 8 to 14 persons were reported, then up
to 0.8 s more); set ``FACEWATCH_CRASH_SEED`` to replay one. PostgreSQL runs are skipped when no
server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from facewatch.config import Settings, load_settings
from facewatch.images import read_image
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.index import FaissIndex
from facewatch.watchlist.service import Photo, Watchlist
from facewatch.watchlist.snapshot import (
    SnapshotError,
    SnapshotInfo,
    load_snapshot,
    save_snapshot,
    snapshot_path,
)
from facewatch.watchlist.store import Store
from tests_support import assert_index_rows_match_store

#: Photos per person folder of the import (the first ones by name): 52 persons, 120 photos.
PHOTOS_PER_PERSON = 3
SNAPSHOT_INTERVAL_S = 0.2
#: Bound on one import run; far above what it needs, only there so a hang fails the test.
IMPORT_TIMEOUT_S = 300
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
SEED_ENV = "FACEWATCH_CRASH_SEED"


# --- running the command line -----------------------------------------------------------------


@dataclass(frozen=True)
class ImportRun:
    """One `facewatch import`: exit status, the per-person records, the summary."""

    returncode: int
    records: list[dict[str, Any]]
    summary: dict[str, int] | None
    stderr: str

    def by_name(self) -> dict[str, dict[str, Any]]:
        return {r["person"]: r for r in self.records}


def cli_env(data_dir: Path, cache: Path, database_url: str | None = None) -> dict[str, str]:
    """The caller's environment without FACE_AI_* variables, plus this test's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACE_AI_")}
    env |= {
        "FACE_AI_DATA_DIR": str(data_dir),
        "FACE_AI_ENGINE__CACHE_DIR": str(cache),
        "FACE_AI_PROVIDERS": "cpu",
        "FACE_AI_LOG_LEVEL": "WARNING",
        "FACE_AI_WATCHLIST__SNAPSHOT_INTERVAL_S": str(SNAPSHOT_INTERVAL_S),
    }
    if database_url:
        env["FACE_AI_DATABASE_URL"] = database_url
    return env


def facewatch_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "facewatch", *map(str, args)]


def parse(lines: list[str], returncode: int, stderr: str) -> ImportRun:
    decoded = [json.loads(line) for line in lines if line.strip()]
    summaries = [r["summary"] for r in decoded if "summary" in r]
    records = [r for r in decoded if "summary" not in r]
    return ImportRun(returncode, records, summaries[0] if summaries else None, stderr)


def run_import(folder: Path, env: dict[str, str], log: Path) -> ImportRun:
    with log.open("w") as stderr:
        done = subprocess.run(
            facewatch_command("import", folder, "--largest"),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            timeout=IMPORT_TIMEOUT_S,
            check=False,
        )
    return parse(done.stdout.splitlines(), done.returncode, log.read_text())


def import_until_killed(
    folder: Path, env: dict[str, str], log: Path, *, after: int, delay_s: float
) -> ImportRun:
    """Start an import, SIGKILL it ``delay_s`` after its ``after``-th person line."""
    with log.open("w") as stderr:
        process = subprocess.Popen(
            facewatch_command("import", folder, "--largest"),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        watchdog = threading.Timer(IMPORT_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            lines = []
            while len(lines) < after:
                line = process.stdout.readline()
                if not line:
                    break
                lines.append(line)
            try:
                process.wait(timeout=delay_s)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
            lines += process.stdout.readlines()  # persons reported before the kill landed
            lines = [line for line in lines if line.endswith("\n")]  # not one cut by the kill
            process.wait()
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
    return parse(lines, process.returncode, log.read_text())


# --- the store and the index ------------------------------------------------------------------


def face_counts(url: str) -> dict[str, int]:
    """Persons by name and their face counts, read from the store alone."""
    store = Store(url)
    try:
        persons = store.search_persons(limit=1000).items
    finally:
        store.close()
    names = [p.name for p in persons]
    assert len(names) == len(set(names)), f"a person was enrolled twice: {sorted(names)}"
    return {p.name: p.face_count for p in persons}


def snapshot_version(path: Path) -> int:
    with np.load(path, allow_pickle=False) as archive:
        return int(json.loads(str(archive["meta"]))["version"])


def assert_index_agrees_with_store(watchlist: Watchlist) -> None:
    """Same rows (face id, person id, vector) in the index as embeddings in the store."""
    assert_index_rows_match_store(watchlist)
    store, index = watchlist.store, watchlist.index
    assert sorted(index.face_ids().tolist()) == sorted(
        store.embedded_face_ids(watchlist.pack_id).tolist()
    )
    assert len(index) == store.counts()["faces"]
    assert store.faces_without_embedding(watchlist.pack_id) == []
    assert watchlist.applied_version == store.version()


def identified(watchlist: Watchlist, photo: Path) -> list[str | None]:
    (faces,) = watchlist.identify([read_image(photo)], [str(photo)])
    return [face.person for face in faces]


def watchlist_settings(data_dir: Path, cache: Path, database_url: str | None = None) -> Settings:
    return load_settings(
        data_dir=data_dir,
        engine={"cache_dir": cache, "providers": ["cpu"]},
        watchlist={"snapshot_interval_s": SNAPSHOT_INTERVAL_S}
        | ({"database_url": database_url} if database_url else {}),
    )


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir.resolve() / 'facewatch.db'}"


# --- fixtures ---------------------------------------------------------------------------------


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
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite in the data folder (the default), else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="module")
def import_dir(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per identity holding links to its first photos."""
    root = tmp_path_factory.mktemp("import")
    for identity in sorted((faces_dir / "identities").iterdir()):
        folder = root / identity.name
        folder.mkdir()
        for photo in sorted(identity.iterdir())[:PHOTOS_PER_PERSON]:
            (folder / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def clean_import(
    import_dir: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ImportRun, dict[str, int]]:
    """The reference: the same import run once, uninterrupted, into its own data folder."""
    data_dir = tmp_path_factory.mktemp("clean")
    run = run_import(import_dir, cli_env(data_dir, model_cache), data_dir / "import.log")
    assert run.summary is not None, run.stderr
    assert run.summary["persons"] == len(list(import_dir.iterdir()))
    return run, face_counts(sqlite_url(data_dir))


# --- a killed import --------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_import_leaves_a_whole_watchlist_and_resumes(
    import_dir: Path,
    clean_import: tuple[ImportRun, dict[str, int]],
    database_url: str | None,
    engine: FaceEngine,
    model_cache: Path,
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    after, delay_s = rng.randint(8, 14), rng.uniform(0.0, 0.8)
    replay = f"{SEED_ENV}={seed} (killed {delay_s:.2f} s after {after} persons)"
    folders = sorted(p.name for p in import_dir.iterdir())
    data_dir = (tmp_path / "data").resolve()
    env = cli_env(data_dir, model_cache, database_url)
    url = database_url or sqlite_url(data_dir)

    killed = import_until_killed(
        import_dir, env, tmp_path / "killed.log", after=after, delay_s=delay_s
    )
    assert killed.returncode == -signal.SIGKILL, f"{replay}: {killed.stderr}"
    assert killed.summary is None, f"{replay}: the import ended before the kill"
    reported = [r["person"] for r in killed.records]
    assert reported == folders[: len(reported)] and len(reported) >= after, replay
    reported_ids = {
        r["person"]: r["person_id"] for r in killed.records if r["person_id"] is not None
    }
    snapshot = snapshot_path(data_dir, engine.pack.id)
    assert snapshot.is_file(), f"{replay}: no index snapshot was written during the import"

    # Nothing half-done is visible: the persons reported, at most the one being enrolled when
    # the kill came, each with all their faces; the index agrees with the store.
    before = face_counts(url)
    assert set(reported_ids) <= set(before) <= set(folders[: len(reported) + 1]), replay
    assert all(count >= 1 for count in before.values()), f"{replay}: {before}"
    reference = clean_import[1]
    assert before == {name: reference[name] for name in before}, replay
    version_on_disk = snapshot_version(snapshot)
    with Watchlist.open(watchlist_settings(data_dir, model_cache, database_url), engine) as wl:
        status = wl.status()
        assert 0 < version_on_disk <= wl.store.version(), replay
        expected_source = "snapshot" if version_on_disk == wl.store.version() else "snapshot+store"
        assert status["index"]["loaded_from"] == expected_source, replay
        assert_index_agrees_with_store(wl)
        for person in wl.search_persons(limit=1000).items:
            for face in wl.store.faces_of(person.id):
                assert (data_dir / face.image_path).is_file(), f"{replay}: photo not kept"
        for name, person_id in reported_ids.items():
            assert wl.resolve(name).id == person_id, replay
        first = wl.resolve(next(iter(reported_ids)))
        kept = {face.image_sha256 for face in wl.store.faces_of(first.id)}
        photo = next(
            p
            for p in sorted((import_dir / first.name).iterdir())
            if hashlib.sha256(p.read_bytes()).hexdigest() in kept
        )
        assert first.name in identified(wl, photo), replay

    # Running it again finishes the job: persons already there are resumed, none twice.
    resumed = run_import(import_dir, env, tmp_path / "resumed.log")
    clean = clean_import[0]
    assert resumed.summary is not None, f"{replay}: {resumed.stderr}"
    assert clean.summary is not None
    assert resumed.returncode == clean.returncode, f"{replay}: {resumed.stderr}"
    records = resumed.by_name()
    assert sorted(records) == folders
    for name in folders:
        record = records[name]
        if name in before:
            assert record["resumed"] is True, f"{replay}: {record}"
            assert record["skipped"] == before[name], f"{replay}: {record}"
            assert record["accepted"] == [], f"{replay}: {record}"
        else:
            assert record["resumed"] is False, f"{replay}: {record}"
    faces_before = sum(before.values())
    # Warnings are counted on the photos screened this time (skipped ones are not screened).
    warned = resumed.summary.pop("photos_with_warnings")
    assert 0 <= warned <= clean.summary["photos_with_warnings"], replay
    assert resumed.summary == {
        "persons": len(folders),
        "enrolled": clean.summary["enrolled"] - len(before),
        "resumed": len(before),
        "failed": clean.summary["failed"],
        "photos_accepted": clean.summary["photos_accepted"] - faces_before,
        "photos_rejected": clean.summary["photos_rejected"],
        "photos_skipped": faces_before,
    }, replay
    assert face_counts(url) == reference, replay
    with Watchlist.open(watchlist_settings(data_dir, model_cache, database_url), engine) as wl:
        assert wl.status()["index"]["loaded_from"] == "snapshot"  # the clean exit saved it
        assert_index_agrees_with_store(wl)


# --- damaged and stale snapshots --------------------------------------------------------------


@dataclass(frozen=True)
class Enrolled:
    """A data folder (SQLite store + index snapshot) and one enrolled photo per person."""

    data_dir: Path
    probes: dict[str, Path]
    spare: list[tuple[str, list[Path]]]  # identities not enrolled, with their photos


@pytest.fixture(scope="module")
def enrolled(
    faces_dir: Path, engine: FaceEngine, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Enrolled:
    identities = [
        p for p in sorted((faces_dir / "identities").iterdir()) if len(list(p.iterdir())) > 1
    ]
    data_dir = tmp_path_factory.mktemp("enrolled")
    probes = {}
    with Watchlist.open(watchlist_settings(data_dir, model_cache), engine) as wl:
        for identity in identities[:5]:
            paths = sorted(identity.iterdir())[:2]
            result = wl.enroll(
                {"name": identity.name},
                [Photo(str(p), p.read_bytes()) for p in paths],
                largest=True,
            )
            kept = {face.image_sha256 for face in result.accepted}
            probes[identity.name] = next(
                p for p in paths if hashlib.sha256(p.read_bytes()).hexdigest() in kept
            )
    assert snapshot_path(data_dir, engine.pack.id).is_file()
    spare = [(p.name, sorted(p.iterdir())[:2]) for p in identities[5:7]]
    return Enrolled(data_dir, probes, spare)


def copy_of(enrolled: Enrolled, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(enrolled.data_dir, target, symlinks=True)
    return target.resolve()


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def zip_field(offset: int, mask: int) -> Callable[[bytes], bytes]:
    """Flip ``mask`` in a field of the last central-directory entry (offsets per the zip spec)."""

    def damage(data: bytes) -> bytes:
        at = data.rindex(b"PK\x01\x02") + offset
        return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]

    return damage


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "truncated": truncate,
    "byte_flipped": flip_middle,
    "not_a_zip": lambda data: random.Random(0).randbytes(len(data)),
    "zip_compression_method": zip_field(10, 0x01),
    "zip_encrypted_flag": zip_field(8, 0x01),
    "zip_version_needed": zip_field(6, 0xFF),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_snapshot_is_rebuilt_from_the_store(
    damage: str, enrolled: Enrolled, engine: FaceEngine, model_cache: Path, tmp_path: Path
) -> None:
    data_dir = copy_of(enrolled, tmp_path)
    snapshot = snapshot_path(data_dir, engine.pack.id)
    snapshot.write_bytes(DAMAGES[damage](snapshot.read_bytes()))

    with Watchlist.open(watchlist_settings(data_dir, model_cache), engine) as wl:
        assert wl.status()["index"]["loaded_from"] == "store"
        assert len(wl.index) == wl.store.counts()["faces"] > 0
        assert_index_agrees_with_store(wl)
        for name, photo in enrolled.probes.items():
            assert name in identified(wl, photo)
        version = wl.store.version()
    # The rebuilt index was saved over the damaged file.
    assert snapshot_version(snapshot) == version


@pytest.mark.slow
def test_snapshot_stale_after_another_process_enrolled(
    enrolled: Enrolled, engine: FaceEngine, model_cache: Path, tmp_path: Path
) -> None:
    data_dir = copy_of(enrolled, tmp_path)
    snapshot = snapshot_path(data_dir, engine.pack.id)
    written = snapshot.read_bytes()
    # The other process shares the store but keeps its own data folder (and snapshot).
    other = cli_env(tmp_path / "other", model_cache, sqlite_url(data_dir))
    (first, first_photos), (second, second_photos) = enrolled.spare

    def enroll_elsewhere(name: str, photos: list[Path]) -> None:
        done = subprocess.run(
            facewatch_command("enroll", "--name", name, "--largest", *photos),
            capture_output=True,
            text=True,
            env=other,
            timeout=IMPORT_TIMEOUT_S,
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr
        assert json.loads(done.stdout)["person"]["name"] == name

    enroll_elsewhere(first, first_photos)
    assert snapshot.read_bytes() == written  # still the old one: it is stale now

    with Watchlist.open(watchlist_settings(data_dir, model_cache), engine) as wl:
        assert wl.status()["index"]["loaded_from"] == "snapshot+store"
        assert_index_agrees_with_store(wl)
        assert first in identified(wl, first_photos[0])
        # A running watchlist catches up with another process's write on refresh().
        enroll_elsewhere(second, second_photos)
        assert second not in identified(wl, second_photos[0])
        assert wl.refresh() == len(wl.store.faces_of(wl.resolve(second).id))
        assert_index_agrees_with_store(wl)
        assert second in identified(wl, second_photos[0])
        assert wl.refresh() == 0
        for name, photo in enrolled.probes.items():
            assert name in identified(wl, photo)


def test_snapshot_ahead_of_a_store_restored_from_a_backup(
    enrolled: Enrolled, engine: FaceEngine, model_cache: Path, tmp_path: Path
) -> None:
    data_dir = copy_of(enrolled, tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir()
    for file in data_dir.glob("facewatch.db*"):
        shutil.copy2(file, backup / file.name)
    name, photos = enrolled.spare[0]
    with Watchlist.open(watchlist_settings(data_dir, model_cache), engine) as wl:
        wl.enroll({"name": name}, [Photo(str(p), p.read_bytes()) for p in photos], largest=True)
    for file in data_dir.glob("facewatch.db*"):
        file.unlink()
    for file in backup.iterdir():
        shutil.copy2(file, data_dir / file.name)

    with Watchlist.open(watchlist_settings(data_dir, model_cache), engine) as wl:
        assert wl.status()["index"]["loaded_from"] == "snapshot+store"
        assert_index_agrees_with_store(wl)
        assert wl.store.persons_named(name) == []
        assert name not in identified(wl, photos[0])
        for enrolled_name, photo in enrolled.probes.items():
            assert enrolled_name in identified(wl, photo)


def test_every_single_byte_corruption_of_a_snapshot_is_detected_or_harmless(
    tmp_path: Path,
) -> None:
    """Flip each byte of a small snapshot: loading either refuses it or restores it exactly."""
    dim = 8
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = FaissIndex(dim, use_gpu=False)
    index.replace_all(np.arange(1, 4), np.array([1, 1, 2]), vectors[:3])
    index.add(np.arange(4, 7), np.array([2, 3, 3]), vectors[3:])  # a delta beside the base
    index.remove([2])  # and a removed base row
    info = SnapshotInfo(7, "pack", dim, len(index))
    path = tmp_path / "index.npz"
    save_snapshot(path, index.dump(), info)
    good = path.read_bytes()
    expected = index.dump()

    undetected, unexpected = [], []
    fd = os.open(path, os.O_WRONLY)  # damage in place, one byte at a time
    try:
        for at, mask in itertools.product(range(len(good)), (0x01, 0xFF)):
            os.pwrite(fd, bytes([good[at] ^ mask]), at)
            target = FaissIndex(dim, use_gpu=False)
            try:
                loaded = load_snapshot(path, target, pack_id="pack")
            except SnapshotError:
                continue
            except Exception as exc:  # anything else stops Watchlist.open instead of a rebuild
                unexpected.append(f"byte {at} ^ {mask:#x}: {type(exc).__name__}: {exc}")
                continue
            finally:
                os.pwrite(fd, good[at : at + 1], at)
            restored = target.dump()
            if loaded != info or any(
                not np.array_equal(restored[key], expected[key]) for key in expected
            ):
                undetected.append(f"byte {at} ^ {mask:#x}")
    finally:
        os.close(fd)
    assert path.read_bytes() == good
    assert unexpected == []
    assert undetected == []
