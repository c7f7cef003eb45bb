"""What the benchmarks share: where the portal is, the environment its processes run with, a database of
each bench's own (created, migrated, Django set up on it) and a timer that counts SQL queries.

A bench imports this before anything that imports Django: `environment()` puts the settings in
os.environ, where Django reads them at setup.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def database_url(name: str) -> str:
    """BENCH_DATABASE_URL, else the database `name` on the local server: each bench has its own, so one
    bench's run never empties another's."""
    return os.environ.get("BENCH_DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{name}")


def portal_env(
    url: str, *, redis_url: str | None = None, log_level: str | None = "WARNING", **settings: str
) -> dict[str, str]:
    """The environment of the portal's processes on the database at `url`: this process's, DATABASE_URL,
    REDIS_URL when given, LOG_LEVEL (None: left as it is, the portal's own unless set), the portal's
    settings module, then `settings` (PORTAL_* and the like), which win."""
    return {
        **os.environ,
        "DATABASE_URL": url,
        **({"REDIS_URL": redis_url} if redis_url is not None else {}),
        **({"LOG_LEVEL": log_level} if log_level is not None else {}),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        **settings,
    }


def environment(
    database: str, *, redis: str | None = None, log_level: str | None = "WARNING", **settings: str
) -> dict[str, str]:
    """The bench's environment: portal_env on database_url(database), with REDIS_URL from BENCH_REDIS_URL
    or `redis` when `redis` is given. Also made this process's (Django set up here reads it) with ROOT
    on sys.path (the portal's packages); pass it to the processes the bench starts."""
    redis_url = os.environ.get("BENCH_REDIS_URL", redis) if redis is not None else None
    env = portal_env(database_url(database), redis_url=redis_url, log_level=log_level, **settings)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    return env


def create_database(url: str, *, drop: bool = True, force: bool = False) -> bool:
    """Create the database of `url` on its server; True if created. `drop`: start from an empty one
    (dropped first if it exists), else keep an existing one (a seeded fleet kept for the next run).
    `force`: drop it even while other sessions are connected (ending them)."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if drop:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"' + (" WITH (FORCE)" if force else ""))
        elif conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        conn.execute(f'CREATE DATABASE "{name}"')
        return True


def migrate(env: dict[str, str]) -> None:
    """`manage.py migrate` on env's database, in a child process (as a deployment runs it)."""
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def setup_django(env: dict[str, str], *, drop: bool = True) -> None:
    """The bench's database created (see create_database) and migrated, then Django set up on it here."""
    create_database(env["DATABASE_URL"], drop=drop)
    migrate(env)
    import django

    django.setup()


def timed(function, *args, **kwargs):
    """function(*args, **kwargs): its result, wall seconds (rounded to 2) and the number of SQL queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        began = time.perf_counter()
        result = function(*args, **kwargs)
        seconds = time.perf_counter() - began
    return result, round(seconds, 2), len(queries)
