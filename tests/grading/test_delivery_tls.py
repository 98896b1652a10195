"""Grades go to the LMS over verified TLS only: an untrusted certificate gets no grade."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from grading import delivery, lifecycle
from grading.models import Status, Submission
from tests.conftest import submit
from tests.lms import FakeLMS
from tests.xqclient import grade


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "lms.crt", folder / "lms.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_lms(tmp_path: Path) -> Iterator[tuple[FakeLMS, Path]]:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    lms = FakeLMS(tls=context).start()
    yield lms, cert
    lms.stop()


def graded_submission(queue: Any, lms_user: Any, grader_user: Any, callback_url: str) -> lifecycle.DeliveryClaim:
    submission = submit(queue, lms_user, callback_url=callback_url)
    lease = lifecycle.lease_next(queue, grader_user)
    assert lease is not None
    assert lifecycle.accept_result(submission.pk, lease.key, grade(), grader_user, [queue.pk]) is (
        lifecycle.ResultOutcome.ACCEPTED
    )
    claim = lifecycle.score_and_claim(submission.pk)
    assert claim is not None
    return claim


def test_a_grade_is_not_posted_to_an_lms_whose_certificate_is_not_trusted(
    tls_lms: tuple[FakeLMS, Path], queue: Any, lms_user: Any, grader_user: Any, monkeypatch: Any
) -> None:
    lms, _cert = tls_lms
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    claim = graded_submission(queue, lms_user, grader_user, lms.callback_url())
    pk = claim.submission_id
    assert delivery.send(claim) is lifecycle.DeliveryOutcome.RETRY
    assert lms.callbacks == []
    event = Submission.objects.get(pk=pk).events.last()
    assert event is not None and "CERTIFICATE_VERIFY_FAILED" in event.details["error"]


def test_a_grade_is_posted_when_the_lms_certificate_is_trusted(
    tls_lms: tuple[FakeLMS, Path], queue: Any, lms_user: Any, grader_user: Any, monkeypatch: Any
) -> None:
    lms, cert = tls_lms
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    claim = graded_submission(queue, lms_user, grader_user, lms.callback_url())
    pk = claim.submission_id
    assert delivery.send(claim) is lifecycle.DeliveryOutcome.DELIVERED
    assert [cb.body for cb in lms.delivered()] == [grade()]
    assert Submission.objects.get(pk=pk).status == Status.DELIVERED
