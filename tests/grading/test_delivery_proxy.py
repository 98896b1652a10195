"""Grades go through the HTTP proxy the environment names, as with any requests client, and straight to an
LMS that NO_PROXY lists."""

from __future__ import annotations

import base64

import pytest
from django.utils import timezone

from grading import delivery, lifecycle
from tests.lms import FakeLMS, free_port

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def claim_for(url: str) -> lifecycle.DeliveryClaim:
    return lifecycle.DeliveryClaim(1, "graded", 1, url, '{"lms_key": "k"}', '{"correct": true}', timezone.now())


@pytest.fixture
def clean_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_a_grade_goes_through_the_proxy_and_not_through_it_for_no_proxy_hosts(
    clean_proxy_environment: pytest.MonkeyPatch,
) -> None:
    env = clean_proxy_environment
    proxy, lms = FakeLMS().start(), FakeLMS().start()  # a proxy receives the full URL as its request target
    try:
        env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        status, error, _ms = delivery._post(claim_for("http://lms.invalid/courses/c1/grade"))
        assert (status, error) == (200, "")
        assert [cb.path for cb in proxy.callbacks] == ["http://lms.invalid/courses/c1/grade"]
        assert proxy.callbacks[0].body == '{"correct": true}'

        # Read again when the setting changes: NO_PROXY now lists the LMS, which is posted to directly.
        env.setenv("NO_PROXY", "127.0.0.1")
        status, error, _ms = delivery._post(claim_for(f"http://127.0.0.1:{lms.port}/courses/c1/grade"))
        assert (status, error) == (200, "")
        assert [cb.path for cb in lms.callbacks] == ["/courses/c1/grade"]
        assert len(proxy.callbacks) == 1

        # No proxy set: straight to the LMS.
        env.delenv("HTTP_PROXY")
        env.delenv("NO_PROXY")
        assert delivery._post(claim_for(f"http://127.0.0.1:{lms.port}/again"))[0] == 200
        assert [cb.path for cb in lms.callbacks][-1] == "/again"
        assert len(proxy.callbacks) == 1
    finally:
        proxy.stop()
        lms.stop()


def test_credentials_in_the_callback_or_proxy_url_are_sent_as_basic_auth(
    clean_proxy_environment: pytest.MonkeyPatch,
) -> None:
    env = clean_proxy_environment
    proxy, lms = FakeLMS().start(), FakeLMS().start()
    try:
        assert delivery._post(claim_for(f"http://lms%40x:p%3Ass@127.0.0.1:{lms.port}/grade"))[0] == 200
        assert lms.callbacks[0].path == "/grade"
        assert lms.callbacks[0].authorization == "Basic " + base64.b64encode(b"lms@x:p:ss").decode()

        env.setenv("HTTP_PROXY", f"http://relay:secret@127.0.0.1:{proxy.port}")
        assert delivery._post(claim_for("http://lms.invalid/graded"))[0] == 200
        assert proxy.callbacks[0].path == "http://lms.invalid/graded"
        assert proxy.callbacks[0].proxy_authorization == "Basic " + base64.b64encode(b"relay:secret").decode()
        assert proxy.callbacks[0].authorization == ""
        # The LMS's own credentials go to the proxy as a header, not inside the URL.
        assert delivery._post(claim_for("http://lms:pw@lms.invalid/graded/2"))[0] == 200
        assert proxy.callbacks[1].path == "http://lms.invalid/graded/2"
        assert proxy.callbacks[1].authorization == "Basic " + base64.b64encode(b"lms:pw").decode()
    finally:
        proxy.stop()
        lms.stop()


def test_an_lms_that_cannot_be_reached_is_an_error_not_an_exception(
    clean_proxy_environment: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    status, error, _ms = delivery._post(claim_for(f"http://127.0.0.1:{port}/grade"))
    assert status is None
    assert "refused" in error.lower()
    status, error, _ms = delivery._post(claim_for("not a url"))
    assert status is None and error
