"""tutor-gradequeue: installed with pip next to Tutor 22, enabled, and its rendered environment checked.

No Docker engine: ``docker`` is a recording stand-in (tests/tutor/tutorenv.py), compose files are validated
with ``docker-compose config``, and the init tasks Tutor would run in containers are run here for real where
that is possible (the MySQL one against the test MariaDB, gradequeue's with this checkout's virtualenv).
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from tests.tutor.tutorenv import REPO, fake_docker, session_venv
from tests.xqueuedb import server_args

VERSION = "0.1.0"
IMAGE = f"gradequeue:{VERSION}"


class Tutor:
    """The ``tutor`` command of the session virtualenv, on a project root of its own."""

    def __init__(self, venv: Path, where: Path) -> None:
        self.venv = venv
        self.root = where / "tutor-root"
        self.log = where / "docker-calls.jsonl"
        self.bin = fake_docker(where)
        self.extra_env: dict[str, str] = {}

    def __call__(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "TUTOR_ROOT": str(self.root),
            "TUTOR_PLUGINS_ROOT": str(self.root / "plugins"),
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "FAKE_DOCKER_LOG": str(self.log),
            **self.extra_env,
        }
        result = subprocess.run(
            [str(self.venv / "bin" / "tutor"), *args],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"tutor {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def value(self, name: str) -> str:
        return self("config", "printvalue", name).stdout.strip()

    def env(self, *path: str) -> Path:
        return self.root.joinpath("env", *path)

    def docker_calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def compose_runs(self) -> dict[str, list[str]]:
        """Scripts run in job containers: {"mysql-job": [script, ...], ...}."""
        runs: dict[str, list[str]] = {}
        for call in self.docker_calls():
            if call[:1] == ["compose"] and "run" in call and call[-4:-1] == ["sh", "-e", "-c"]:
                runs.setdefault(call[-5], []).append(call[-1])
        return runs


@pytest.fixture(scope="session")
def tutor_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_venv(tmp_path_factory.mktemp("tutor-venv"))


def new_tutor(tutor_venv: Path, tmp_path_factory: pytest.TempPathFactory, *settings: str) -> Tutor:
    tutor = Tutor(tutor_venv, tmp_path_factory.mktemp("tutor"))
    tutor("config", "save", *(arg for setting in settings for arg in ("--set", setting)))
    tutor("plugins", "enable", "gradequeue")
    # Enabling renders the environment; saving then keeps the plugin's generated secrets in config.yml.
    tutor("config", "save")
    return tutor


@pytest.fixture(scope="module")
def tutor(tutor_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Tutor:
    """The README's steps: install (the session venv), config save, enable the plugin (which renders the env)."""
    return new_tutor(tutor_venv, tmp_path_factory)


