"""The faces API on a real server with real photos: detect, embed, verify, query and batches,
and how it answers bad input (corrupt images, wrong content types, huge uploads, bad JSON)."""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from live_server import LiveServer

from facewatch.images import read_image
from tests_support import png_header_only

GROUP = "groups/compreface_015_6.jpg"  # six faces, all found by the default pack
OBAMA = ("identities/barack_obama/1.jpg", "identities/barack_obama/2.jpg")
BIDEN = "identities/joe_biden/1.jpg"
OBAMA_AND_BIDEN = "groups/fr_obama_and_biden.jpg"
NO_FACE = "edge_cases/inspireface_view_no_face.jpg"


@pytest.fixture(scope="module")
def viewer(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client("viewer") as client:
        yield client


def upload(faces_dir: Path, relative: str, field: str = "file") -> dict[str, Any]:
    path = faces_dir / relative
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def b64(faces_dir: Path, relative: str) -> str:
    return base64.b64encode((faces_dir / relative).read_bytes()).decode()


def expected_faces(read_csv: Any, relative: str) -> int:
    row = next(r for r in read_csv("expectations/face_counts.csv") if r["image"] == relative)
    assert row["relation"] == "=="
    return int(row["expected_faces"])


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"]
    return error


# --- detect and embed ---------------------------------------------------------------------------


def test_detect_counts_the_faces_of_a_group_photo(
    viewer: httpx.Client, faces_dir: Path, read_csv: Any, server: LiveServer
) -> None:
    response = viewer.post("/api/faces/detect", files=upload(faces_dir, GROUP))
    assert response.status_code == 200, response.text
    body = response.json()
    image = read_image(faces_dir / GROUP)
    assert (body["height"], body["width"]) == image.shape[:2]
    assert len(body["faces"]) == expected_faces(read_csv, GROUP)
    for face in body["faces"]:
        x1, y1, x2, y2 = face["bbox"]
        assert 0 <= x1 < x2 <= body["width"] and 0 <= y1 < y2 <= body["height"]
        assert len(face["landmarks"]) == 5
        assert 0.5 <= face["score"] <= 1
        assert set(face["quality"]) == {"score", "size", "sharpness", "frontal"}
        assert "embedding" not in face
    # The same boxes as the engine finds on its own.
    direct = server.services.engine.detect([image])[0]
    assert np.allclose(
        sorted(f["bbox"] for f in body["faces"]), sorted(direct.xyxy.tolist()), atol=0.01
    )


def test_json_base64_and_multipart_give_the_same_faces(
    viewer: httpx.Client, faces_dir: Path
) -> None:
    by_file = viewer.post("/api/faces/detect", files=upload(faces_dir, OBAMA_AND_BIDEN))
    by_json = viewer.post(
        "/api/faces/detect",
        json={"image": "data:image/jpeg;base64," + b64(faces_dir, OBAMA_AND_BIDEN)},
    )
    assert by_file.status_code == by_json.status_code == 200
    assert by_file.json() == by_json.json()
    assert len(by_file.json()["faces"]) >= 2


def test_embed_gives_unit_embeddings_of_the_pack_s_dimension(
    viewer: httpx.Client, faces_dir: Path, server: LiveServer
) -> None:
    response = viewer.post("/api/faces/embed", files=upload(faces_dir, OBAMA[0]))
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert len(faces) == 1
    embedding = np.asarray(faces[0]["embedding"])
    assert embedding.shape == (server.services.engine.embedding_dim,)
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-3)


# --- verify -------------------------------------------------------------------------------------


def verification_pairs(read_csv: Any) -> list[tuple[str, str, bool]]:
    rows = read_csv("expectations/verification_pairs.csv")
    wanted = {(OBAMA[0], OBAMA[1]), (OBAMA[0], BIDEN)}
    return [
        (r["left"], r["right"], r["expected"] == "same")
        for r in rows
        if (r["left"], r["right"]) in wanted
    ][:2]


def test_verify_tells_the_same_person_from_a_different_one(
    viewer: httpx.Client, faces_dir: Path, read_csv: Any
) -> None:
    pairs = verification_pairs(read_csv)
    assert {same for _, _, same in pairs} == {True, False}
    for left, right, same in pairs:
        files = {**upload(faces_dir, left, "file_a"), **upload(faces_dir, right, "file_b")}
        response = viewer.post("/api/faces/verify", files=files)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["same"] is same, (left, right, body)
        assert (body["similarity"] >= body["threshold"]) is same


