"""The studio hands out only regular files inside the output folder: never what a symlink
or a stored path outside it leads to, neither as an image, a thumbnail nor in the zip."""

from __future__ import annotations

import io
import zipfile

from sqlalchemy import select

from db.models import Article, Render
from producer.review import downloads
from tests.unit.review_studio import BATCH, login

APPROVED_KEY = "SKU-007"  # approved in the test batch (7 % 7 == 0)


def secret_outside(tmp_path):
    secret = tmp_path / "elsewhere" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    return secret


def render_of(studio, key: str) -> Render:
    with studio.sessions() as session:
        query = select(Render).where(Render.article_id == studio.ids[key])
        return session.scalars(query.order_by(Render.attempt.desc())).first()


def test_an_image_replaced_by_a_symlink_to_a_file_outside_is_not_served(studio, tmp_path):
    secret = secret_outside(tmp_path)
    render = render_of(studio, "SKU-001")
    image = studio.output / BATCH / "attempts" / "stem1.1.png"
    assert render.image_path == str(image)
    login(studio)
    assert studio.client.get(f"/renders/{render.id}/image").status_code == 200
    image.unlink()
    image.symlink_to(secret)
    for what in ("image", "thumb"):
        response = studio.client.get(f"/renders/{render.id}/{what}")
        assert response.status_code == 404, what
        assert b"secret-hash" not in response.content


def test_a_symlinked_folder_inside_the_output_leading_outside_is_not_served(studio, tmp_path):
    secret = secret_outside(tmp_path)
    (secret.parent / "stem2.1.png").write_bytes(b"\x89PNG not yours")
    render = render_of(studio, "SKU-002")
    attempts = studio.output / BATCH / "attempts"
    inside = studio.output / BATCH / "linked"
    inside.symlink_to(secret.parent, target_is_directory=True)
    with studio.sessions() as session:
        session.get(Render, render.id).image_path = str(inside / "stem2.1.png")
        session.commit()
    (attempts / "stem2.1.png").unlink()  # the laid-out path is gone too
    login(studio)
    response = studio.client.get(f"/renders/{render.id}/image")
    assert response.status_code == 404
    assert b"not yours" not in response.content


def test_a_stored_path_outside_the_output_folder_is_not_served(studio, tmp_path):
    secret = secret_outside(tmp_path)
    render = render_of(studio, "SKU-004")
    with studio.sessions() as session:
        session.get(Render, render.id).image_path = str(secret)
        session.commit()
    (studio.output / BATCH / "attempts" / "stem4.1.png").unlink()
    login(studio)
    assert studio.client.get(f"/renders/{render.id}/image").status_code == 404


def test_a_symlink_inside_the_folder_to_a_file_inside_is_still_served(studio):
    render = render_of(studio, "SKU-005")
    image = studio.output / BATCH / "attempts" / "stem5.1.png"
    moved = studio.output / BATCH / "kept.png"
    image.rename(moved)
    image.symlink_to(moved)
    login(studio)
    response = studio.client.get(f"/renders/{render.id}/image")
    assert response.status_code == 200
    assert response.content == moved.read_bytes()


def test_the_zip_leaves_out_an_approved_picture_that_is_a_symlink_to_outside(studio, tmp_path):
    secret = secret_outside(tmp_path)
    with studio.sessions() as session:
        article = session.get(Article, studio.ids[APPROVED_KEY])
        picture = downloads.Path(article.image_path)
    picture.unlink()
    picture.symlink_to(secret)
    login(studio)
    response = studio.client.get(f"/batches/{BATCH}/approved.zip")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        names = bundle.namelist()
        assert f"images/stem{APPROVED_KEY[-1]}.png" not in names
        assert not any(b"secret-hash" in bundle.read(name) for name in names)
        sheet = bundle.read("approved.csv").decode("utf-8-sig")
    assert APPROVED_KEY in sheet  # its row stays, without an image
    assert "images/stem14.png" in names  # the others are still there


def test_confined_accepts_objects_only_under_the_output_url(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads.storage, "is_file", lambda where: True)
    root = "s3://bucket/farm"
    inside = downloads.storage.place("s3://bucket/farm/b1/x.png")
    assert downloads.confined(inside, root) == inside
    assert downloads.confined(downloads.storage.place("s3://bucket/other/x.png"), root) is None
    assert downloads.confined(downloads.storage.place("s3://bucket/farmer/x.png"), root) is None
    assert downloads.confined(tmp_path / "x.png", root) is None
    assert downloads.confined(inside, tmp_path) is None
