"""Access to the review studio: logging in and out, sessions and their revocation, CSRF, the
trusted proxy header, the read-only studio without users, cookie flags, security headers and
ids out of bounds."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Article, ReviewAction
from producer.review.users import add_user, remove_user
from tasks.exceptions import UserError
from tests.unit.review_studio import (
    ADMIN,
    PASSWORD,
    REVIEWER,
    Studio,
    csrf_of,
    login,
    make_studio,
    post,
)
from tests.unit.test_report import Elements


@pytest.mark.parametrize("https_only", [False, True])
def test_the_session_cookie_is_http_only_and_secure_when_served_through_https(tmp_path, https_only):
    studio = make_studio(tmp_path, https_only=https_only)
    cookie = studio.client.get("/login").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert ("secure" in cookie.split("; ")) is https_only


# Logging in and out


def test_a_user_with_the_right_password_is_logged_in_and_sees_their_name_and_role(studio):
    with studio.sessions() as session:
        add_user(session, "grete", "another good password", role="admin")
    response = login(studio, "grete", "another good password")
    assert response.status_code == 303 and response.headers["location"] == "/"
    page = studio.client.get("/")
    assert page.status_code == 200
    user = [a for t, a in Elements(page.text).tags if a.get("id") == "current-user"][0]
    assert (user["data-name"], user["data-role"]) == ("grete", "admin")
    assert 'id="logout-form"' in page.text


def test_a_wrong_password_or_an_unknown_name_shows_the_form_again_without_a_session(studio):
    for name, password in ((ADMIN, "wrong password"), ("nobody", PASSWORD)):
        response = login(studio, name, password)
        assert response.status_code == 401
        assert "unknown user or wrong password" in response.text
        assert 'id="login-form"' in response.text
    assert studio.client.get("/").status_code == 303


def test_login_goes_on_to_the_page_asked_for_but_never_to_another_site(studio):
    for target, expected in (("/batches/b1", "/batches/b1"), ("//evil.example", "/")):
        studio.client.cookies.clear()
        page = studio.client.get("/login")
        data = {"csrf": csrf_of(page.text), "name": ADMIN, "password": PASSWORD, "next": target}
        response = studio.client.post("/login", data=data)
        assert response.headers["location"] == expected


def replay(studio: Studio, cookies: dict, path: str = "/"):
    """GET ``path`` with exactly these cookies, as a copy of an old cookie would."""
    studio.client.cookies.clear()
    studio.client.cookies.update(cookies)
    return studio.client.get(path)


def test_logging_out_ends_the_session_and_every_copy_of_its_cookie(studio):
    login(studio)
    copied = dict(studio.client.cookies)
    assert replay(studio, copied).status_code == 200
    response = post(studio, "/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert studio.client.get("/").status_code == 303
    assert replay(studio, copied).status_code == 303
    assert replay(studio, copied, "/fragments/batches").status_code == 401


def test_a_new_password_ends_the_sessions_opened_with_the_old_one(studio):
    login(studio, REVIEWER)
    copied = dict(studio.client.cookies)
    with studio.sessions() as session:
        add_user(session, REVIEWER, "a brand new password", role="reviewer", replace=True)
    assert replay(studio, copied).status_code == 303
    login(studio, REVIEWER, "a brand new password")
    assert studio.client.get("/").status_code == 200


def test_a_user_removed_and_added_again_does_not_bring_old_cookies_back(studio):
    login(studio, REVIEWER)
    copied = dict(studio.client.cookies)
    with studio.sessions() as session:
        remove_user(session, REVIEWER)
        assert replay(studio, copied).status_code == 303
        add_user(session, REVIEWER, PASSWORD, role="reviewer")
    assert replay(studio, copied).status_code == 303


def test_an_old_cookie_replayed_at_logout_does_not_end_the_users_new_session(studio):
    login(studio)
    stale = dict(studio.client.cookies)
    post(studio, "/logout")
    login(studio)
    fresh = dict(studio.client.cookies)
    token = csrf_of(replay(studio, stale, "/login").text)
    studio.client.post("/logout", data={"csrf": token})
    assert replay(studio, fresh).status_code == 200


def test_anonymous_browsers_go_to_login_and_anonymous_data_requests_get_401(studio):
    page = studio.client.get("/batches/b1?page=2")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fbatches%2Fb1%3Fpage%3D2"
    article_id = studio.ids["SKU-000"]
    for path in (
        "/renders/1/thumb",
        "/renders/1/image",
        f"/articles/{article_id}/state.json",
        f"/articles/{article_id}/live",
        "/batches/b1/approved.zip",
        "/fragments/batches",
    ):
        assert studio.client.get(path).status_code == 401, path


POSTS = [
    "/login",
    "/logout",
    "/articles/{id}/approve",
    "/articles/{id}/reject",
    "/articles/{id}/attributes",
    "/articles/{id}/prompt",
    "/batches/b1/approve-selected",
    "/batches/b1/regenerate-below",
    "/batches/b1/approve-above",
]


def test_an_anonymous_post_with_a_valid_csrf_token_is_sent_to_login_and_changes_nothing(studio):
    article_id = studio.ids["SKU-001"]
    page = f"/articles/{article_id}"
    token = csrf_of(studio.client.get("/login").text)  # the anonymous session's own token
    response = studio.client.post(f"{page}/approve", data={"csrf": token, "back": page})
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next=%2Farticles%2F{article_id}"
    with studio.sessions() as session:
        assert session.get(Article, article_id).review_status is None
        assert session.scalars(select(ReviewAction.action)).all() == ["edit_prompt"]


@pytest.mark.parametrize("path", POSTS)
def test_every_post_without_the_session_csrf_token_is_refused(studio, path):
    login(studio)
    path = path.format(id=studio.ids["SKU-001"])
    form = {"name": ADMIN, "password": PASSWORD, "threshold": "0.5", "article": "1"}
    assert studio.client.post(path, data=form).status_code == 403
    assert studio.client.post(path, data=form | {"csrf": "forged"}).status_code == 403
    with studio.sessions() as session:
        assert session.scalars(select(ReviewAction.action)).all() == ["edit_prompt"]


@pytest.mark.parametrize("article_id", [str(2**31), str(2**63), "9" * 5000, "abc", "١٢", "-1"])
def test_ids_in_paths_that_no_row_can_have_are_a_404_not_a_server_error(studio, article_id):
    login(studio)
    for path in ("/articles/{}", "/articles/{}/state.json", "/renders/{}/thumb"):
        assert studio.client.get(path.format(article_id)).status_code == 404, path
    assert post(studio, f"/articles/{article_id}/approve").status_code == 404


# Without users, and behind a proxy


def test_without_users_a_loopback_studio_is_readable_but_every_action_is_refused(tmp_path):
    studio = make_studio(tmp_path, users=False)
    page = studio.client.get("/batches/b1")
    assert page.status_code == 200 and 'id="read-only-banner"' in page.text
    assert 'id="approve-selected-form"' not in page.text
    assert studio.client.get("/renders/1/thumb").status_code == 200
    article = f"/articles/{studio.ids['SKU-000']}"
    response = post(studio, f"{article}/approve", page=article)
    assert response.status_code == 403
    assert "farm review add-user NAME" in response.text


def test_without_users_a_studio_reachable_from_other_machines_shows_nothing(tmp_path):
    studio = make_studio(tmp_path, users=False, loopback=False)
    response = studio.client.get("/batches/b1")
    assert response.status_code == 403 and "farm review add-user NAME" in response.text


@pytest.mark.parametrize("peer", ["203.0.113.7", "testclient", "::ffff:10.0.0.1"])
def test_without_users_a_loopback_studio_shows_nothing_to_another_machine(tmp_path, peer):
    studio = make_studio(tmp_path, users=False, peer=peer)
    response = studio.client.get("/batches/b1")
    assert response.status_code == 403 and "farm review add-user NAME" in response.text


@pytest.mark.parametrize(
    "header",
    [{"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}, {"X-Real-IP": "::2"}],
)
def test_without_users_requests_a_local_proxy_forwards_are_refused(tmp_path, header):
    studio = make_studio(tmp_path, users=False, peer="::1")
    assert studio.client.get("/batches/b1").status_code == 200
    response = studio.client.get("/batches/b1", headers=header)
    assert response.status_code == 403 and "farm review add-user NAME" in response.text


def test_the_trusted_proxy_header_names_a_user_who_must_exist(tmp_path):
    studio = make_studio(tmp_path, auth_header="X-Forwarded-User")
    known = studio.client.get("/", headers={"X-Forwarded-User": REVIEWER})
    assert known.status_code == 200 and f'data-name="{REVIEWER}"' in known.text
    unknown = studio.client.get("/", headers={"X-Forwarded-User": "mallory"})
    assert unknown.status_code == 403
    assert studio.client.get("/").status_code == 303


PROXY_HEADER = "X-Forwarded-User"


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [("10.1.2.3", "10.0.0.0/8"), ("::ffff:10.1.2.3", "10.0.0.0/8"), ("fd00::5", "::1, fd00::/64")],
)
def test_the_proxy_header_is_believed_from_a_trusted_network(tmp_path, peer, trusted):
    studio = make_studio(tmp_path, auth_header=PROXY_HEADER, peer=peer, trusted_proxies=trusted)
    page = studio.client.get("/", headers={"X-Forwarded-User": ADMIN})
    assert page.status_code == 200 and f'data-name="{ADMIN}"' in page.text


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [("203.0.113.7", "127.0.0.1,::1"), ("testclient", "127.0.0.1"), ("127.0.0.1", "")],
)
def test_the_proxy_header_from_an_untrusted_peer_is_ignored(tmp_path, peer, trusted):
    studio = make_studio(tmp_path, auth_header=PROXY_HEADER, peer=peer, trusted_proxies=trusted)
    assert studio.client.get("/", headers={"X-Forwarded-User": ADMIN}).status_code == 303
    login(studio, REVIEWER)  # the cookie still works
    page = studio.client.get("/", headers={"X-Forwarded-User": ADMIN})
    assert page.status_code == 200 and f'data-name="{REVIEWER}"' in page.text


def test_the_proxy_header_is_ignored_when_none_is_configured(studio):
    assert studio.client.get("/", headers={"X-Forwarded-User": ADMIN}).status_code == 303
    assert studio.client.get("/", headers={"Remote-User": ADMIN}).status_code == 303


def test_a_trusted_proxy_that_is_not_an_address_stops_the_studio(tmp_path):
    with pytest.raises(UserError, match="not-an-ip"):
        make_studio(tmp_path, trusted_proxies="127.0.0.1, not-an-ip")


def test_pages_send_security_headers_and_load_nothing_from_elsewhere(studio):
    login(studio)
    page = studio.client.get(f"/articles/{studio.ids['SKU-000']}")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("/static/studio.css", "/static/studio.js"):
        assert studio.client.get(asset).status_code == 200
