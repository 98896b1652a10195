"""tutor-gradequeue: gradequeue (web, Celery worker, Celery beat, optionally Flower) next to Open edX.

It uses Tutor's MySQL (a database and user of its own, made by the init task) and Tutor's Redis (a broker and a
cache database of its own), and points the LMS's XQUEUE_INTERFACE at gradequeue with an account the init task
creates. It replaces tutor-xqueue: with both enabled, rendering the environment stops with an explanation.
"""

from __future__ import annotations

import os
import shlex
import typing as t
from glob import glob
from importlib.resources import files
from pathlib import Path

import click
from tutor import exceptions, fmt, hooks
from tutor import plugins as tutor_plugins

from .__about__ import __version__

HERE = files("tutorgradequeue")


def _checkout() -> str:
    """The gradequeue checkout this plugin is installed from (pip install -e), or "" when it is not in one."""
    root = Path(__file__).resolve().parents[2]
    if (root / "Dockerfile").is_file() and (root / "manage.py").is_file() and (root / "grading").is_dir():
        return str(root)
    return ""


config: dict[str, dict[str, t.Any]] = {
    "defaults": {
        "VERSION": __version__,
        # The image every gradequeue service runs; `tutor images build gradequeue` builds it from SOURCE.
        "DOCKER_IMAGE": "gradequeue:{{ GRADEQUEUE_VERSION }}",
        # A checkout of the gradequeue repository: the build context of its own Dockerfile.
        "SOURCE": _checkout(),
        # Where graders (xqueue-watcher) reach gradequeue through Caddy; the LMS uses http://gradequeue:8000.
        "HOST": "gradequeue.{{ LMS_HOST }}",
        "MYSQL_DATABASE": "gradequeue",
        "MYSQL_USERNAME": "gradequeue",
        # Tutor's Redis: Open edX uses databases 0 (Celery) and 1 (cache).
        "CELERY_REDIS_DB": 8,
        "CACHE_REDIS_DB": 9,
        # The LMS account XQUEUE_INTERFACE logs in with.
        "LMS_USERNAME": "lms",
        # Created by the init task and granted to the LMS account; "name" or "name:mode" (pull, celery, http).
        # "openedx" is the queue tutor-xqueue configures, so existing problems keep working.
        "QUEUES": ["openedx"],
        # Hosts the grades may be posted to: the LMS as Tutor runs it (XQUEUE_INTERFACE's callback_url).
        "CALLBACK_HOSTS": ["lms", "{{ LMS_HOST }}"],
        "ENABLE_FLOWER": False,
        "FLOWER_USERNAME": "ops",
        "FLOWER_PORT": 5555,
        # tutor dev: gradequeue's own port on the host (make run's default).
        "DEV_PORT": 18040,
        "CELERY_CONCURRENCY": "",
        "LOG_FORMAT": "json",
        # More environment variables for every gradequeue process, e.g. {"GRADEQUEUE_S3_BUCKET": "grading"}.
        "EXTRA_ENV": {},
    },
    "unique": {
        "SECRET_KEY": "{{ 32|random_string }}",
        "MYSQL_PASSWORD": "{{ 16|random_string }}",
        "LMS_PASSWORD": "{{ 24|random_string }}",
        "FLOWER_PASSWORD": "{{ 16|random_string }}",
    },
}

hooks.Filters.CONFIG_DEFAULTS.add_items([(f"GRADEQUEUE_{key}", value) for key, value in config["defaults"].items()])
hooks.Filters.CONFIG_UNIQUE.add_items([(f"GRADEQUEUE_{key}", value) for key, value in config["unique"].items()])

# --- Templates and patches ------------------------------------------------------------------------------

hooks.Filters.ENV_TEMPLATE_ROOTS.add_item(str(HERE / "templates"))
hooks.Filters.ENV_TEMPLATE_TARGETS.add_item(("gradequeue/apps", "plugins"))
for path in sorted(glob(str(HERE / "patches" / "*"))):
    with open(path, encoding="utf-8") as patch_file:
        hooks.Filters.ENV_PATCHES.add_item((os.path.basename(path), patch_file.read()))


def _refuse_xqueue() -> str:
    """Called by the LMS settings patch: tutor-xqueue claims the same XQUEUE_INTERFACE."""
    if tutor_plugins.is_loaded("xqueue"):
        raise exceptions.TutorError(
            "The gradequeue and xqueue plugins are both enabled: both would set the LMS's XQUEUE_INTERFACE. "
            "Switch with: tutor plugins disable xqueue (see tutor-gradequeue's README for moving xqueue's "
            "unfinished submissions over first)."
        )
    return ""


