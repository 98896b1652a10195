"""A protocol-level XQueue client for the tests, behaving like xqueue-watcher and the LMS over real HTTP.

It follows xqueue-watcher's habits: a login POST of form fields, session cookies replayed, re-login when a
call answers 302, ``block=true`` on get_submission, and (for 2026 watchers) a GET of the login page first,
then ``X-CSRFToken`` and ``Referer`` on every request.
"""

from __future__ import annotations

import json
from typing import Any

import requests


class XQueueClient:
    def __init__(
        self, base_url: str, username: str, password: str, *, csrf_prelude: bool = False, timeout: float = 5.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.csrf_prelude = csrf_prelude
        self.timeout = timeout
        self.session = requests.Session()
        self.logins = 0

    def _url(self, name: str) -> str:
        return f"{self.base_url}/xqueue/{name}/"

    def _headers(self) -> dict[str, str]:
        if not self.csrf_prelude:
            return {}
        token = self.session.cookies.get("csrftoken") or self.session.cookies.get("edx-csrftoken")
        headers = {"Referer": self.base_url + "/"}
        if token:
            headers["X-CSRFToken"] = token
        return headers

    def login(self) -> dict[str, Any]:
        if self.csrf_prelude:
            self.session.get(self._url("login"), timeout=self.timeout)
        self.logins += 1
        reply = self.session.post(
            self._url("login"),
            data={"username": self.username, "password": self.password},
            headers=self._headers(),
            timeout=self.timeout,
        )
        reply.raise_for_status()
        return reply.json()

    def _call(self, method: str, name: str, **kwargs: Any) -> dict[str, Any]:
        for _ in range(2):
            reply = self.session.request(
                method,
                self._url(name),
                headers=self._headers(),
                timeout=self.timeout,
                allow_redirects=False,
                **kwargs,
            )
            if reply.status_code in (301, 302):
                self.login()
                continue
            reply.raise_for_status()
            return reply.json()
        raise AssertionError(f"{name}: still redirected after logging in")

    def get_queuelen(self, queue: str) -> dict[str, Any]:
        return self._call("GET", "get_queuelen", params={"queue_name": queue})

    def get_submission(self, queue: str) -> dict[str, Any]:
        return self._call("GET", "get_submission", params={"queue_name": queue, "block": "true"})

    def put_result(self, header: str, body: str) -> dict[str, Any]:
        return self._call("POST", "put_result", data={"xqueue_header": header, "xqueue_body": body})

    def submit(self, header: dict[str, Any] | str, body: str, files: dict[str, bytes] | None = None) -> dict[str, Any]:
        header_text = header if isinstance(header, str) else json.dumps(header)
        multipart = {name: (name, content) for name, content in (files or {}).items()} or None
        return self._call("POST", "submit", data={"xqueue_header": header_text, "xqueue_body": body}, files=multipart)


def lms_body(response: str = "print('hello')", payload: str = '{"grader": "g.py"}') -> str:
    return json.dumps(
        {
            "grader_payload": payload,
            "student_info": json.dumps(
                {"anonymous_student_id": "abc", "submission_time": "20261125103000", "random_seed": 1}
            ),
            "student_response": response,
        }
    )


def grade(correct: bool = True, score: float = 1.0, msg: str = "<p>Good job</p>") -> str:
    return json.dumps({"correct": correct, "score": score, "msg": msg})