def compose_config(tutor: Tutor, *files: str) -> dict[str, Any]:
    """``docker-compose config`` of these files (relative to env/), as Tutor combines them; fails if invalid."""
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is needed (Debian package docker-compose)"
    args = [docker_compose]
    for name in files:
        args += ["-f", str(tutor.env(name))]
    result = subprocess.run([*args, "config"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def env_file(tutor: Tutor) -> dict[str, str]:
    values = {}
    for line in tutor.env("plugins", "gradequeue", "apps", "gradequeue.env").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


# --- Installation and settings ----------------------------------------------------------------------------


def test_the_plugin_installs_with_pip_next_to_tutor_22_and_enables(tutor: Tutor) -> None:
    assert tutor("--version").stdout.startswith("tutor, version 22.")
    listed = [line.split() for line in tutor("plugins", "list").stdout.splitlines()]
    assert [cells[-2:] for cells in listed if cells[0] == "gradequeue"] == [["enabled", VERSION]]
    assert (tutor.venv / "bin" / "python").exists()


def test_every_setting_has_a_gradequeue_name_and_defaults_for_a_local_install(tutor: Tutor) -> None:
    assert tutor.value("GRADEQUEUE_HOST") == "gradequeue.local.openedx.io"
    assert tutor.value("GRADEQUEUE_DOCKER_IMAGE") == IMAGE
    assert tutor.value("GRADEQUEUE_SOURCE") == str(REPO)
    assert tutor.value("GRADEQUEUE_MYSQL_DATABASE") == "gradequeue"
    assert tutor.value("GRADEQUEUE_MYSQL_USERNAME") == "gradequeue"
    assert tutor.value("GRADEQUEUE_QUEUES") == "['openedx']"
    assert tutor.value("GRADEQUEUE_CALLBACK_HOSTS") == "['lms', 'local.openedx.io']"
    assert tutor.value("GRADEQUEUE_LMS_USERNAME") == "lms"
    saved = yaml.safe_load((tutor.root / "config.yml").read_text())
    # Generated once and kept in config.yml: every later render uses the same secrets.
    for name, length in [("SECRET_KEY", 32), ("MYSQL_PASSWORD", 16), ("LMS_PASSWORD", 24), ("FLOWER_PASSWORD", 16)]:
        value = saved[f"GRADEQUEUE_{name}"]
        assert len(value) == length and value.isalnum(), name
        assert tutor.value(f"GRADEQUEUE_{name}") == value


# --- tutor local / dev --------------------------------------------------------------------------------------


def test_the_compose_file_validates_and_runs_web_worker_and_beat_on_tutors_mysql_and_redis(tutor: Tutor) -> None:
    services = compose_config(tutor, "local/docker-compose.yml", "local/docker-compose.prod.yml")["services"]
    ours = sorted(name for name in services if name.startswith("gradequeue"))
    assert ours == ["gradequeue", "gradequeue-beat", "gradequeue-worker"]
    password = tutor.value("GRADEQUEUE_MYSQL_PASSWORD")
    for name in ours:
        service = services[name]
        assert service["image"] == IMAGE
        environment = service["environment"]
        assert environment["DATABASE_URL"] == f"mysql://gradequeue:{password}@mysql:3306/gradequeue"
        assert environment["CELERY_BROKER_URL"] == "redis://redis:6379/8"
        assert environment["CACHE_URL"] == "redis://redis:6379/9"
        assert environment["DJANGO_SECRET_KEY"] == tutor.value("GRADEQUEUE_SECRET_KEY")
        assert environment["GRADEQUEUE_CALLBACK_HOSTS"] == "lms,local.openedx.io"
        assert environment["GRADEQUEUE_QUEUES"] == "openedx"
        assert {"mysql", "redis"} <= set(service["depends_on"])
    assert services["gradequeue"]["command"] == ["python", "-m", "config.serve"]
    assert services["gradequeue"]["environment"]["WEB_BIND"] == "0.0.0.0:8000"
    assert services["gradequeue"]["environment"]["DJANGO_ALLOWED_HOSTS"] == (
        "gradequeue,gradequeue.local.openedx.io,localhost,127.0.0.1"
    )
    assert services["gradequeue"]["environment"]["GRADEQUEUE_PUBLIC_BASE_URL"] == "http://gradequeue.local.openedx.io"
    assert services["gradequeue-worker"]["command"][-1].startswith("exec celery -A celery_app worker")
    assert services["gradequeue-beat"]["command"][:5] == ["celery", "-A", "celery_app", "beat", "--loglevel"]
    media = str(tutor.root / "data" / "gradequeue" / "media")
    assert f"{media}:/app/var/media:rw" in services["gradequeue"]["volumes"]
    assert f"{media}:/mounts/gradequeue:rw" in services["permissions"]["volumes"]
    assert "setowner 10001 /mounts/gradequeue" in tutor.env("apps", "permissions", "setowners.sh").read_text()
    # Open edX's own services are untouched by the plugin.
    assert services["lms"]["image"].startswith("docker.io/overhangio/openedx:22.")


def test_the_job_and_dev_compose_files_validate(tutor: Tutor) -> None:
    jobs = compose_config(
        tutor, "local/docker-compose.yml", "local/docker-compose.prod.yml", "local/docker-compose.jobs.yml"
    )["services"]
    assert jobs["gradequeue-job"]["image"] == IMAGE
    assert jobs["gradequeue-job"]["environment"]["DATABASE_URL"].startswith("mysql://gradequeue:")
    dev = compose_config(tutor, "local/docker-compose.yml", "dev/docker-compose.yml")["services"]
    assert [(int(p["published"]), p["target"]) for p in dev["gradequeue"]["ports"]] == [(18040, 8000)]


def test_caddy_proxies_the_gradequeue_host_for_outside_graders(tutor: Tutor) -> None:
    caddyfile = tutor.env("apps", "caddy", "Caddyfile").read_text()
    assert 'gradequeue.local.openedx.io{$default_site_port} {\n    import proxy "gradequeue:8000"\n}' in caddyfile


def test_flower_is_optional(tutor_venv: Path, tmp_path_factory: pytest.TempPathFactory, tutor: Tutor) -> None:
    assert "gradequeue-flower" not in tutor.env("local", "docker-compose.yml").read_text()
    with_flower = new_tutor(tutor_venv, tmp_path_factory, "GRADEQUEUE_ENABLE_FLOWER=true")
    services = compose_config(with_flower, "local/docker-compose.yml", "local/docker-compose.prod.yml")["services"]
    flower = services["gradequeue-flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "ops:" + with_flower.value("GRADEQUEUE_FLOWER_PASSWORD")
    # docker-compose 1.x writes a published address as text, 2.x as a mapping.
    assert flower["ports"] in (
        ["127.0.0.1:5555:5555/tcp"],
        [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 5555, "published": "5555", "protocol": "tcp"}],
    )
    kinds = {(d["kind"], d["metadata"]["name"]) for d in k8s_documents(with_flower, "deployments.yml")}
    assert ("Deployment", "gradequeue-flower") in kinds


# --- tutor k8s ----------------------------------------------------------------------------------------------


def k8s_documents(tutor: Tutor, name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(tutor.env("k8s", name).read_text()) if doc]


def test_the_k8s_manifests_are_well_formed_yaml_of_the_right_kinds(tutor: Tutor) -> None:
    ours = {}
    for name in ("deployments.yml", "services.yml", "jobs.yml", "volumes.yml"):
        for doc in k8s_documents(tutor, name):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
            if doc["metadata"]["name"].startswith("gradequeue"):
                ours[doc["metadata"]["name"], doc["kind"]] = doc
    assert sorted(ours) == [
        ("gradequeue", "Deployment"),
        ("gradequeue", "Service"),
        ("gradequeue-beat", "Deployment"),
        ("gradequeue-job", "Job"),
        ("gradequeue-media", "PersistentVolumeClaim"),
        ("gradequeue-worker", "Deployment"),
    ]
    service = ours["gradequeue", "Service"]["spec"]
    assert service["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert service["selector"] == ours["gradequeue", "Deployment"]["spec"]["template"]["metadata"]["labels"]
    for name in ("gradequeue", "gradequeue-worker", "gradequeue-beat"):
        spec = ours[name, "Deployment"]["spec"]
        assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
        (container,) = spec["template"]["spec"]["containers"]
        assert container["image"] == IMAGE
        assert container["envFrom"] == [{"configMapRef": {"name": "gradequeue-env"}}]
    assert ours["gradequeue-beat", "Deployment"]["spec"]["replicas"] == 1
    assert ours["gradequeue-beat", "Deployment"]["spec"]["strategy"] == {"type": "Recreate"}
    web = ours["gradequeue", "Deployment"]["spec"]["template"]["spec"]
    assert web["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/xqueue/ready/", "port": 8000}
    assert web["volumes"] == [{"name": "media", "persistentVolumeClaim": {"claimName": "gradequeue-media"}}]
    job = ours["gradequeue-job", "Job"]["spec"]["template"]["spec"]
    assert job["containers"][0]["envFrom"] == [{"configMapRef": {"name": "gradequeue-env"}}]
    kustomization = yaml.safe_load(tutor.env("kustomization.yml").read_text())
    (generated,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "gradequeue-env"]
    assert generated["envs"] == ["plugins/gradequeue/apps/gradequeue.env"]
    assert tutor.env(generated["envs"][0]).is_file()


# --- The LMS --------------------------------------------------------------------------------------------------


def xqueue_interface(settings_file: Path) -> Any:
    """The value XQUEUE_INTERFACE ends up with in an LMS settings module (its last assignment)."""
    tree = ast.parse(settings_file.read_text())
    values = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "XQUEUE_INTERFACE" for t in node.targets)
    ]
    assert values, f"no XQUEUE_INTERFACE in {settings_file}"
    return ast.literal_eval(values[-1])


def test_the_lms_settings_point_xqueue_interface_at_gradequeue(tutor: Tutor) -> None:
    expected = {
        "url": "http://gradequeue:8000",
        "django_auth": {"username": "lms", "password": tutor.value("GRADEQUEUE_LMS_PASSWORD")},
        "basic_auth": None,
        "callback_url": "http://lms:8000",
    }
    for variant in ("production.py", "development.py"):
        assert xqueue_interface(tutor.env("apps", "openedx", "settings", "lms", variant)) == expected


def test_enabling_tutor_xqueue_as_well_is_refused(tutor_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    both = new_tutor(tutor_venv, tmp_path_factory)
    result = both("plugins", "enable", "xqueue", check=False)
    assert result.returncode != 0
    assert (
        "The gradequeue and xqueue plugins are both enabled: both would set the LMS's XQUEUE_INTERFACE. "
        "Switch with: tutor plugins disable xqueue" in result.stdout + result.stderr
    )
    # Every later render refuses too, with a warning on each command, until one of them is disabled.
    again = both("config", "save", check=False)
    assert again.returncode != 0
    assert "Warning: the xqueue plugin is enabled next to gradequeue" in again.stdout + again.stderr
    both("plugins", "disable", "xqueue")
    both("config", "save")
    assert xqueue_interface(both.env("apps", "openedx", "settings", "lms", "production.py"))["url"] == (
        "http://gradequeue:8000"
    )


# --- Images, init tasks and do commands ---------------------------------------------------------------------


def test_images_build_uses_the_repositorys_own_dockerfile(tutor: Tutor) -> None:
    assert tutor("images", "printtag", "gradequeue").stdout.strip() == IMAGE
    before = len(tutor.docker_calls())
    tutor("images", "build", "gradequeue")
    (build,) = tutor.docker_calls()[before:]
    assert build[:3] == ["buildx", "build", f"--tag={IMAGE}"]
    assert build[-1] == str(REPO)  # the build context: this checkout, with its Dockerfile
    assert (REPO / "Dockerfile").is_file()


def test_images_build_without_a_source_says_what_to_set(
    tutor_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    unset = new_tutor(tutor_venv, tmp_path_factory, 'GRADEQUEUE_SOURCE=""')
    result = unset("images", "build", "gradequeue", check=False)
    assert result.returncode != 0
    assert "GRADEQUEUE_SOURCE is not set: set it to a checkout of the gradequeue repository" in result.stdout + (
        result.stderr
    )


def test_the_init_task_holds_the_database_and_account_creation(tutor: Tutor) -> None:
    tutor("local", "do", "init", "--limit", "gradequeue")
    runs = tutor.compose_runs()
    (mysql,) = runs["mysql-job"]
    (init,) = runs["gradequeue-job"]
    password = tutor.value("GRADEQUEUE_MYSQL_PASSWORD")
    assert "CREATE DATABASE IF NOT EXISTS `gradequeue` CHARACTER SET utf8mb4" in mysql
    assert "CREATE USER IF NOT EXISTS 'gradequeue'@'%';" in mysql
    assert f"ALTER USER 'gradequeue'@'%' IDENTIFIED BY '{password}';" in mysql
    assert "GRANT ALL ON \\`gradequeue\\`.* TO 'gradequeue'@'%';" in mysql
    lms_password = tutor.value("GRADEQUEUE_LMS_PASSWORD")
    assert init.splitlines()[1:] == [
        "python manage.py migrate --noinput",
        "python manage.py seed_queues",
        "python manage.py sync_schedule",
        f"GRADEQUEUE_LMS_PASSWORD='{lms_password}' python manage.py create_account lms --role lms --queue openedx "
        "--password-env GRADEQUEUE_LMS_PASSWORD",
    ]


def test_launch_builds_starts_and_initialises_gradequeue(
    tutor_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    launched = new_tutor(tutor_venv, tmp_path_factory)
    launched("local", "launch", "--non-interactive")
    calls = launched.docker_calls()
    builds = [c for c in calls if c[:2] == ["buildx", "build"]]
    assert [b[2] for b in builds] == [f"--tag={IMAGE}"]
    start = next(i for i, c in enumerate(calls) if c[:1] == ["compose"] and "up" in c)
    assert calls.index(builds[0]) < start
    runs = launched.compose_runs()
    assert "python manage.py migrate --noinput" in runs["gradequeue-job"][0]
    assert any("CREATE DATABASE IF NOT EXISTS `gradequeue`" in script for script in runs["mysql-job"])


# The init tasks and the do command, run for real: MySQL's against the test MariaDB (a database and user with
# the test prefix), gradequeue's with this checkout's virtualenv on a SQLite file (gradequeue's MySQL backend is
# not what this tests: the scripts are).
RUN_JOB = r"""
import json, os, subprocess, sys

argv = sys.argv[1:]
service, script = argv[-5], argv[-1]
config = json.loads(os.environ["JOB_CONFIG"])
if service == "mysql-job":
    sys.exit(subprocess.run(["sh", "-e", "-c", script]).returncode)
if service == "gradequeue-job":
    env = dict(os.environ)
    for line in open(config["env_file"]).read().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    env.update(config["overrides"])
    env["PATH"] = config["venv_bin"] + ":" + env["PATH"]
    sys.exit(subprocess.run(["sh", "-e", "-c", script], cwd=config["repo"], env=env).returncode)
"""


@pytest.fixture
def mysql_names() -> Iterator[tuple[str, str]]:
    suffix = secrets.token_hex(4)
    database, user = f"gq_h7_tutor_plugin_{suffix}", f"gq_h7_tutor_{suffix}"
    yield database, user
    conn = pymysql.connect(**server_args(), autocommit=True)
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
        cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")
    conn.close()


def test_the_init_task_and_create_grader_really_create_database_user_queues_and_accounts(
    tutor_venv: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, mysql_names: tuple[str, str]
) -> None:
    database, user = mysql_names
    mysql = server_args()
    real = new_tutor(
        tutor_venv,
        tmp_path_factory,
        f"MYSQL_HOST={mysql['host']}",
        f"MYSQL_PORT={mysql['port']}",
        f"MYSQL_ROOT_USERNAME={mysql['user']}",
        f"MYSQL_ROOT_PASSWORD={json.dumps(mysql['password'])}",
        f"GRADEQUEUE_MYSQL_DATABASE={database}",
        f"GRADEQUEUE_MYSQL_USERNAME={user}",
        "GRADEQUEUE_QUEUES=[python-101, java-201:celery]",
    )
    hook = tmp_path / "run_job.py"
    hook.write_text(RUN_JOB)
    sqlite = tmp_path / "gradequeue.sqlite3"
    overrides = {
        "DATABASE_URL": f"sqlite:///{sqlite}",
        "CACHE_URL": "",
        "CELERY_BROKER_URL": "filesystem://",
        "GRADEQUEUE_VAR_DIR": str(tmp_path / "var"),
    }
    real.extra_env = {
        "FAKE_DOCKER_RUN": str(hook),
        "JOB_CONFIG": json.dumps(
            {
                "env_file": str(real.env("plugins", "gradequeue", "apps", "gradequeue.env")),
                "overrides": overrides,
                "venv_bin": str(Path(sys.executable).parent),
                "repo": str(REPO),
            }
        ),
    }
    real("local", "do", "init", "--limit", "gradequeue")
    real("local", "do", "gradequeue-create-grader", "watcher-1", "--password", "grader secret 1")

    # The database and the user exist, and the generated password opens the one with the other.
    conn = pymysql.connect(
        host=mysql["host"],
        port=mysql["port"],
        user=user,
        password=real.value("GRADEQUEUE_MYSQL_PASSWORD"),
        database=database,
    )
    with conn.cursor() as cursor:
        cursor.execute("SELECT @@character_set_database")
        assert cursor.fetchone() == ("utf8mb4",)
    conn.close()

    check = (
        "import json; from django.contrib.auth import authenticate; from grading.models import Queue, QueueGrant;"
        "print(json.dumps({'queues': list(Queue.objects.order_by('name').values_list('name', 'mode')),"
        "'grants': list(QueueGrant.objects.order_by('user__username', 'queue__name')"
        ".values_list('user__username', 'queue__name', 'role')),"
        f"'lms': authenticate(username='lms', password={real.value('GRADEQUEUE_LMS_PASSWORD')!r}) is not None,"
        "'grader': authenticate(username='watcher-1', password='grader secret 1') is not None}))"
    )
    env = {**os.environ, **overrides, "DJANGO_SECRET_KEY": "check", "GRADEQUEUE_CALLBACK_HOSTS": "lms"}
    env.pop("GRADEQUEUE_DEV", None)
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", check],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {
        "queues": [["java-201", "celery"], ["python-101", "pull"]],
        "grants": [
            ["lms", "java-201", "lms"],
            ["lms", "python-101", "lms"],
            ["watcher-1", "java-201", "grader"],
            ["watcher-1", "python-101", "grader"],
        ],
        "lms": True,
        "grader": True,
    }


def test_create_grader_refuses_values_the_task_template_would_interpret(tutor: Tutor) -> None:
    result = tutor("local", "do", "gradequeue-create-grader", "w", "--password", "{{ 7*7 }}", check=False)
    assert result.returncode != 0
    assert "the password may not contain" in result.stdout + result.stderr
