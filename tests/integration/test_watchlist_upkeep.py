"""The watchlist's own files and its recovery from failed writes, on real faces (SQLite).

- Enrollment photos are shared by content between persons; deleting a person, removing a face
  or resetting deletes the photo files that no face uses any more, and only those, and never a
  file outside the photo folder whatever path the store holds.
- An index snapshot that cannot be written is reported (error, time) and retried until it is;
  the previous snapshot stays meanwhile.
- A write whose commit reached the store although the caller was told it failed (the
  connection dropped after the commit) is found and put in the index without a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from facewatch.config import Settings, load_settings
from facewatch.errors import StoreError
from facewatch.images import read_image
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.models import Face
from facewatch.watchlist.service import Photo, Watchlist
from facewatch.watchlist.snapshot import snapshot_path
from tests_support import wait_for

KIT = ["identities/kit_harington/1.jpeg", "identities/kit_harington/2.jpeg"]
ROSE = "identities/rose_leslie/1.jpg"


def settings_for(data_dir: Path, **watchlist: Any) -> Settings:
    return load_settings(data_dir=data_dir, watchlist={"snapshot_interval_s": 0, **watchlist})


@pytest.fixture
def watchlist(tmp_path: Path, engine: FaceEngine, isolated_settings: None) -> Iterator[Watchlist]:
    with Watchlist.open(settings_for(tmp_path / "data"), engine) as opened:
        yield opened


def photos(faces_dir: Path, *relative: str) -> list[Photo]:
    return [Photo(r, (faces_dir / r).read_bytes()) for r in relative]


def photo_files(watchlist: Watchlist) -> set[str]:
    root = watchlist.data_dir
    return {p.relative_to(root).as_posix() for p in (root / "faces").rglob("*") if p.is_file()}


def test_photos_go_with_the_last_face_that_uses_them(watchlist: Watchlist, faces_dir: Path) -> None:
    kit = watchlist.enroll({"name": "kit"}, photos(faces_dir, *KIT), largest=True)
    # The same first photo for someone else: one file, two faces.
    double = watchlist.enroll({"name": "double"}, photos(faces_dir, KIT[0]), largest=True)
    rose = watchlist.enroll({"name": "rose"}, photos(faces_dir, ROSE), largest=True)
    shared, own = (face.image_path for face in kit.accepted)
    assert double.accepted[0].image_path == shared
    rose_path = rose.accepted[0].image_path
    assert photo_files(watchlist) == {shared, own, rose_path}

    watchlist.forget(kit.person.id)
    assert photo_files(watchlist) == {shared, rose_path}  # double still uses the shared one
    watchlist.remove_face(double.accepted[0].id)
    assert photo_files(watchlist) == {rose_path}
    watchlist.reset(confirm=True)
    assert photo_files(watchlist) == set()


def test_a_stored_path_outside_the_photo_folder_is_never_deleted(
    watchlist: Watchlist, faces_dir: Path, tmp_path: Path
) -> None:
    bait = tmp_path / "data" / "keep-me.txt"
    bait.write_text("not a photo")
    person = watchlist.enroll({"name": "rose"}, photos(faces_dir, ROSE), largest=True)
    real = watchlist.data_dir / person.accepted[0].image_path
    # A store edited by hand (or a hostile one) pointing a face at another file.
    with watchlist.store.sql.begin() as connection:
        connection.execute(update(Face).values(image_path="faces/../keep-me.txt"))
    watchlist.forget(person.person.id)
    assert bait.read_text() == "not a photo"
    assert real.is_file()  # no face names it any more: left, as an unused file is harmless


def test_a_snapshot_that_cannot_be_written_is_reported_and_retried(
    tmp_path: Path, engine: FaceEngine, faces_dir: Path, isolated_settings: None
) -> None:
    data_dir = tmp_path / "data"
    with Watchlist.open(settings_for(data_dir), engine) as watchlist:
        watchlist.enroll({"name": "rose"}, photos(faces_dir, ROSE), largest=True)
        wait_for(lambda: not watchlist.storage_status()["index_snapshot"]["behind"], "saved")
        path = snapshot_path(watchlist.data_dir, watchlist.pack_id)
        saved = path.read_bytes()
        # A file where the snapshot's folder should be: every write fails until it goes.
        folder = path.parent
        aside = folder.with_name("index-aside")
        folder.rename(aside)
        folder.write_bytes(b"in the way")
        watchlist.enroll({"name": "kit"}, photos(faces_dir, KIT[0]), largest=True)
        failing = wait_for(
            lambda: (s := watchlist.storage_status()["index_snapshot"])["ok"] is False and s,
            "the failure is reported",
        )
        assert failing["behind"] is True and failing["last_error"]
        assert failing["failing_since"] <= failing["last_failure_at"]
        folder.unlink()
        aside.rename(folder)
        assert path.read_bytes() == saved  # the previous snapshot stayed
        # No new change: the retry alone writes it.
        healed = wait_for(
            lambda: (s := watchlist.storage_status()["index_snapshot"])["ok"] and s, "retried"
        )
        assert healed["behind"] is False and healed["failures"] >= 1
        assert healed["version"] == watchlist.store.version()
        assert path.read_bytes() != saved


def test_a_write_reported_failed_that_reached_the_store_gets_into_the_index(
    watchlist: Watchlist, faces_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = watchlist.store.create_person

    def committed_but_cut_off(*args: Any, **kwargs: Any) -> Any:
        commit(*args, **kwargs)
        raise StoreError("store unavailable: server closed the connection unexpectedly")

    monkeypatch.setattr(watchlist.store, "create_person", committed_but_cut_off)
    with pytest.raises(StoreError):
        watchlist.enroll({"name": "rose"}, photos(faces_dir, ROSE), largest=True)
    monkeypatch.undo()
    (rose,) = watchlist.store.persons_named("rose")
    # Nothing else is written: the watchlist checks the store again on its own.
    wait_for(lambda: len(watchlist.index) == rose.face_count, "the index has the commit")
    assert watchlist.applied_version == watchlist.store.version()
    (found,) = watchlist.identify([read_image(faces_dir / ROSE)], ["rose"])
    assert [face.person for face in found] == ["rose"]
