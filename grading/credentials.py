"""Machine secrets: the credentials of LMS and grader accounts, checked in microseconds.

LMS and grader accounts are machines. A person's password needs a slow hash (PBKDF2, a million rounds: about
0.4 s on a 2-core machine, seconds when a watcher's threads all log in at once) because people choose
guessable passwords. A generated secret of 256 random bits needs none: nobody can search 2**256 candidates,
however fast each is. So ``create_account --generate-secret`` makes one, prints it once, and stores
``gq_hmac_sha256$<salt>$<HMAC-SHA256(server key, salt + secret)>``; a login computes one HMAC and compares it in
constant time. The server key (``GRADEQUEUE["CREDENTIAL_KEY"]``, from ``GRADEQUEUE_CREDENTIAL_KEY``, else
derived from ``DJANGO_SECRET_KEY``) is not in the database, so a copy of the database alone cannot even test a
guess offline. Changing the key invalidates every generated secret (generate new ones).

Passwords people chose keep Django's default hasher. ``MachineSecretHasher`` is also registered in
``PASSWORD_HASHERS`` (after the default) so that the admin can name the algorithm of such an account; the
login backend checks these hashes here and never lets Django "upgrade" one to the default hasher.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import BasePasswordHasher, mask_hash
from django.utils.crypto import salted_hmac

from grading.conf import setting

ALGORITHM = "gq_hmac_sha256"
SECRET_BYTES = 32  # 256 bits


def generate_secret() -> str:
    """A new machine secret: 256 random bits, URL-safe text of 43 characters."""
    return secrets.token_urlsafe(SECRET_BYTES)


def server_key() -> bytes:
    configured = str(setting("CREDENTIAL_KEY") or "")
    if configured:
        return configured.encode("utf-8")
    # Derived, so that a deployment that sets only DJANGO_SECRET_KEY works; a separate purpose string keeps
    # this key apart from every other use of the secret key.
    return salted_hmac(
        "gradequeue.credentials.machine-secret", "server-key", settings.SECRET_KEY, algorithm="sha256"
    ).digest()


def _digest(secret: str, salt: str) -> str:
    message = f"{salt}${secret}".encode("utf-8", "surrogatepass")
    return hmac.new(server_key(), message, hashlib.sha256).hexdigest()


def make_hash(secret: str) -> str:
    """The stored form of ``secret`` (what goes into ``User.password``)."""
    salt = secrets.token_hex(8)
    return f"{ALGORITHM}${salt}${_digest(secret, salt)}"


def is_machine_hash(encoded: str) -> bool:
    return encoded.startswith(ALGORITHM + "$")


def check(secret: str, encoded: str) -> bool:
    """Whether ``secret`` is the one ``encoded`` was made from (constant time in the secret)."""
    algorithm, _, rest = encoded.partition("$")
    salt, _, expected = rest.partition("$")
    if algorithm != ALGORITHM or not salt or not expected:
        return False
    return hmac.compare_digest(_digest(secret, salt).encode("ascii"), expected.encode("ascii", "replace"))


class MachineSecretHasher(BasePasswordHasher):
    """Django's hasher interface for machine secrets (see the module docstring): never for chosen passwords."""

    algorithm = ALGORITHM

    def salt(self) -> str:
        return secrets.token_hex(8)

    def encode(self, password: str, salt: str) -> str:
        return f"{ALGORITHM}${salt}${_digest(password, salt)}"

    def decode(self, encoded: str) -> dict[str, Any]:
        algorithm, salt, digest = encoded.split("$", 2)
        return {"algorithm": algorithm, "salt": salt, "hash": digest}

    def verify(self, password: str, encoded: str) -> bool:
        return check(password, encoded)

    def safe_summary(self, encoded: str) -> dict[Any, Any]:
        decoded = self.decode(encoded)
        return {
            "algorithm": decoded["algorithm"],
            "salt": mask_hash(decoded["salt"]),
            "hash": mask_hash(decoded["hash"]),
        }

    def must_update(self, encoded: str) -> bool:
        return False

    def harden_runtime(self, password: str, encoded: str) -> None:
        return None
