"""The XQueue header, parsed in one place (grading.headers) for submit, put_result and imports."""

from __future__ import annotations

import json

import pytest

from grading import headers, text


def test_an_lms_header_keeps_its_text_and_takes_lms_key_as_text() -> None:
    sent = '{"lms_callback_url": "http://lms/cb", "lms_key": 17, "queue_name": "q", "extra": [1]}'
    assert headers.lms_header(sent) == headers.LmsHeader(
        text=sent, queue_name="q", lms_callback_url="http://lms/cb", lms_key="17"
    )


@pytest.mark.parametrize(
    ("sent", "why"),
    [
        ("{not json", "is not JSON"),
        ("[" * 100000, "is not JSON"),
        ('{"n": ' + "9" * 5000 + "}", "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('"text"', "is not a JSON object"),
        ('{"lms_callback_url": "http://lms/cb", "queue_name": "q"}', "lacks lms_callback_url, lms_key or queue_name"),
        (
            '{"lms_callback_url": "", "lms_key": "k", "queue_name": "q"}',
            "lacks lms_callback_url, lms_key or queue_name",
        ),
        (
            '{"lms_callback_url": "http://lms/cb", "lms_key": "k", "queue_name": 5}',
            "lacks lms_callback_url, lms_key or queue_name",
        ),
    ],
)
def test_what_is_not_an_lms_header_says_why(sent: str, why: str) -> None:
    with pytest.raises(headers.Invalid) as raised:
        headers.lms_header(sent)
    assert str(raised.value) == why


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (
            '{"lms_callback_url": "http://lms/cb", "lms_key": "k\\u0000", "queue_name": "q"}',
            "'xqueue_header' key 'lms_key' contains a NUL character (U+0000), which is not accepted",
        ),
        (
            '{"lms_callback_url": "http://lms/cb", "lms_key": "k", "queue_name": "q", "x": {"y": ["\\ud800"]}}',
            "'xqueue_header' key 'x' contains a lone surrogate (U+D800), which is not accepted",
        ),
        (
            '{"k\\u0000": 1, "lms_callback_url": "http://lms/cb", "lms_key": "k", "queue_name": "q"}',
            "A key of 'xqueue_header' contains a NUL character (U+0000), which is not accepted",
        ),
        # The character is refused before the missing keys are noticed.
        (
            '{"lms_key": "\\u0000"}',
            "'xqueue_header' key 'lms_key' contains a NUL character (U+0000), which is not accepted",
        ),
    ],
)
def test_a_refused_character_anywhere_in_a_header_is_refused_naming_the_key(sent: str, message: str) -> None:
    with pytest.raises(text.Refused) as raised:
        headers.lms_header(sent)
    assert str(raised.value) == message


def test_a_surrogate_pair_in_a_header_is_one_character_and_accepted() -> None:
    sent = '{"lms_callback_url": "http://lms/cb", "lms_key": "\\ud83d\\ude00", "queue_name": "q"}'
    assert headers.lms_header(sent).lms_key == "\U0001f600"


def test_the_json_apis_header_holds_its_extra_keys_and_the_three_fields() -> None:
    made = headers.new_lms_header("q", "http://lms/cb", "k", {"extra": 1, "queue_name": "spoofed"})
    assert json.loads(made.text) == {"extra": 1, "lms_callback_url": "http://lms/cb", "lms_key": "k", "queue_name": "q"}
    assert headers.lms_header(made.text) == made


def test_the_header_a_grader_is_handed_is_the_one_it_sends_back() -> None:
    handed = headers.grader_header_text(42, "a-lease-key")
    assert handed == '{"submission_id": 42, "submission_key": "a-lease-key"}'
    assert headers.grader_header(handed) == headers.GraderHeader(submission_id=42, submission_key="a-lease-key")


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ('{"submission_id": "42", "submission_key": "k"}', headers.GraderHeader(42, "k")),
        ('{"submission_id": " 42\\n", "submission_key": "k"}', headers.GraderHeader(42, "k")),
        ('{"submission_id": 42, "submission_key": "k", "extra": null}', headers.GraderHeader(42, "k")),
    ],
)
def test_a_grader_header_names_its_submission_in_digits_or_as_an_integer(
    sent: str, expected: headers.GraderHeader
) -> None:
    assert headers.grader_header(sent) == expected


@pytest.mark.parametrize(
    ("sent", "why"),
    [
        ("{oops", "is not JSON"),
        ("[42]", "is not a JSON object"),
        ('{"submission_id": "²", "submission_key": "k"}', "lacks submission_id or submission_key"),
        ('{"submission_id": "\uff11", "submission_key": "k"}', "lacks submission_id or submission_key"),
        ('{"submission_id": "' + "9" * 19 + '", "submission_key": "k"}', "lacks submission_id or submission_key"),
        ('{"submission_id": true, "submission_key": "k"}', "lacks submission_id or submission_key"),
        ('{"submission_id": -1, "submission_key": "k"}', "lacks submission_id or submission_key"),
        ('{"submission_id": 1, "submission_key": ""}', "lacks submission_id or submission_key"),
        ('{"submission_id": 1, "submission_key": 5}', "lacks submission_id or submission_key"),
    ],
)
def test_what_is_not_a_grader_header_says_why(sent: str, why: str) -> None:
    with pytest.raises(headers.Invalid) as raised:
        headers.grader_header(sent)
    assert str(raised.value) == why