def test_verify_by_json_and_its_errors(viewer: httpx.Client, faces_dir: Path) -> None:
    response = viewer.post(
        "/api/faces/verify",
        json={"image_a": b64(faces_dir, OBAMA[0]), "image_b": b64(faces_dir, OBAMA[1])},
    )
    assert response.status_code == 200 and response.json()["same"] is True
    no_face = viewer.post(
        "/api/faces/verify",
        json={"image_a": b64(faces_dir, OBAMA[0]), "image_b": b64(faces_dir, NO_FACE)},
    )
    assert error_of(no_face, 422) == {
        "code": "no_face",
        "message": "no face found in the second image",
        "index": 1,
    }
    missing = viewer.post("/api/faces/verify", json={"image_a": b64(faces_dir, OBAMA[0])})
    assert "image_b" in error_of(missing, 422)["message"]


def test_verify_batch_answers_each_pair(viewer: httpx.Client, faces_dir: Path) -> None:
    pairs = [
        {"image_a": b64(faces_dir, OBAMA[0]), "image_b": b64(faces_dir, OBAMA[1])},
        {"image_a": b64(faces_dir, OBAMA[0]), "image_b": b64(faces_dir, BIDEN)},
        {"image_a": b64(faces_dir, OBAMA[0]), "image_b": base64.b64encode(b"junk").decode()},
        {"image_a": b64(faces_dir, NO_FACE), "image_b": b64(faces_dir, BIDEN)},
    ]
    response = viewer.post("/api/faces/verify/batch", json={"pairs": pairs})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert results[0]["same"] is True and results[1]["same"] is False
    assert results[2]["error"]["code"] == "bad_image"
    assert "pairs[2].image_b" in results[2]["error"]["message"]
    assert results[3]["error"]["code"] == "no_face"


# --- query --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def enrolled_obama(server: LiveServer, faces_dir: Path) -> Iterator[dict[str, Any]]:
    name = f"faces-test obama {uuid.uuid4().hex[:6]}"
    with server.client("operator") as operator:
        response = operator.post(
            "/api/people",
            data={"name": name},
            files=[("photos", (p, (faces_dir / p).read_bytes(), "image/jpeg")) for p in OBAMA],
        )
        assert response.status_code == 201, response.text
        person: dict[str, Any] = response.json()["person"]
        yield person
        operator.delete(f"/api/people/{person['id']}")


def test_query_names_an_enrolled_person_and_nobody_else(
    viewer: httpx.Client, faces_dir: Path, enrolled_obama: dict[str, Any]
) -> None:
    response = viewer.post("/api/faces/query", files=upload(faces_dir, OBAMA_AND_BIDEN))
    assert response.status_code == 200, response.text
    body = response.json()
    matched = [f for f in body["faces"] if f["match"] is not None]
    ours = [f for f in matched if f["match"]["person_id"] == enrolled_obama["id"]]
    assert len(ours) == 1
    best = ours[0]
    assert best["match"]["name"] == enrolled_obama["name"]
    assert best["match"]["similarity"] >= body["threshold"]
    assert best["candidates"][0]["person_id"] == enrolled_obama["id"]
    assert len(best["candidates"]) <= 5
    # Biden's face is not named Obama.
    others = [f for f in body["faces"] if f is not best]
    assert all(
        f["match"] is None or f["match"]["person_id"] != enrolled_obama["id"] for f in others
    )


