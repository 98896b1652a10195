"""Tutor and the tutor-gradequeue plugin, installed with pip into virtualenvs of the tests' own.

Tutor (and tutor-xqueue, for the test of the two together) go into one virtualenv cached between runs, keyed by
the Python version and the version ranges below, under the system temp dir (``GRADEQUEUE_TUTOR_CACHE`` moves
it): installing Tutor takes minutes, so CI pays for it once. Each test session then makes a small virtualenv
of its own that sees the cached one's packages (a ``.pth`` file) and pip-installs the plugin from this
checkout into it, editable, as the plugin's README says, so that the cache never holds one checkout's plugin.

No Docker engine is needed: ``docker`` is a recording stand-in on PATH (``fake_docker``), and the rendered
compose files are validated by ``docker-compose config``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "tutor-gradequeue"
REQUIREMENTS = ["tutor>=22,<23", "tutor-xqueue>=22,<23", "setuptools>=69"]


def cache_dir() -> Path:
    default = Path(tempfile.gettempdir()) / "gradequeue-tutor"
    return Path(os.environ.get("GRADEQUEUE_TUTOR_CACHE", str(default)))


def _site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_tutor() -> Path:
    """The virtualenv holding Tutor, built once per key (concurrent sessions wait for the first)."""
    key = hashlib.sha256(json.dumps([sys.version_info[:2], REQUIREMENTS]).encode()).hexdigest()[:12]
    venv = cache_dir() / f"py{sys.version_info.major}.{sys.version_info.minor}-{key}"
    marker = venv / ".complete"
    if marker.exists():
        return venv
    with _locked(cache_dir() / f"{venv.name}.lock"):
        if marker.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # a build that died half-way
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *REQUIREMENTS,
            ],
            check=True,
        )
        marker.write_text(json.dumps(REQUIREMENTS))
    return venv


def session_venv(where: Path) -> Path:
    """A virtualenv that sees the cached Tutor and has this checkout's plugin pip-installed (editable)."""
    base = cached_tutor()
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (_site_packages(venv) / "gradequeue-tutor-cache.pth").write_text(str(_site_packages(base)) + "\n")
    subprocess.run(
        [
            str(base / "bin" / "python"),
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-e",
            str(PLUGIN),
        ],
        check=True,
    )
    # The ``tutor`` command, as pip would write it for this interpreter (the cached one's belongs to the cache).
    tutor = venv / "bin" / "tutor"
    tutor.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom tutor.commands.cli import main\nsys.exit(main())\n"
    )
    tutor.chmod(0o755)
    return venv


FAKE_DOCKER = r'''#!{python}
"""A stand-in for the docker CLI: records each call as one JSON line; runs nothing unless told to."""
import json, os, subprocess, sys

with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
if sys.argv[1:2] == ["compose"] and sys.argv[-3:] == ["ls", "--format", "json"]:
    print("[]")  # no compose project is running (Tutor asks before it starts one)
hook = os.environ.get("FAKE_DOCKER_RUN")
if hook and sys.argv[1:2] == ["compose"] and "run" in sys.argv:
    sys.exit(subprocess.run([sys.executable, hook, *sys.argv[1:]]).returncode)
'''


def fake_docker(where: Path) -> Path:
    """A folder holding a ``docker`` that records its calls (put it first on PATH)."""
    folder = where / "fake-bin"
    folder.mkdir(parents=True, exist_ok=True)
    docker = folder / "docker"
    docker.write_text(FAKE_DOCKER.replace("{python}", sys.executable))
    docker.chmod(0o755)
    return folder
