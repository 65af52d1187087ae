"""The watchlist store on SQLite, PostgreSQL and MariaDB: schema, persons, faces, versions."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from facewatch.errors import PersonNotFoundError, StoreError, WatchlistError
from facewatch.watchlist.models import Base
from facewatch.watchlist.store import NewFace, Store

PACK = "sface-test"
DIM = 8


def new_face(digest: str, seed: int = 0) -> NewFace:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return NewFace(
        image_sha256=digest.ljust(64, "0"),
        image_path=f"faces/{digest}.jpg",
        bbox=[1.0, 2.0, 101.0, 122.0],
        landmarks=[[float(i), float(i)] for i in range(5)],
        det_score=0.9,
        face_size=100.0,
        sharpness=321.0,
        frontal=0.8,
        embedding=vector / np.linalg.norm(vector),
    )


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store(database_url)
    yield opened
    opened.close()


def test_migrated_schema_matches_the_models(store: Store, database_url: str) -> None:
    current, head = store.schema_revision()
    assert current == head == "0002"
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_opening_twice_does_not_migrate_again(store: Store, database_url: str) -> None:
    store.create_person({"name": "Ada"}, [new_face("a")], PACK)
    again = Store(database_url)
    try:
        assert again.counts() == {"persons": 1, "faces": 1}
    finally:
        again.close()


def test_a_store_written_by_a_newer_facewatch_is_refused_clearly(
    store: Store, database_url: str
) -> None:
    store.create_person({"name": "Ada"}, [new_face("a")], PACK)
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError, match="schema 0099.*newer facewatch"):
        Store(database_url)


def test_person_with_faces_round_trips(store: Store) -> None:
    details = {"name": "  Ada Lovelace ", "age": 36, "gender": "female", "address": "London"}
    person, faces, change = store.create_person(
        {**details, "attributes": {"badge": 7}}, [new_face("a", 1), new_face("b", 2)], PACK
    )
    assert person.name == "Ada Lovelace" and person.face_count == 2
    assert person.created_at.tzinfo is not None
    assert [f.person_id for f in faces] == [person.id, person.id]
    assert change.version == store.version() == 1
    assert sorted(a[0] for a in change.added) == sorted(f.id for f in faces)
    loaded = store.get_person(person.id)
    assert (loaded.age, loaded.gender, loaded.address) == (36, "female", "London")
    assert loaded.attributes == {"badge": 7}
    rows = store.embeddings(PACK, DIM)
    assert rows.face_ids.tolist() == sorted(f.id for f in faces)
    assert set(rows.person_ids.tolist()) == {person.id}
    np.testing.assert_array_equal(rows.vectors[0], new_face("a", 1).embedding)
    assert store.embeddings("another-pack", DIM).face_ids.size == 0


def test_reads_do_not_change_the_version_and_failed_writes_roll_back(store: Store) -> None:
    person, _, _ = store.create_person({"name": "Ada"}, [new_face("a")], PACK)
    store.search_persons(text="ada")
    store.get_person(person.id)
    assert store.version() == 1
    with pytest.raises(PersonNotFoundError):
        store.add_faces(person.id + 100, [new_face("b")], PACK)
    with pytest.raises(WatchlistError):
        store.add_faces(person.id, [new_face("a")], PACK)  # same photo twice
    assert store.version() == 1
    assert store.counts() == {"persons": 1, "faces": 1}


def test_same_photo_may_belong_to_two_persons(store: Store) -> None:
    store.create_person({"name": "Twin A"}, [new_face("a")], PACK)
    store.create_person({"name": "Twin B"}, [new_face("a")], PACK)
    assert store.counts() == {"persons": 2, "faces": 2}


@pytest.mark.parametrize(
    ("details", "message"),
    [
        ({"name": ""}, "non-empty name"),
        ({"name": "x" * 201}, "at most 200"),
        ({"name": "A", "age": -1}, "age"),
        ({"name": "A", "age": "ten"}, "age"),
        ({"name": "A", "colour": "red"}, "unknown person fields"),
        ({"name": "A", "attributes": [1]}, "JSON object"),
    ],
)
def test_invalid_details_are_refused(store: Store, details: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(WatchlistError, match=message):
        store.create_person(details, [new_face("a")], PACK)
    assert store.counts()["persons"] == 0


def test_update_person(store: Store) -> None:
    person, _, _ = store.create_person({"name": "Ada", "age": 30}, [new_face("a")], PACK)
    updated = store.update_person(person.id, {"age": 31, "address": "Paris"})
    assert (updated.name, updated.age, updated.address) == ("Ada", 31, "Paris")
    assert updated.updated_at >= person.updated_at
    with pytest.raises(PersonNotFoundError):
        store.update_person(person.id + 1, {"age": 1})


def test_search_filters_and_pages(store: Store) -> None:
    people = [
        ("Alice Martin", 30, "12 Rue de Rivoli, Paris"),
        ("Bob Martinez", 45, "1 Main St, Springfield"),
        ("Carol 100%_real", 52, "Main_St 5"),
        ("dave martin", 19, None),
    ]
    for i, (name, age, address) in enumerate(people):
        store.create_person(
            {"name": name, "age": age, "address": address}, [new_face(f"p{i}")], PACK
        )
    names = lambda page: [p.name for p in page.items]  # noqa: E731
    assert names(store.search_persons(text="martin")) == [
        "Alice Martin",
        "Bob Martinez",
        "dave martin",
    ]
    assert names(store.search_persons(text="springfield")) == ["Bob Martinez"]
    # LIKE wildcards in the search text are literal characters.
    assert names(store.search_persons(text="100%_")) == ["Carol 100%_real"]
    assert names(store.search_persons(address="main_st")) == ["Carol 100%_real"]
    assert names(store.search_persons(min_age=40, max_age=50)) == ["Bob Martinez"]
    first = store.search_persons(offset=0, limit=3)
    second = store.search_persons(offset=3, limit=3)
    assert (first.total, second.total) == (4, 4)
    assert len(first.items) == 3 and len(second.items) == 1
    assert set(names(first)).isdisjoint(names(second))
    assert all(p.face_count == 1 for p in first.items)
    with pytest.raises(WatchlistError):
        store.search_persons(limit=0)


def test_delete_person_takes_faces_and_embeddings(store: Store) -> None:
    ada, faces, _ = store.create_person({"name": "Ada"}, [new_face("a"), new_face("b")], PACK)
    bob, _, _ = store.create_person({"name": "Bob"}, [new_face("c")], PACK)
    change = store.delete_person(ada.id)
    assert sorted(change.removed) == sorted(f.id for f in faces)
    assert store.counts() == {"persons": 1, "faces": 1}
    assert set(store.embeddings(PACK, DIM).person_ids.tolist()) == {bob.id}
    with pytest.raises(PersonNotFoundError):
        store.get_person(ada.id)
    with pytest.raises(PersonNotFoundError):
        store.delete_person(ada.id)


def test_remove_face_and_reset(store: Store) -> None:
    ada, faces, _ = store.create_person({"name": "Ada"}, [new_face("a"), new_face("b")], PACK)
    person_id, change = store.remove_face(faces[0].id)
    assert person_id == ada.id and change.removed == [faces[0].id]
    assert store.embedded_face_ids(PACK).tolist() == [faces[1].id]
    assert store.reset().removed == [faces[1].id]
    assert store.counts() == {"persons": 0, "faces": 0}


def test_reindex_rows_for_another_pack(store: Store) -> None:
    _, faces, _ = store.create_person({"name": "Ada"}, [new_face("a"), new_face("b")], PACK)
    assert [f.id for f in store.faces_without_embedding("pack-2")] == [f.id for f in faces]
    vector = np.ones(4, np.float32) / 2
    change = store.put_embeddings("pack-2", [(faces[0].id, vector), (999_999, vector)])
    assert [a[0] for a in change.added] == [faces[0].id]  # the unknown face is skipped
    assert [f.id for f in store.faces_without_embedding("pack-2")] == [faces[1].id]
    assert store.embeddings("pack-2", 4).vectors.tolist() == [vector.tolist()]
    with pytest.raises(WatchlistError, match="dimension"):
        store.embeddings("pack-2", 8)


def test_concurrent_writers_get_distinct_versions(store: Store) -> None:
    def enroll(i: int) -> int:
        return store.create_person({"name": f"P{i}"}, [new_face(f"x{i}", i)], PACK)[2].version

    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(enroll, range(40)))
    assert sorted(versions) == list(range(1, 41))
    assert store.counts() == {"persons": 40, "faces": 40}


def test_unreachable_database_is_a_clear_error() -> None:
    url = "postgresql+psycopg://facewatch:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(StoreError) as caught:
        Store(url)
    assert "127.0.0.1:1" in str(caught.value)
    assert "s3cret" not in str(caught.value)