def test_query_batch_with_a_corrupt_image_answers_the_others(
    viewer: httpx.Client, faces_dir: Path, enrolled_obama: dict[str, Any]
) -> None:
    photo = faces_dir / OBAMA_AND_BIDEN
    files = [
        ("files", ("scene.jpg", photo.read_bytes(), "image/jpeg")),
        ("files", ("broken.jpg", photo.read_bytes()[:2000], "image/jpeg")),
        ("files", ("notes.jpg", b"meeting notes, not a photo", "image/jpeg")),
        ("files", ("nobody.jpg", (faces_dir / NO_FACE).read_bytes(), "image/jpeg")),
    ]
    response = viewer.post("/api/faces/query/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    named = {f["match"]["person_id"] for f in results[0]["faces"] if f["match"]}
    assert enrolled_obama["id"] in named
    assert (
        results[1]["error"]["code"] == "bad_image"
        and "broken.jpg" in results[1]["error"]["message"]
    )
    assert results[2]["error"]["code"] == "bad_image"
    assert "not an image" in results[2]["error"]["message"]
    assert results[3]["faces"] == []


def test_detect_and_embed_batches_match_the_single_answers(
    viewer: httpx.Client, faces_dir: Path
) -> None:
    names = [GROUP, OBAMA[0]]
    single = [viewer.post("/api/faces/detect", files=upload(faces_dir, n)).json() for n in names]
    batch = viewer.post(
        "/api/faces/detect/batch",
        json={"images": [b64(faces_dir, n) for n in names] + ["!!not base64!!"]},
    )
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    for index, expected in enumerate(single):
        assert results[index] == {"index": index, **expected}
    assert results[2]["error"]["code"] == "bad_image" and "base64" in results[2]["error"]["message"]
    embedded = viewer.post(
        "/api/faces/embed/batch",
        files=[("files", (n, (faces_dir / n).read_bytes())) for n in names],
    )
    assert embedded.status_code == 200, embedded.text
    counts = [len(r["faces"]) for r in embedded.json()["results"]]
    assert counts == [len(s["faces"]) for s in single]
    assert all("embedding" in f for r in embedded.json()["results"] for f in r["faces"])


# --- bad input ----------------------------------------------------------------------------------


def test_a_corrupt_image_is_422_bad_image(viewer: httpx.Client, faces_dir: Path) -> None:
    data = (faces_dir / OBAMA[0]).read_bytes()[:5000]
    error = error_of(viewer.post("/api/faces/detect", files={"file": ("x.jpg", data)}), 422)
    assert error["code"] == "bad_image" and "corrupt" in error["message"]


def test_text_sent_as_a_jpeg_is_refused_by_its_content(viewer: httpx.Client) -> None:
    files = {"file": ("photo.jpg", b"name,age\nada,36\n", "image/jpeg")}
    error = error_of(viewer.post("/api/faces/detect", files=files), 422)
    assert error["code"] == "bad_image" and "not an image" in error["message"]


def test_a_body_of_another_content_type_is_415(viewer: httpx.Client, faces_dir: Path) -> None:
    response = viewer.post(
        "/api/faces/detect",
        content=(faces_dir / OBAMA[0]).read_bytes(),
        headers={"Content-Type": "image/jpeg"},
    )
    error = error_of(response, 415)
    assert error["code"] == "unsupported_media_type" and "multipart/form-data" in error["message"]


def test_malformed_json_is_422_saying_where(viewer: httpx.Client) -> None:
    response = viewer.post(
        "/api/faces/detect",
        content=b'{"image": "abc"',
        headers={"Content-Type": "application/json"},
    )
    error = error_of(response, 422)
    assert error["code"] == "invalid_json" and "line 1 column" in error["message"]


def test_a_decompression_bomb_is_413_before_decoding(viewer: httpx.Client) -> None:
    files = {"file": ("bomb.png", png_header_only(60_000, 60_000), "image/png")}
    error = error_of(viewer.post("/api/faces/detect", files=files), 413)
    assert error["code"] == "image_too_large"
    assert error["pixels"] == 3_600_000_000 and error["pixels"] > error["limit"]


def test_an_upload_above_the_limit_is_413_without_being_read(server: LiveServer) -> None:
    # Headers only, declaring more than the limit: the answer comes without a byte of body.
    limit = server.settings.server.max_upload_bytes
    head = (
        "POST /api/faces/detect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.token('viewer')}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {limit * 50}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_chunked_upload_is_cut_off_at_the_limit(viewer: httpx.Client, server: LiveServer) -> None:
    limit = server.settings.server.max_upload_bytes
    boundary = "facewatch"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
    ).encode()

    def body() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield head
        for _ in range(limit // (1 << 20) + 2):
            yield b"\0" * (1 << 20)

    response = viewer.post(
        "/api/faces/detect",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["message"]


def test_more_images_than_a_batch_takes_is_413(viewer: httpx.Client, server: LiveServer) -> None:
    most = server.settings.server.max_batch_images
    tiny = base64.b64encode(png_header_only(4, 4)).decode()
    error = error_of(
        viewer.post("/api/faces/detect/batch", json={"images": [tiny] * (most + 1)}), 413
    )
    assert error["code"] == "too_many_images" and error["limit"] == most


def test_a_request_without_an_image_is_422(viewer: httpx.Client) -> None:
    error = error_of(viewer.post("/api/faces/detect", json={"picture": "abc"}), 422)
    assert error["code"] == "missing_image" and "'image'" in error["message"]
    error = error_of(viewer.post("/api/faces/detect/batch", json={"images": []}), 422)
    assert error["code"] == "missing_image" and "'images'" in error["message"]
