"""The review studio's pages: batches, the contact sheet (filters, sort, paging, queries), the
article page (attempts, history, other views), images and thumbnails, and the approved zip."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import event, select

from db.models import Article, ArticleStatus, Render
from producer.review import downloads
from tasks.outputs import view_stem
from tests.unit.review_studio import (
    ADMIN,
    BATCH,
    HOSTILE_NAME,
    KEPT,
    MIN_SCORE,
    REVIEWER,
    SPECS,
    add_view,
    attempt_png,
    cards,
    login,
    new_render,
    png,
    total_of,
)
from tests.unit.test_report import Elements

# The batches page


def test_the_batches_page_counts_farm_and_review_statuses_and_scores(studio):
    login(studio)
    page = studio.client.get("/")
    rows = Elements(page.text).find("tr", "batch")
    assert [(r["data-batch-id"], r["data-total"], r["data-running"]) for r in rows] == [
        (BATCH, str(len(KEPT)), "false")
    ]
    chips = {(a.get("data-status") or a.get("data-review")): a["data-count"]
             for a in Elements(page.text).find("span", "chip")}  # fmt: skip
    assert chips["failed"] == str(sum(s.status == "failed" for s in KEPT))
    assert chips["approved"] == str(sum(s.review == "approved" for s in KEPT))
    assert chips["unreviewed"] == str(sum(s.review is None for s in KEPT))
    scores = [s.score for s in KEPT if s.score is not None]
    assert f"{min(scores):.4g}" in page.text and f"{max(scores):.4g}" in page.text
    assert "herbst" in page.text


def test_the_batches_table_is_polled_as_a_fragment_that_says_when_batches_run(studio):
    login(studio)
    with studio.sessions() as session:
        session.get(Article, studio.ids["SKU-002"]).status = ArticleStatus.extracted.value
        session.commit()
    fragment = studio.client.get("/fragments/batches")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert 'data-running="true"' in fragment.text and 'data-poll-seconds="5"' in fragment.text
    assert 'data-poll-url="/fragments/batches"' in studio.client.get("/").text


# The contact sheet


def expected(keep) -> list[str]:
    return [s.key for s in KEPT if keep(s)]


FILTERS = {
    "all": lambda s: True,
    "failed": lambda s: s.status == "failed",
    "below": lambda s: s.score is not None and s.score < MIN_SCORE,
    "needs_review": lambda s: s.status == "needs_review",
    "approved": lambda s: s.review == "approved",
    "rejected": lambda s: s.review == "rejected",
    "unreviewed": lambda s: s.review is None,
}


@pytest.mark.parametrize("name", FILTERS)
def test_each_filter_of_the_contact_sheet_counts_and_pages_its_articles(studio, name):
    login(studio)
    keys = expected(FILTERS[name])
    shown = []
    for number in range(1, 4):
        page = studio.client.get(f"/batches/b1?filter={name}&page={number}")
        count = [a for t, a in Elements(page.text).tags if a.get("id") == "sheet-count"][0]
        assert int(count["data-total"]) == len(keys)
        shown += [c["data-key"] for c in cards(page.text)][: 60 if number < 3 else None]
        if int(count["data-pages"]) == number:
            break
    assert shown == keys


def test_the_contact_sheet_shows_60_cards_a_page_and_the_rest_on_the_last(studio):
    login(studio)
    sizes = [len(cards(studio.client.get(f"/batches/b1?page={n}").text)) for n in (1, 2, 3)]
    assert sizes == [60, 60, len(KEPT) - 120]
    past_the_end = cards(studio.client.get("/batches/b1?page=99").text)
    assert [c["data-key"] for c in past_the_end] == [s.key for s in KEPT[120:]]
    assert "SKU-149" not in studio.client.get("/batches/b1?page=3").text  # removed


def test_sorting_by_score_puts_unscored_articles_last_both_ways(studio):
    login(studio)
    scored = sorted((s for s in KEPT if s.score is not None), key=lambda s: (s.score, s.index))
    ascending = cards(studio.client.get("/batches/b1?sort=score").text)
    assert [float(c["data-score"]) for c in ascending] == [s.score for s in scored[:60]]
    descending = cards(studio.client.get("/batches/b1?sort=score_desc").text)
    assert float(descending[0]["data-score"]) == max(s.score for s in scored)
    last = cards(studio.client.get("/batches/b1?sort=score_desc&page=3").text)
    assert last[-1]["data-score"] == "" and last[-1]["data-status"] == "failed"


def test_the_below_filter_takes_a_threshold_else_the_batch_minimum(studio):
    login(studio)
    page = studio.client.get("/batches/b1?filter=below&below=0.15")
    assert [c["data-key"] for c in cards(page.text)] == expected(
        lambda s: s.score is not None and s.score < 0.15
    )
    assert all("below" in c["class"].split() for c in cards(page.text))
    nonsense = studio.client.get("/batches/b1?filter=below&below=abc&sort=nope&page=x")
    assert nonsense.status_code == 200
    assert total_of(nonsense.text) == len(expected(FILTERS["below"]))


def test_cards_carry_name_text_key_score_status_review_attempt_and_a_thumbnail(studio):
    login(studio)
    card = cards(studio.client.get("/batches/b1").text)[0]
    first = studio.client.get("/batches/b1").text.split('<article class="card')[1]
    assert re.search(r'<dt>attempt</dt><dd class="attempt-number">3</dd>', first)
    assert card == card | {
        "data-article-id": str(studio.ids["SKU-000"]),
        "data-key": "SKU-000",
        "data-score": "0.1",
        "data-status": "done",
        "data-review": "approved",
    }
    text = studio.client.get("/batches/b1").text
    assert "Seidenbluse 0" in text and "Leichte Seidenbluse Nummer 0" in text
    thumbs = [a["src"] for a in Elements(text).find("img", "thumb")]
    with studio.sessions() as session:
        best = session.scalar(
            select(Render.id).where(Render.article_id == studio.ids["SKU-000"], Render.attempt == 3)
        )
    assert thumbs[0] == f"/renders/{best}/thumb"


def test_catalog_text_is_escaped_everywhere(studio):
    login(studio)
    for path in ("/batches/b1", f"/articles/{studio.ids['SKU-003']}"):
        text = studio.client.get(path).text
        assert HOSTILE_NAME not in text
        assert "&lt;script&gt;alert(" in text


def test_a_contact_sheet_page_reads_the_articles_with_one_count_and_one_page_query(studio):
    login(studio)
    statements = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(studio.engine, "before_cursor_execute", listen)
    try:
        for number in (1, 3):
            statements.clear()
            assert studio.client.get(f"/batches/b1?page={number}&sort=score").status_code == 200
            reading_articles = [s for s in statements if "articles" in s]
            assert len(reading_articles) == 2, reading_articles
            assert "count(" in reading_articles[0].lower()
            assert "LIMIT" in reading_articles[1]
    finally:
        event.remove(studio.engine, "before_cursor_execute", listen)


def test_reviewers_get_the_approve_selected_form_and_only_admins_the_bulk_forms(studio):
    login(studio, REVIEWER)
    text = studio.client.get("/batches/b1").text
    assert 'id="approve-selected-form"' in text and 'id="bulk-regenerate-form"' not in text
    assert 'href="/batches/b1/approved.zip"' in text
    studio.client.cookies.clear()
    login(studio, ADMIN)
    text = studio.client.get("/batches/b1").text
    assert 'id="bulk-regenerate-form"' in text and 'id="bulk-approve-form"' in text


# The article page


def test_the_article_page_shows_texts_attributes_prompts_attempts_and_history(studio):
    login(studio)
    article_id = studio.ids["SKU-000"]
    page = studio.client.get(f"/articles/{article_id}")
    assert page.status_code == 200
    elements = Elements(page.text)
    attempts = elements.find("figure", "attempt")
    assert [a["data-attempt"] for a in attempts] == ["1", "2", "3"]
    assert attempts[2]["data-score"] == "0.1" and "published" in attempts[2]["class"]
    assert "seed 1003" in page.text and "tiny-flux + fashion-lora" in page.text
    inputs = {a["name"]: a["value"] for t, a in elements.tags if t == "input" and "name" in a}
    assert inputs["attr.product_type"] == "blouse"
    assert inputs["attr.color_material_details"] == "red silk"
    for form in ("approve-form", "reject-form", "attributes-form", "prompt-form"):
        assert f'id="{form}"' in page.text
        inside = page.text.split(f'id="{form}"')[1].split("</form>")[0]
        assert '<input type="hidden" name="attempt" value="3">' in inside, form
    assert "Leichte Seidenbluse" in page.text and "Light silk blouse number 0" in page.text
    assert "Product image of a blouse" in page.text
    history = elements.find("tr", "history-entry")
    assert [(h["data-action"], h["data-user"]) for h in history] == [("edit_prompt", REVIEWER)]
    assert "a blouse" in page.text


def test_the_article_state_says_status_attempts_and_latest_score_and_changes_with_them(studio):
    login(studio)
    article_id = studio.ids["SKU-000"]
    first = studio.client.get(f"/articles/{article_id}/state.json").json()
    assert first | {"version": None} == {
        "id": article_id,
        "status": "done",
        "review_status": "approved",
        "clip_score": 0.1,
        "renders": 3,
        "latest_attempt": 3,
        "latest_score": 0.1,
        "version": None,
    }
    with studio.sessions() as session:
        image = attempt_png(studio.output, SPECS[0], 4)
        session.add(new_render(article_id, 4, image, 0.33))
        session.commit()
    later = studio.client.get(f"/articles/{article_id}/state.json").json()
    assert (later["renders"], later["latest_score"]) == (4, 0.33)
    assert later["version"] != first["version"]
    live = studio.client.get(f"/articles/{article_id}/live").text
    assert [a["data-attempt"] for a in Elements(live).find("figure", "attempt")][-1] == "4"
    assert studio.client.get("/articles/999999/state.json").status_code == 404


def test_an_unknown_or_removed_article_or_batch_is_a_404(studio):
    login(studio)
    assert studio.client.get("/articles/999999").status_code == 404
    assert studio.client.get(f"/articles/{studio.ids['SKU-149']}").status_code == 404
    assert studio.client.get("/batches/nope").status_code == 404


# Images and the archive


def test_thumbnails_are_256_pixel_jpegs_cached_under_the_output_folder(studio):
    login(studio)
    with studio.sessions() as session:
        render = session.scalar(select(Render).where(Render.article_id == studio.ids["SKU-000"]))
    response = studio.client.get(f"/renders/{render.id}/thumb")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (256, 171))
    cached = list((studio.output / ".thumbs").glob("*.jpg"))
    assert len(cached) == 1
    assert studio.client.get(f"/renders/{render.id}/thumb").content == cached[0].read_bytes()
    full = studio.client.get(f"/renders/{render.id}/image")
    assert full.headers["content-type"] == "image/png"
    assert full.content == Path(render.image_path).read_bytes()


def test_a_missing_render_or_image_file_is_a_404(studio):
    login(studio)
    with studio.sessions() as session:
        render = session.scalar(select(Render).where(Render.article_id == studio.ids["SKU-001"]))
    Path(render.image_path).unlink()
    assert studio.client.get(f"/renders/{render.id}/thumb").status_code == 404
    assert studio.client.get(f"/renders/{render.id}/image").status_code == 404
    assert studio.client.get("/renders/999999/thumb").status_code == 404


def test_the_approved_zip_holds_the_approved_pictures_and_their_export_sheet(studio):
    login(studio)
    response = studio.client.get("/batches/b1/approved.zip")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    approved = [s for s in KEPT if s.review == "approved"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        names = sorted(bundle.namelist())
        assert names == sorted(["approved.csv", *(f"images/stem{s.index}.png" for s in approved)])
        sheet = bundle.read("approved.csv").decode("utf-8-sig")
        picture = bundle.read(f"images/stem{approved[0].index}.png")
    rows = list(csv.DictReader(io.StringIO(sheet)))
    assert [r["key"] for r in rows] == [s.key for s in approved]
    assert {r["reviewed_by"] for r in rows} == {ADMIN}
    # Where each published picture lies in the studio's output folder, as `farm export` says.
    assert rows[0]["image_path"] == str(studio.output / BATCH / f"stem{approved[0].index}.png")
    assert picture == (studio.output / BATCH / f"stem{approved[0].index}.png").read_bytes()
    assert not list(studio.output.glob(".review-zip-*"))  # the scratch folder is gone


def test_an_article_page_links_to_the_other_views_of_its_row(studio):
    key = KEPT[0].key
    detail, back = add_view(studio, key, "detail"), add_view(studio, key, "back")
    login(studio)
    page = studio.client.get(f"/articles/{studio.ids[key]}").text
    views = re.search(r'<nav class="views" id="views">(.*?)</nav>', page, re.S).group(1)
    assert re.findall(r'href="/articles/(\d+)" data-view="(\w+)"', views) == [
        (str(back), "back"),
        (str(detail), "detail"),
    ]
    assert "<strong>front</strong>" in views
    alone = studio.client.get(f"/articles/{studio.ids[KEPT[1].key]}").text
    assert 'id="views"' not in alone


def test_the_zip_keeps_both_views_of_a_row_under_their_own_names(studio):
    key = next(s.key for s in KEPT if s.review == "approved")
    with studio.sessions() as session:
        front = session.get(Article, studio.ids[key])
    back_stem = view_stem(front.file_stem, "back")
    back_image = studio.output / BATCH / f"{back_stem}.png"
    back_image.write_bytes(png((32, 32), (1, 2, 3)))
    add_view(studio, key, "back", image_path=str(back_image))
    login(studio)
    response = studio.client.get("/batches/b1/approved.zip")
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        names = set(bundle.namelist())
        assert f"images/{front.file_stem}.png" in names
        assert bundle.read(f"images/{back_stem}.png") == back_image.read_bytes()


def test_the_zip_pairs_sheet_rows_with_articles_by_key_and_view_not_by_position(
    studio, monkeypatch
):
    export_rows = downloads.export_rows
    monkeypatch.setattr(downloads, "export_rows", lambda s, b, o: export_rows(s, b, o)[::-1])
    login(studio)
    response = studio.client.get("/batches/b1/approved.zip")
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        rows = list(csv.DictReader(io.StringIO(bundle.read("approved.csv").decode("utf-8-sig"))))
    by_key = {s.key: s for s in KEPT}
    assert [r["key"] for r in rows] == [s.key for s in KEPT if s.review == "approved"]
    assert all(r["archive_image"] == f"images/stem{by_key[r['key']].index}.png" for r in rows)


def test_the_zip_is_written_after_the_database_session_is_closed(studio, monkeypatch):
    write_archive = downloads.write_archive
    open_connections = []

    def spying(*args):
        open_connections.append(studio.engine.pool.checkedout())
        return write_archive(*args)

    monkeypatch.setattr(downloads, "write_archive", spying)
    login(studio)
    assert studio.client.get("/batches/b1/approved.zip").status_code == 200
    assert open_connections == [0]
