"""var/: the embedded default's state on disk (SQLite database, file broker, static files, secret key).

Settings only read from here; the programs that run the portal (manage.py, the WSGI application, the
Celery app) call `prepare()` before Django loads, so importing the settings writes nothing.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PORTAL_VAR_DIR", BASE_DIR / "var"))
SECRET_KEY_FILE = VAR_DIR / "secret_key"
BROKER_DIR = VAR_DIR / "broker"
STATIC_ROOT = VAR_DIR / "static"


def stored_secret_key() -> str | None:
    """The per-checkout key `prepare()` keeps, so sessions and tokens survive restarts; None before it ran."""
    try:
        return SECRET_KEY_FILE.read_text().strip() or None
    except FileNotFoundError:
        return None


def prepare() -> None:
    """Make var/ and what the embedded default keeps in it. Idempotent; safe from several processes."""
    for folder in (VAR_DIR, STATIC_ROOT, BROKER_DIR / "out", BROKER_DIR / "processed"):
        folder.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("SECRET_KEY") and stored_secret_key() is None:
        import secrets

        # Written once; O_EXCL makes a second process that races us keep the first one's key.
        try:
            fd = os.open(SECRET_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
