#!/usr/bin/env python3
"""Cold-start logins: how long a watcher's threads wait for their first login against a server just started.

For each credential kind (a password with Django's default hasher, PBKDF2; a generated machine secret) and
each thread count, it starts a fresh web server (``python -m config.serve``, 2 workers, cold caches), waits
until it answers ``/xqueue/status/``, then lets N threads log in at once as the 2026 xqueue-watcher does (a GET
of the login page, then the login POST), and prints each round's slowest and median login and how many took
over 1 s (the watcher's login timeout: those watchers die). Kinds alternate within each repetition so that
the figures of one run compare side by side on a shared machine.

Usage (from the checkout, with the virtualenv)::

    .venv/bin/python bench/cold_login.py --database-url postgres://postgres@127.0.0.1:5432/gq_cold_login \\
        --threads 8 32 --repeat 3 --port 18141
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "a-password-someone-chose-1"


def setup(env: dict[str, str]) -> str:
    """Migrate, and (re)create a queue and two grader accounts; return the generated secret."""
    script = f"""
import io
import django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
from grading.models import Queue
call_command("migrate", verbosity=0)
Queue.objects.get_or_create(name="cold")
get_user_model().objects.filter(username__in=["pw-grader", "secret-grader"]).delete()
call_command("create_account", "pw-grader", role="grader", queue=["cold"], password={PASSWORD!r}, stdout=io.StringIO())
out = io.StringIO()
call_command("create_account", "secret-grader", role="grader", queue=["cold"], generate_secret=True, stdout=out)
print(out.getvalue().splitlines()[-1])
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def one_round(
    env: dict[str, str], port: int, username: str, password: str, threads: int
) -> tuple[list[float | None], list[float | None]]:
    """The login times of ``threads`` threads against a fresh server (cold), then again on it (warm)."""
    process = subprocess.Popen([sys.executable, "-m", "config.serve"], cwd=ROOT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/xqueue/status/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        return logins(base, username, password, threads), logins(base, username, password, threads)
    finally:
        os.killpg(process.pid, 15)
        process.wait(15)


def logins(base: str, username: str, password: str, threads: int) -> list[float | None]:
    """Each thread's time for a 2026 watcher's login (GET of the login page, then the POST), started together."""
    barrier = threading.Barrier(threads)
    took: list[float | None] = [None] * threads

    def login(i: int) -> None:
        session = requests.Session()
        barrier.wait()
        began = time.monotonic()
        try:
            session.get(base + "/xqueue/login/", timeout=10)
            token = session.cookies.get("csrftoken", "")
            reply = session.post(
                base + "/xqueue/login/",
                data={"username": username, "password": password},
                headers={"X-CSRFToken": token, "Referer": base + "/"},
                timeout=10,
            )
            if reply.json() == {"return_code": 0, "content": "Logged in"}:
                took[i] = time.monotonic() - began
        except requests.RequestException:
            pass

    workers = [threading.Thread(target=login, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/gq_cold_login")
    parser.add_argument("--threads", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=18141)
    args = parser.parse_args()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "GRADEQUEUE_DEV": "1",
        "DATABASE_URL": args.database_url,
        "WEB_BIND": f"127.0.0.1:{args.port}",
        "WEB_WORKERS": "2",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("CACHE_URL", None)
    secret = setup(env)
    kinds = [("password (PBKDF2)", "pw-grader", PASSWORD), ("generated secret", "secret-grader", secret)]
    print(
        f"{'credential':<18} {'threads':>7} {'server':>6} {'slowest s':>9} {'median s':>8} "
        f"{'over 1 s':>8} {'failed':>6}"
    )
    for _ in range(args.repeat):
        for threads in args.threads:
            for label, username, password in kinds:
                for state, took in zip(
                    ("cold", "warm"), one_round(env, args.port, username, password, threads), strict=True
                ):
                    done = [t for t in took if t is not None]
                    slowest = max(done) if done else float("nan")
                    median = statistics.median(done) if done else float("nan")
                    over = sum(1 for t in done if t > 1.0)
                    print(
                        f"{label:<18} {threads:>7} {state:>6} {slowest:>9.3f} {median:>8.3f} {over:>8} "
                        f"{len(took) - len(done):>6}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
