"""People and the watchlist through the API, on a real server with real photos: enrollment with
its refusals, details, search with pagination, faces and their photos, status, reset, 404s and
who may do what."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
from live_server import LiveServer, server_settings, serving

from tests_support import png_header_only

GROUP = "groups/fr_two_people.jpg"  # two faces: refused unless largest
NO_FACE = "edge_cases/inspireface_view_no_face.jpg"
KIT = ("identities/kit_harington/1.jpeg", "identities/kit_harington/2.jpeg")
ROSE = "identities/rose_leslie/1.jpg"


@pytest.fixture(scope="module")
def operator(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client("operator") as client:
        yield client


@pytest.fixture(scope="module")
def viewer(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client("viewer") as client:
        yield client


def unique(label: str) -> str:
    return f"people-test {label} {uuid.uuid4().hex[:8]}"


def photos(faces_dir: Path, *relative: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("photos", (p, (faces_dir / p).read_bytes(), "image/jpeg")) for p in relative]


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"]
    return error


@pytest.fixture
def kit(operator: httpx.Client, faces_dir: Path) -> Iterator[dict[str, Any]]:
    response = operator.post(
        "/api/people",
        data={"name": unique("kit"), "age": "37", "gender": "male", "address": "Castle Black"},
        files=photos(faces_dir, *KIT),
    )
    assert response.status_code == 201, response.text
    person: dict[str, Any] = response.json()["person"]
    yield person
    operator.delete(f"/api/people/{person['id']}")


# --- enrollment ---------------------------------------------------------------------------------


def test_enrollment_keeps_good_photos_and_says_why_others_were_refused(
    operator: httpx.Client, faces_dir: Path, server: LiveServer
) -> None:
    name = unique("kit")
    files = photos(faces_dir, KIT[0], GROUP, NO_FACE, KIT[1])
    files.insert(2, ("photos", ("notes.jpg", b"not a photo at all", "image/jpeg")))
    files.append(("photos", ("bomb.png", png_header_only(50_000, 50_000), "image/png")))
    response = operator.post(
        "/api/people",
        data={"name": name, "age": "37", "attributes": '{"team": "north"}'},
        files=files,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    person = body["person"]
    assert person["name"] == name and person["age"] == 37 and person["face_count"] == 2
    assert person["attributes"] == {"team": "north"}
    assert len(body["accepted"]) == 2
    assert all(f["person_id"] == person["id"] for f in body["accepted"])
    reasons = [(r["image"], r["reason"]) for r in body["rejected"]]
    assert reasons == [
        (GROUP, "several_faces"),
        ("notes.jpg", "not_an_image"),
        (NO_FACE, "no_face"),
        ("bomb.png", "not_an_image"),
    ]
    assert all(r["detail"] for r in body["rejected"])
    # The person is searchable by face at once.
    with server.client("viewer") as viewer:
        found = viewer.post(
            "/api/faces/query",
            files={
                "file": ("kit.jpg", (faces_dir / "identities/kit_harington/3.jpg").read_bytes())
            },
        ).json()["faces"]
    assert any(f["match"] and f["match"]["person_id"] == person["id"] for f in found)
    operator.delete(f"/api/people/{person['id']}")


def test_blurred_photo_is_enrolled_with_a_warning_on_its_face(
    operator: httpx.Client, faces_dir: Path
) -> None:
    image = cv2.imread(str(faces_dir / ROSE))
    ok, blurred = cv2.imencode(".jpg", cv2.GaussianBlur(image, (0, 0), 6))
    assert ok
    files = [("photos", ("blurred.jpg", blurred.tobytes(), "image/jpeg"))]
    response = operator.post("/api/people", data={"name": unique("rose")}, files=files)
    assert response.status_code == 201, response.text
    body = response.json()
    [face] = body["accepted"]
    assert body["rejected"] == []
    assert [(w["image"], w["face_id"], w["warning"]) for w in body["warnings"]] == [
        ("blurred.jpg", face["id"], "blurry")
    ]
    operator.delete(f"/api/people/{body['person']['id']}")


def test_enrollment_with_no_usable_photo_creates_nobody(
    operator: httpx.Client, viewer: httpx.Client, faces_dir: Path
) -> None:
    name = unique("nobody")
    response = operator.post(
        "/api/people", data={"name": name}, files=photos(faces_dir, NO_FACE, GROUP)
    )
    error = error_of(response, 422)
    assert error["code"] == "enrollment_rejected"
    assert [r["reason"] for r in error["rejected"]] == ["no_face", "several_faces"]
    assert viewer.get("/api/people", params={"search": name}).json()["total"] == 0


def test_enrollment_by_json_with_the_largest_face(operator: httpx.Client, faces_dir: Path) -> None:
    name = unique("json")
    response = operator.post(
        "/api/people",
        json={
            "name": name,
            "gender": "female",
            "photos": [base64.b64encode((faces_dir / GROUP).read_bytes()).decode()],
            "largest": True,
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["person"]["gender"] == "female" and len(body["accepted"]) == 1
    assert body["rejected"] == []
    operator.delete(f"/api/people/{body['person']['id']}")


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"age": "37"}, "name"),
        ({"name": "  "}, "name"),
        ({"name": "x", "age": "old"}, "age"),
        ({"name": "x", "age": "151"}, "age"),
        ({"name": "x", "nickname": "y"}, "nickname"),
        ({"name": "x", "attributes": "[1, 2]"}, "attributes"),
    ],
)
def test_invalid_details_are_422_naming_the_field(
    operator: httpx.Client, faces_dir: Path, data: dict[str, str], where: str
) -> None:
    response = operator.post("/api/people", data=data, files=photos(faces_dir, KIT[0]))
    error = error_of(response, 422)
    assert where in error["message"]


def test_enrollment_without_photos_is_422(operator: httpx.Client) -> None:
    error = error_of(operator.post("/api/people", json={"name": unique("none")}), 422)
    assert error["code"] == "missing_image" and "photos" in error["message"]


# --- reading, changing, deleting ----------------------------------------------------------------


def test_a_person_s_details_change_and_clear(
    operator: httpx.Client, viewer: httpx.Client, kit: dict[str, Any]
) -> None:
    url = f"/api/people/{kit['id']}"
    assert viewer.get(url).json() == kit
    changed = operator.patch(
        url, json={"address": None, "age": 38, "attributes": {"house": "Stark"}}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["address"], body["age"], body["attributes"]) == (None, 38, {"house": "Stark"})
    assert body["name"] == kit["name"] and body["updated_at"] >= kit["updated_at"]
    assert viewer.get(url).json() == body
    for bad, field in (({"age": -1}, "age"), ({"name": None}, "name"), ({"id": 3}, "id")):
        assert field in error_of(operator.patch(url, json=bad), 422)["message"]
    assert error_of(operator.patch(url, json={}), 422)["code"] == "invalid_person"
    malformed = operator.patch(
        url, content=b"{'age': 3}", headers={"Content-Type": "application/json"}
    )
    assert error_of(malformed, 422)["code"] == "invalid_json"


def test_faces_of_a_person_their_photos_and_removal(
    operator: httpx.Client, viewer: httpx.Client, faces_dir: Path, kit: dict[str, Any]
) -> None:
    faces = viewer.get(f"/api/people/{kit['id']}/faces").json()["items"]
    assert len(faces) == 2
    first = faces[0]
    photo = viewer.get(first["image_url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(photo.content).hexdigest() == first["image_sha256"]
    assert photo.content == (faces_dir / KIT[0]).read_bytes()

    more = operator.post(
        f"/api/people/{kit['id']}/faces",
        files=photos(faces_dir, "identities/kit_harington/3.jpg", KIT[0]),
    )
    assert more.status_code == 201, more.text
    assert more.json()["person"]["face_count"] == 3
    assert [r["reason"] for r in more.json()["rejected"]] == ["duplicate"]

    removed = operator.delete(f"/api/people/{kit['id']}/faces/{first['id']}")
    assert removed.status_code == 200, removed.text
    assert removed.json()["person"]["face_count"] == 2
    assert (
        error_of(operator.delete(f"/api/people/{kit['id']}/faces/{first['id']}"), 404)["code"]
        == "face_not_found"
    )
    assert error_of(viewer.get(f"/api/faces/{first['id']}/image"), 404)["code"] == "face_not_found"


def test_a_face_of_someone_else_is_not_removed_through_another_person(
    operator: httpx.Client, faces_dir: Path, kit: dict[str, Any]
) -> None:
    rose = operator.post(
        "/api/people", data={"name": unique("rose")}, files=photos(faces_dir, ROSE)
    ).json()
    rose_face = rose["accepted"][0]["id"]
    error = error_of(operator.delete(f"/api/people/{kit['id']}/faces/{rose_face}"), 404)
    assert error["code"] == "face_not_found"
    assert operator.get(f"/api/people/{rose['person']['id']}").json()["face_count"] == 1
    deleted = operator.delete(f"/api/people/{rose['person']['id']}")
    assert deleted.status_code == 200 and deleted.json()["faces_removed"] == 1
    assert (
        error_of(operator.get(f"/api/people/{rose['person']['id']}"), 404)["code"]
        == "person_not_found"
    )


def test_unknown_ids_are_404_and_bad_ids_422(operator: httpx.Client, viewer: httpx.Client) -> None:
    missing = 2**62
    for response in (
        viewer.get(f"/api/people/{missing}"),
        viewer.get(f"/api/people/{missing}/faces"),
        operator.patch(f"/api/people/{missing}", json={"age": 3}),
        operator.delete(f"/api/people/{missing}"),
        operator.delete(f"/api/people/{missing}/faces/1"),
    ):
        assert error_of(response, 404)["code"] == "person_not_found"
    assert error_of(viewer.get(f"/api/faces/{missing}/image"), 404)["code"] == "face_not_found"
    for bad in ("abc", "0", str(2**64)):
        assert error_of(viewer.get(f"/api/people/{bad}"), 422)["code"] == "invalid_request"


# --- search -------------------------------------------------------------------------------------


def test_search_pages_through_the_matching_persons(
    operator: httpx.Client, viewer: httpx.Client, faces_dir: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    photo = (faces_dir / KIT[0]).read_bytes()
    ids = []
    for n in range(5):
        response = operator.post(
            "/api/people",
            data={"name": f"pager {tag} {n}", "address": f"{n} Page Street"},
            files=[("photos", (f"{n}.jpg", photo, "image/jpeg"))],
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["person"]["id"])
    try:
        pages = [
            viewer.get("/api/people", params={"search": f"pager {tag}", "page": p, "per_page": 2})
            for p in (1, 2, 3, 4)
        ]
        bodies = [page.json() for page in pages]
        assert [b["total"] for b in bodies] == [5] * 4
        assert [(b["page"], b["per_page"]) for b in bodies] == [(1, 2), (2, 2), (3, 2), (4, 2)]
        assert [[p["id"] for p in b["items"]] for b in bodies] == [ids[0:2], ids[2:4], ids[4:], []]
        by_name = viewer.get("/api/people", params={"search": f"PAGER {tag} 3"}).json()
        assert [p["id"] for p in by_name["items"]] == [ids[3]]
        assert error_of(viewer.get("/api/people", params={"per_page": 101}), 422)
        assert error_of(viewer.get("/api/people", params={"page": 0}), 422)
    finally:
        for person_id in ids:
            operator.delete(f"/api/people/{person_id}")


# --- the watchlist ------------------------------------------------------------------------------


def test_status_reports_the_store_and_index(viewer: httpx.Client, kit: dict[str, Any]) -> None:
    status = viewer.get("/api/watchlist/status").json()
    assert status["store"]["persons"] >= 1 and status["store"]["faces"] >= 2
    assert status["index"]["backend"] == "faiss" and status["index"]["count"] >= 2
    assert status["store"]["dialect"] == "sqlite"
    # The threshold in effect, where it comes from and what it is expected to give.
    matching = status["matching"]
    assert matching["threshold"] == status["threshold"]
    assert matching["persons"] == status["store"]["persons"]
    assert matching["templates"] == status["store"]["faces"]
    assert matching["target_fpir"] == 0.01 and matching["calibration"] == "shipped"
    if matching["persons"] >= 2:
        assert matching["source"] == "calibrated" and matching["expected_fpir"] <= 0.01
    else:
        assert matching["source"] == "pack" and matching["threshold"] == 0.363


def test_only_operators_change_the_watchlist_and_only_admins_reset_it(
    server: LiveServer, viewer: httpx.Client, kit: dict[str, Any]
) -> None:
    assert viewer.patch(f"/api/people/{kit['id']}", json={"age": 1}).status_code == 403
    assert viewer.delete(f"/api/people/{kit['id']}").status_code == 403
    with server.client("operator") as operator:
        assert operator.post("/api/watchlist/reset", json={"confirm": True}).status_code == 403
    assert viewer.get(f"/api/people/{kit['id']}").json()["age"] == 37


def test_reset_needs_admin_and_confirmation_then_empties_the_watchlist(
    tmp_path: Path, model_cache: Path, faces_dir: Path
) -> None:
    # A server of its own: the shared one keeps the persons of other tests.
    with serving(server_settings(tmp_path / "data", model_cache)) as live:
        with live.client("operator") as operator:
            created = operator.post(
                "/api/people", data={"name": "to be reset"}, files=photos(faces_dir, KIT[0])
            )
            assert created.status_code == 201, created.text
        with live.client("admin") as admin:
            for body in ({}, {"confirm": False}):
                refused = admin.post("/api/watchlist/reset", json=body)
                assert error_of(refused, 422)["code"] == "confirmation_required"
            assert admin.get("/api/watchlist/status").json()["store"]["persons"] == 1
            done = admin.post("/api/watchlist/reset", json={"confirm": True})
            assert done.status_code == 200, done.text
            assert done.json() == {"reset": True, "faces_removed": 1}
            status = admin.get("/api/watchlist/status").json()
            assert status["store"]["persons"] == 0 and status["index"]["count"] == 0