hooks.Filters.ENV_TEMPLATE_VARIABLES.add_item(("gradequeue_refuse_xqueue", _refuse_xqueue))


@hooks.Actions.CONFIG_LOADED.add()
def _warn_about_xqueue(_config: dict[str, t.Any]) -> None:
    if tutor_plugins.is_loaded("xqueue"):
        fmt.echo_alert(
            "Warning: the xqueue plugin is enabled next to gradequeue; `tutor config save` refuses this. "
            "Run: tutor plugins disable xqueue"
        )


# --- Init tasks -----------------------------------------------------------------------------------------

for service in ("mysql", "gradequeue"):
    with open(str(HERE / "templates" / "gradequeue" / "tasks" / service / "init"), encoding="utf-8") as task_file:
        hooks.Filters.CLI_DO_INIT_TASKS.add_item((service, task_file.read()))

# --- Images ---------------------------------------------------------------------------------------------


@hooks.Filters.IMAGES_BUILD.add()
def _build_gradequeue(
    images: list[tuple[str, str | tuple[str, ...], str, tuple[str, ...]]], tutor_config: dict[str, t.Any]
) -> list[tuple[str, str | tuple[str, ...], str, tuple[str, ...]]]:
    # The build context is the gradequeue checkout itself (an absolute path: Tutor joins it to its
    # environment folder, which leaves an absolute path as it is), so the image is built from the repository's
    # own Dockerfile rather than from a copy of it.
    source = str(tutor_config.get("GRADEQUEUE_SOURCE") or "")
    if not source:
        raise exceptions.TutorError(
            "GRADEQUEUE_SOURCE is not set: set it to a checkout of the gradequeue repository "
            "(tutor config save --set GRADEQUEUE_SOURCE=/path/to/gradequeue), or install this plugin from one "
            "with pip install -e"
        )
    if not os.path.isabs(source) or not os.path.isfile(os.path.join(source, "Dockerfile")):
        raise exceptions.TutorError(f"GRADEQUEUE_SOURCE={source!r} is not an absolute path to a gradequeue checkout")
    images.append(("gradequeue", source, "{{ GRADEQUEUE_DOCKER_IMAGE }}", ()))
    return images


@hooks.Filters.IMAGES_BUILD_REQUIRED.add()
def _build_on_launch(images: list[str], _context_name: str) -> list[str]:
    # `tutor local launch` builds the image, so that pip install + enable + launch is the whole set-up.
    return [*images, "gradequeue"]


hooks.Filters.IMAGES_PULL.add_item(("gradequeue", "{{ GRADEQUEUE_DOCKER_IMAGE }}"))
hooks.Filters.IMAGES_PUSH.add_item(("gradequeue", "{{ GRADEQUEUE_DOCKER_IMAGE }}"))


@hooks.Filters.APP_PUBLIC_HOSTS.add()
def _public_hosts(hosts: list[str], context_name: str) -> list[str]:
    if context_name == "dev":
        return [*hosts, "localhost:{{ GRADEQUEUE_DEV_PORT }}"]
    return [*hosts, "{{ GRADEQUEUE_HOST }}"]


# --- tutor local/dev/k8s do gradequeue-create-grader ----------------------------------------------------


def _no_template(value: str, what: str) -> str:
    # Task scripts are rendered by Jinja before they run: a value must not be read as template markup.
    if any(mark in value for mark in ("{{", "{%", "{#")):
        raise click.BadParameter(f"the {what} may not contain '{{{{', '{{%' or '{{#'")
    return value


@click.command(name="gradequeue-create-grader", help="Create a gradequeue grader account, or change its password")
@click.argument("username")
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    help="Grant this queue (repeatable; default: every queue of GRADEQUEUE_QUEUES)",
)
@click.option("-p", "--password", prompt=True, hide_input=True, confirmation_prompt=True, help="The account's password")
def create_grader(username: str, queues: tuple[str, ...], password: str) -> t.Iterable[tuple[str, str]]:
    _no_template(username, "user name")
    _no_template(password, "password")
    for queue in queues:
        _no_template(queue, "queue name")
    if queues:
        grants = " ".join(f"--queue {shlex.quote(q)}" for q in queues)
    else:
        grants = '{% for q in GRADEQUEUE_QUEUES %}--queue {{ q.split(":")[0] }} {% endfor %}'
    yield (
        "gradequeue",
        f"GRADEQUEUE_GRADER_PASSWORD={shlex.quote(password)} python manage.py create_account "
        f"{shlex.quote(username)} --role grader {grants} --password-env GRADEQUEUE_GRADER_PASSWORD",
    )


hooks.Filters.CLI_DO_COMMANDS.add_item(create_grader)
