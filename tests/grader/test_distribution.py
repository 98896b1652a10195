"""The grader SDK (``grader/``) as a distribution of its own, and the one definition of its messages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "grader" / "gradequeue_grader" / "protocol.py"
# The server's code, and the benchmarks that drive it: none of it may spell a message name of its own.
SERVER_SOURCES = ["celery_app.py", "manage.py", "config", "grading", "tasks", "bench", "grader"]


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_grader_installs_into_a_fresh_venv_without_django_and_runs(tmp_path: Path) -> None:
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = str(target / "bin" / "python")
    # Nothing of the checkout or of this test run's environment may leak into the fresh venv.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    # A copy, as a grader machine gets it: pip builds in the source tree and would leave build/ in the checkout.
    source = shutil.copytree(ROOT / "grader", tmp_path / "grader", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    installed = run([python, "-m", "pip", "install", "--quiet", str(source)], tmp_path, env)
    assert installed.returncode == 0, installed.stderr

    requires = run([python, "-m", "pip", "show", "gradequeue-grader"], tmp_path, env)
    assert "Requires: celery, kombu" in requires.stdout.splitlines()

    no_django = run([python, "-c", "import django"], tmp_path, env)
    assert no_django.returncode == 1
    assert "No module named 'django'" in no_django.stderr

    where = run([python, "-c", "import gradequeue_grader.protocol as p; print(p.__file__)"], tmp_path, env)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(target)), where.stdout

    for command in (
        [python, "-m", "gradequeue_grader", "--help"],
        [str(target / "bin" / "gradequeue-grader"), "--help"],
    ):
        shown = run(command, tmp_path, env)
        assert shown.returncode == 0, shown.stderr
        assert "usage: python -m gradequeue_grader" in shown.stdout
        assert "--function FUNCTION" in shown.stdout


def test_task_names_are_the_wire_contract_with_deployed_graders() -> None:
    from gradequeue_grader import protocol

    assert protocol.GRADE_TASK == "gradequeue.grade"
    assert protocol.RECORD_TASK == "grading.record_result"
    assert protocol.DEFAULT_REPLY_TO == {"exchange": "gradequeue", "routing_key": "gradequeue"}
    message = protocol.grade_message(7, "k-7", "body", "{}", {"exchange": "gq", "routing_key": "gq"})
    assert message == {
        "submission_id": 7,
        "submission_key": "k-7",
        "xqueue_body": "body",
        "xqueue_files": "{}",
        "reply_to": {"exchange": "gq", "routing_key": "gq"},
    }
    assert protocol.reply_args(7, "k-7", '{"correct": true}', "g@h") == [7, "k-7", '{"correct": true}', "g@h"]


def test_the_server_registers_the_reply_task_under_the_protocol_name() -> None:
    from celery_app import app

    app.loader.import_default_modules()
    assert app.tasks["grading.record_result"].name == "grading.record_result"


def test_message_names_are_spelled_only_in_the_protocol_module() -> None:
    spelled = re.compile(r"""["'](gradequeue\.grade|grading\.record_result)["']""")
    found = []
    for entry in SERVER_SOURCES:
        path = ROOT / entry
        for source in [path] if path.is_file() else sorted(path.rglob("*.py")):
            if ".venv" in source.parts or source == PROTOCOL:
                continue
            for number, line in enumerate(source.read_text().splitlines(), 1):
                if spelled.search(line):
                    found.append(f"{source.relative_to(ROOT)}:{number}")
    assert found == []
    assert len(spelled.findall(PROTOCOL.read_text())) == 2
