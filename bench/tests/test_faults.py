"""The fault campaign's own instruments (bench/faults.py): how a row is counted, and the LMS listener whose
behaviour a scenario switches, over real HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import faults
import pytest


def test_a_row_counts_grades_received_once_twice_or_never_and_the_last_owed_one_after_the_fault() -> None:
    accepted = {"0": 1.0, "1": 2.0, "2": 12.0}  # "2" was accepted after the fault had ended
    received = {"0": [3.0], "1": [25.5, 30.0], "2": [40.0], "99": [5.0]}  # "99" was never accepted
    row = faults.tally(accepted, received, fault_end=10.0)
    assert row == {
        "accepted": 3,
        "delivered_once": 2,
        "duplicates": 1,
        "duplicates_per_1000": 333.3,
        "lost": 0,
        "lost_numbers": [],
        "recover_s": 15.5,
    }


def test_a_row_with_a_grade_never_received_has_no_time_to_recover() -> None:
    accepted = {"0": 1.0, "10": 2.0, "2": 3.0, "3": 4.0}
    received = {"2": [4.0], "3": [5.0, 6.0, 7.0]}
    row = faults.tally(accepted, received, fault_end=10.0)
    assert row == {
        "accepted": 4,
        "delivered_once": 1,
        "duplicates": 2,
        "duplicates_per_1000": 500.0,
        "lost": 2,
        "lost_numbers": ["0", "10"],
        "recover_s": None,
    }


def test_when_every_owed_grade_arrived_during_the_fault_recovery_is_zero() -> None:
    row = faults.tally({"0": 1.0}, {"0": [4.0]}, fault_end=10.0)
    assert row["recover_s"] == 0.0


def test_each_repeat_is_put_in_the_window_its_earlier_post_fell_in() -> None:
    # (number, key, arrived, taken in, answered): "1" was at the LMS (taken in, not yet answered) when the
    # worker was killed (10.05), "2" had been answered 3 ms before it, "3" was sent again with no kill near,
    # "4" arrived once, "9" was never accepted, and "5" got no answer (the sender gone): the pool process
    # was killed (30.0) while the LMS held it; "6" reached the LMS 0.4 s after that kill (sent before it, taken
    # in late by a busy LMS).
    posts = [
        ("1", "k1", 10.0, 10.04, 10.101),
        ("2", "k2", 9.9, 10.0, 10.047),
        ("3", "k3", 20.0, 20.1, 20.1),
        ("4", "k4", 10.0, 10.1, 10.1),
        ("9", "k9", 10.0, 10.1, 10.1),
        ("5", "k5", 29.9, 30.05, None),
        ("6", "k6", 30.4, 30.5, 30.5),
        ("6", "k6", 90.4, 90.5, 90.5),
        ("1", "k1", 70.0, 70.1, 70.1),
        ("2", "k2", 71.0, 71.1, 71.1),
        ("3", "other", 50.0, 50.1, 50.1),
        ("9", "k9", 60.0, 60.1, 60.1),
        ("5", "k5", 80.0, 80.1, 80.1),
    ]
    kills = [("worker", 10.05), ("pool", 30.0)]
    counts, lines = faults.repeat_windows(posts, kills, {"1", "2", "3", "4", "5", "6"})
    assert dict(counts) == {"at_lms": 3, "answered": 1, "no_kill": 1}
    assert [(line["number"], line["window"], line["kill_after_s"], line["again_after_s"]) for line in lines] == [
        ("1", "at_lms", 0.05, 60.0),
        ("2", "answered", 0.15, 61.1),
        ("3", "no_kill", None, 30.0),
        ("5", "at_lms", 0.1, 50.1),
        ("6", "at_lms", -0.4, 60.0),
    ]
    assert [line["same_key"] for line in lines] == [True, True, False, True, True]


@pytest.fixture
def lms() -> Iterator[Any]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    listener = faults.LMS(port)
    listener.set_mode("ok", (0.0, 0.0))
    yield listener
    listener.stop()


def grade_form(correct: bool | None) -> str:
    body = json.dumps({"correct": correct, "score": 1 if correct else 0, "msg": "<p>x</p>"})
    return urllib.parse.urlencode({"xqueue_header": "{}", "xqueue_body": body})


def post(conn: http.client.HTTPConnection, number: str, correct: bool | None = True, key: str = "") -> int:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if key:
        headers["Idempotency-Key"] = key
    conn.request("POST", f"/cb/{number}", body=grade_form(correct), headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


def test_the_lms_counts_each_grade_it_answers_with_its_idempotency_key_and_notices_apart(lms: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", lms.port, timeout=5)
    assert post(conn, "7", key="k-7") == 200
    assert post(conn, "7", key="k-7") == 200  # the same kept-alive connection
    assert post(conn, "8", correct=None) == 200
    conn.close()
    assert {n: len(ts) for n, ts in lms.received.items()} == {"7": 2, "8": 1}
    assert lms.keys == {"7": ["k-7", "k-7"], "8": [""]}
    assert lms.notices == {"8"}


def test_the_lms_answering_503_counts_nothing_received(lms: Any) -> None:
    lms.set_mode("503")
    conn = http.client.HTTPConnection("127.0.0.1", lms.port, timeout=5)
    assert post(conn, "1") == 503
    assert post(conn, "2") == 503
    conn.close()
    assert lms.received == {}
    assert lms.answered_503 == 2


def test_the_lms_refusing_drops_idle_connections_refuses_new_ones_and_comes_back(lms: Any) -> None:
    idle = http.client.HTTPConnection("127.0.0.1", lms.port, timeout=5)
    assert post(idle, "1") == 200
    lms.set_mode("refuse")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        post(idle, "2")
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", lms.port), timeout=5)
    lms.set_mode("ok", (0.0, 0.0))
    conn = http.client.HTTPConnection("127.0.0.1", lms.port, timeout=5)
    assert post(conn, "3") == 200
    conn.close()
    assert sorted(lms.received) == ["1", "3"]


def test_a_grade_being_answered_when_the_lms_starts_refusing_gets_its_answer_and_counts(lms: Any) -> None:
    lms.set_mode("ok", (0.5, 0.5))
    statuses: list[int] = []
    conn = http.client.HTTPConnection("127.0.0.1", lms.port, timeout=5)
    sender = threading.Thread(target=lambda: statuses.append(post(conn, "5")))
    sender.start()
    for _ in range(400):  # until the request is in and its answer not yet out (at most 4 s)
        if lms.busy:
            break
        threading.Event().wait(0.01)
    assert lms.busy
    lms.set_mode("refuse")
    sender.join(5)
    conn.close()
    assert statuses == [200]
    assert list(lms.received) == ["5"]
