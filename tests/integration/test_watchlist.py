"""The watchlist on real faces: every store (SQLite, PostgreSQL, MariaDB) × index (FAISS, Milvus).

Enrollment must give a reason for each refused photo, identification must name enrolled
people and nobody else, and the index must follow the store whatever wrote to it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from databases import fresh_database
from PIL import Image
from sqlalchemy import delete

from facewatch.config import Settings, load_settings
from facewatch.errors import EnrollmentRejected, WatchlistError
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.models import Embedding
from facewatch.watchlist.service import Photo, Watchlist
from facewatch.watchlist.snapshot import snapshot_path

COMBOS = [
    pytest.param(("sqlite", "faiss"), id="sqlite-faiss"),
    pytest.param(("postgresql", "faiss"), id="postgresql-faiss"),
    pytest.param(("mariadb", "faiss"), id="mariadb-faiss"),
    pytest.param(("sqlite", "milvus"), id="sqlite-milvus"),
    pytest.param(("postgresql", "milvus"), id="postgresql-milvus"),
    pytest.param(("mariadb", "milvus"), id="mariadb-milvus"),
]

OpenWatchlist = Callable[[], Watchlist]


def settings_for(tmp_path: Path, database_url: str, backend: str, **watchlist: object) -> Settings:
    options: dict[str, object] = {"database_url": database_url, "backend": backend}
    if backend == "milvus":
        pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (extra 'milvus')")
        options["milvus_uri"] = str(tmp_path / "milvus.db")
    return load_settings(data_dir=tmp_path / "data", watchlist={**options, **watchlist})


@pytest.fixture(params=COMBOS)
def open_watchlist(
    request: pytest.FixtureRequest, tmp_path: Path, engine: FaceEngine
) -> Iterator[OpenWatchlist]:
    """Opens watchlists (as many as a test wants) on one fresh store and index."""
    store_backend, index_backend = request.param
    opened: list[Watchlist] = []
    with fresh_database(store_backend, tmp_path) as url:
        settings = settings_for(tmp_path, url, index_backend)

        def open_() -> Watchlist:
            watchlist = Watchlist.open(settings, engine)
            opened.append(watchlist)
            return watchlist

        yield open_
        for watchlist in opened:
            watchlist.close()


def photo(faces_dir: Path, relative: str) -> Photo:
    path = faces_dir / relative
    return Photo(relative, path.read_bytes())


def encoded(image: np.ndarray, fmt: str = "JPEG") -> bytes:  # type: ignore[type-arg]
    buffer = io.BytesIO()
    Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).save(buffer, fmt)
    return buffer.getvalue()


def decoded(faces_dir: Path, relative: str) -> np.ndarray:  # type: ignore[type-arg]
    image = cv2.imread(str(faces_dir / relative))
    assert image is not None
    return image


def test_enrollment_gives_a_reason_for_each_refused_photo(
    open_watchlist: OpenWatchlist, faces_dir: Path
) -> None:
    watchlist = open_watchlist()
    obama = decoded(faces_dir, "identities/barack_obama/1.jpg")
    tiny = cv2.resize(obama, (obama.shape[1] // 8, obama.shape[0] // 8))
    blurred = cv2.GaussianBlur(decoded(faces_dir, "identities/barack_obama/2.jpg"), (0, 0), 6)
    photos = [
        photo(faces_dir, "identities/barack_obama/1.jpg"),
        photo(faces_dir, "identities/barack_obama/1.jpg"),
        Photo("same-face.png", encoded(obama, "PNG")),
        photo(faces_dir, "groups/fr_obama_and_biden.jpg"),
        photo(faces_dir, "edge_cases/inspireface_view_no_face.jpg"),
        Photo("notes.txt", b"this is not an image"),
        Photo("tiny.jpg", encoded(tiny)),
        Photo("blurred.jpg", encoded(blurred)),
        photo(faces_dir, "identities/barack_obama/3.jpg"),
    ]
    result = watchlist.enroll({"name": "Barack Obama", "age": 63}, photos)
    reasons = {r.source: r.reason.value for r in result.rejected}
    assert reasons == {
        "identities/barack_obama/1.jpg": "duplicate",
        "same-face.png": "duplicate",
        "groups/fr_obama_and_biden.jpg": "several_faces",
        "edge_cases/inspireface_view_no_face.jpg": "no_face",
        "notes.txt": "not_an_image",
        "tiny.jpg": "too_small",
    }
    assert all(r.detail for r in result.rejected)
    # A blurred face is enrolled, with a warning on that face.
    assert len(result.accepted) == 3 and result.person.face_count == 3
    blurred_face = result.accepted[1]
    assert [(w.source, w.face_id, w.notice.caution.value) for w in result.warnings] == [
        ("blurred.jpg", blurred_face.id, "blurry")
    ]
    assert all(w.notice.detail for w in result.warnings)
    assert len(watchlist.index) == 3
    for face in result.accepted:
        assert (watchlist.data_dir / face.image_path).is_file()


def test_strict_quality_refuses_what_is_otherwise_a_warning(
    tmp_path: Path, engine: FaceEngine, faces_dir: Path
) -> None:
    blurred = cv2.GaussianBlur(decoded(faces_dir, "identities/barack_obama/2.jpg"), (0, 0), 6)
    photos = [
        Photo("blurred.jpg", encoded(blurred)),
        photo(faces_dir, "identities/barack_obama/3.jpg"),
    ]
    with fresh_database("sqlite", tmp_path) as url:
        settings = settings_for(tmp_path, url, "faiss", enroll_strict_quality=True)
        with Watchlist.open(settings, engine) as watchlist:
            result = watchlist.enroll({"name": "Barack Obama"}, photos)
    assert [(r.source, r.reason.value) for r in result.rejected] == [("blurred.jpg", "too_blurry")]
    assert len(result.accepted) == 1 and result.warnings == []


def test_largest_face_option_enrolls_a_group_photo(
    open_watchlist: OpenWatchlist, faces_dir: Path
) -> None:
    watchlist = open_watchlist()
    group = [photo(faces_dir, "groups/fr_obama_and_biden.jpg")]
    with pytest.raises(EnrollmentRejected):
        watchlist.enroll({"name": "Someone"}, group)
    result = watchlist.enroll({"name": "Someone"}, group, largest=True)
    assert len(result.accepted) == 1


def test_nothing_usable_creates_nobody(open_watchlist: OpenWatchlist, faces_dir: Path) -> None:
    watchlist = open_watchlist()
    with pytest.raises(EnrollmentRejected) as caught:
        watchlist.enroll(
            {"name": "Nobody"},
            [photo(faces_dir, "edge_cases/inspireface_view_no_face.jpg"), Photo("x", b"")],
        )
    assert [reason for _, reason, _ in caught.value.rejected] == ["no_face", "not_an_image"]
    assert watchlist.store.counts() == {"persons": 0, "faces": 0}
    assert len(watchlist.index) == 0


def test_identify_names_enrolled_people_only_and_forget_removes_them(
    open_watchlist: OpenWatchlist, faces_dir: Path
) -> None:
    watchlist = open_watchlist()
    obama = watchlist.enroll(
        {"name": "Barack Obama"},
        [photo(faces_dir, f"identities/barack_obama/{i}.jpg") for i in (1, 2)],
    ).person
    jolie = watchlist.enroll(
        {"name": "Angelina Jolie"},
        [photo(faces_dir, f"identities/angelina_jolie/{i}.jpg") for i in (1, 2)],
    ).person
    probes = ["barack_obama/5.jpg", "angelina_jolie/4.jpg", "joe_biden/1.jpg"]
    images = [decoded(faces_dir, f"identities/{p}") for p in probes]
    found = watchlist.identify(images, probes)
    assert [[f.person_id for f in faces] for faces in found] == [[obama.id], [jolie.id], [None]]
    assert found[0][0].person == "Barack Obama"
    assert found[0][0].similarity is not None and found[0][0].similarity >= watchlist.threshold
    assert found[2][0].similarity is not None and found[2][0].similarity < watchlist.threshold

    assert watchlist.forget(obama.id) == 2
    again = watchlist.identify(images[:1], probes[:1])
    assert again[0][0].person_id is None
    assert len(watchlist.index) == 2
    assert set(watchlist.index.face_ids().tolist()) == set(
        watchlist.store.embedded_face_ids(watchlist.pack_id).tolist()
    )


def test_add_and_remove_a_face(open_watchlist: OpenWatchlist, faces_dir: Path) -> None:
    watchlist = open_watchlist()
    person = watchlist.enroll(
        {"name": "Barack Obama"}, [photo(faces_dir, "identities/barack_obama/1.jpg")]
    ).person
    added = watchlist.add_photos(person.id, [photo(faces_dir, "identities/barack_obama/3.jpg")])
    assert added.person.face_count == 2
    with pytest.raises(EnrollmentRejected):
        watchlist.add_photos(person.id, [photo(faces_dir, "identities/barack_obama/3.jpg")])
    assert watchlist.remove_face(added.accepted[0].id) == person.id
    assert len(watchlist.index) == 1
    with pytest.raises(WatchlistError):
        watchlist.remove_face(added.accepted[0].id)


def test_another_writer_is_seen_after_refresh(
    open_watchlist: OpenWatchlist, faces_dir: Path
) -> None:
    reader, writer = open_watchlist(), open_watchlist()
    person = writer.enroll(
        {"name": "Barack Obama"}, [photo(faces_dir, "identities/barack_obama/1.jpg")]
    ).person
    probe = [decoded(faces_dir, "identities/barack_obama/5.jpg")]
    assert reader.refresh() >= 0
    assert reader.identify(probe, ["probe"])[0][0].person_id == person.id
    assert reader.applied_version == reader.store.version()
    writer.forget(person.id)
    reader.refresh()
    assert reader.identify(probe, ["probe"])[0][0].person_id is None


def test_reset_is_guarded(open_watchlist: OpenWatchlist, faces_dir: Path) -> None:
    watchlist = open_watchlist()
    watchlist.enroll({"name": "A"}, [photo(faces_dir, "identities/barack_obama/1.jpg")])
    with pytest.raises(WatchlistError):
        watchlist.reset(confirm=False)
    assert watchlist.store.counts()["persons"] == 1
    assert watchlist.reset(confirm=True) == 1
    assert len(watchlist.index) == 0 and watchlist.store.counts()["persons"] == 0


def test_reindex_embeds_faces_missing_for_the_pack(
    open_watchlist: OpenWatchlist, faces_dir: Path
) -> None:
    watchlist = open_watchlist()
    enrolled = watchlist.enroll(
        {"name": "Barack Obama"},
        [photo(faces_dir, f"identities/barack_obama/{i}.jpg") for i in (1, 2, 3)],
    )
    before = watchlist.store.embeddings(watchlist.pack_id, watchlist.engine.embedding_dim)
    # As if the faces had been enrolled under another pack: no embedding for this one.
    rows = list(zip(before.face_ids.tolist(), before.vectors, strict=True))
    watchlist.store.put_embeddings("other-pack", rows)

    with watchlist.store._sessions.begin() as session:
        session.execute(delete(Embedding).where(Embedding.pack_id == watchlist.pack_id))
    watchlist.sync()
    assert len(watchlist.index) == 0
    seen: list[tuple[int, int]] = []
    result = watchlist.reindex(lambda done, total: seen.append((done, total)))
    assert result == {"faces": 3, "embedded": 3, "lost": 0}
    assert seen[-1] == (3, 3)
    after = watchlist.store.embeddings(watchlist.pack_id, watchlist.engine.embedding_dim)
    np.testing.assert_array_equal(after.face_ids, before.face_ids)
    np.testing.assert_allclose(after.vectors, before.vectors, atol=1e-5)
    assert len(watchlist.index) == len(enrolled.accepted)


# --- FAISS snapshots --------------------------------------------------------------------------


@pytest.fixture
def faiss_settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", "faiss")


def test_snapshot_is_used_when_current_and_synced_when_stale(
    faiss_settings: Settings, engine: FaceEngine, faces_dir: Path
) -> None:
    with Watchlist.open(faiss_settings, engine) as first:
        first.enroll({"name": "A"}, [photo(faces_dir, "identities/barack_obama/1.jpg")])
    path = snapshot_path(faiss_settings.data_dir.resolve(), engine.pack.id)
    assert path.is_file()
    with Watchlist.open(faiss_settings, engine) as second:
        assert second.loaded_from == "snapshot" and len(second.index) == 1
    stale_writer = Watchlist.open(faiss_settings, engine)
    stale_writer.enroll({"name": "C"}, [photo(faces_dir, "identities/angelina_jolie/1.jpg")])
    # It dies before its snapshot is due: the snapshot on disk is one write behind the store.
    assert stale_writer._snapshot_timer is not None
    stale_writer._snapshot_timer.cancel()
    stale_writer._closed = True
    stale_writer.store.close()
    with Watchlist.open(faiss_settings, engine) as third:
        assert third.loaded_from == "snapshot+store"
        assert len(third.index) == 2
        assert third.applied_version == third.store.version()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:-200] + bytes(200), id="zeroed-tail"),
        pytest.param(lambda data: b"garbage", id="garbage"),
    ],
)
def test_damaged_snapshot_is_rebuilt_from_the_store(
    faiss_settings: Settings,
    engine: FaceEngine,
    faces_dir: Path,
    damage: Callable[[bytes], bytes],
) -> None:
    with Watchlist.open(faiss_settings, engine) as first:
        first.enroll({"name": "A"}, [photo(faces_dir, "identities/barack_obama/1.jpg")])
    path = snapshot_path(faiss_settings.data_dir.resolve(), engine.pack.id)
    path.write_bytes(damage(path.read_bytes()))
    with Watchlist.open(faiss_settings, engine) as second:
        assert second.loaded_from == "store"
        assert len(second.index) == 1
    with Watchlist.open(faiss_settings, engine) as third:
        assert third.loaded_from == "snapshot"  # the rebuilt index was saved again


def test_milvus_dimension_must_match_the_pack(tmp_path: Path, engine: FaceEngine) -> None:
    settings = settings_for(
        tmp_path,
        f"sqlite:///{tmp_path / 'store.db'}",
        "milvus",
        milvus_dimension=engine.embedding_dim * 4,
    )
    with pytest.raises(WatchlistError, match="MILVUS_DIMENSION"):
        Watchlist.open(settings, engine)
