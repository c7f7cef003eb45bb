"""The one settings module. Everything that varies between machines comes from the environment.

With no environment at all this is the *embedded default*: SQLite and a filesystem Celery broker
under var/, so a newcomer's laptop needs nothing but Python. Set DATABASE_URL and REDIS_URL for
PostgreSQL and Redis.
"""

import hashlib
import hmac
import os
import secrets
import uuid
from datetime import timedelta

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from portal import var

BASE_DIR = var.BASE_DIR
VAR_DIR = var.VAR_DIR


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: str) -> bool:
    value = env(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true or false)")


def envfloat(name: str, default: str) -> float:
    try:
        return float(env(name, default))
    except ValueError:
        raise ImproperlyConfigured(f"{name}={env(name)!r} is not a number") from None


def envint(name: str, default: str) -> int:
    try:
        return int(env(name, default))
    except ValueError:
        raise ImproperlyConfigured(f"{name}={env(name)!r} is not an integer") from None


DEBUG = envbool("DEBUG", "false")
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG and env("PORTAL_REQUIRE_SECRET_KEY", "false") == "true":
        raise ImproperlyConfigured("SECRET_KEY must be set in production")
    # Embedded default: the per-checkout key under var/ (portal/var.py), so sessions survive restarts.
    # Before anything made one (a test run in a fresh clone), a key for this process alone.
    SECRET_KEY = var.stored_secret_key() or secrets.token_urlsafe(50)

ALLOWED_HOSTS = [h.strip() for h in env("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env("CSRF_TRUSTED_ORIGINS").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "axes",
    "vms",
    "patching",
    "patching.maintenance",
    "portal.web",
]

MIDDLEWARE = [
    # Outermost: under /arm/ and /adfs/ (any letter case) every response, even one of Django's own
    # errors, is JSON: an ARM error envelope, or the OAuth error shape under /adfs/.
    "portal.arm.core.ArmMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Outside the session, CSRF and messages middleware: it marks their cookies Secure on https.
    "portal.security.SecureCookiesOverHttpsMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before any view: a NUL in a query parameter is a 400, never a 500 or a half-streamed export.
    "portal.security.RefuseControlCharactersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a refused sign-in of a locked-out user or address into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.web.context.sandbox_clock",
            ],
        },
    },
]

DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "portal.sqlite3",
            # The web server, the worker and beat share one file: wait for locks instead of failing.
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-axes first: it refuses a locked-out user or address before the password is even checked.
# Only Django's authenticate() goes through these (the sign-in page and the admin's); API tokens and
# service principals are checked by portal.arm.auth and portal.arm.identity and never reach them.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "vms:list"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = var.STATIC_ROOT

# Secure cookies on every response (https-only sites). Without it, portal.security still marks the
# session and CSRF cookies Secure on every https response, which is what make demo (http and https) needs.
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", "false")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
BEHIND_TLS_PROXY = envbool("BEHIND_TLS_PROXY", "false")
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HSTS: SecurityMiddleware sends it on https responses only, so the http side of make demo is unaffected
# (and browsers ignore it from an IP address or a certificate they don't trust). 0 turns it off.
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "31536000")

# --- Sign-in lockout (django-axes) ----------------------------------------------------------------
# After PORTAL_LOGIN_FAILURE_LIMIT failed sign-ins for one user name, or from one address, further
# attempts for it are refused (the right password too) for PORTAL_LOGIN_LOCKOUT_MINUTES, counted from
# the last failure. An administrator unlocks early in the admin (Axes → Access attempts: delete the
# rows) or with `manage.py axes_reset_username <name>` / `axes_reset_ip <address>`.
AXES_FAILURE_LIMIT = envint("PORTAL_LOGIN_FAILURE_LIMIT", "5")
AXES_COOLOFF_TIME = timedelta(minutes=envint("PORTAL_LOGIN_LOCKOUT_MINUTES", "15"))
# Two independent counters: by user name (guessing one account from many addresses) and by address
# (one address trying many accounts).
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A success does not wipe the failures: axes' reset matches by user name OR address, so signing in to
# one's own account would clear the guesses at someone else's from the same address. They expire after
# the cool-off instead.
AXES_RESET_ON_SUCCESS = False
# The same address as the token endpoint's counters: behind BEHIND_TLS_PROXY, the proxy's last hop.
AXES_CLIENT_IP_CALLABLE = "portal.security.axes_client_ip"
AXES_LOCKOUT_CALLABLE = "portal.security.lockout_response"
if AXES_FAILURE_LIMIT < 1 or AXES_COOLOFF_TIME.total_seconds() < 60:
    raise ImproperlyConfigured(
        "PORTAL_LOGIN_FAILURE_LIMIT must be at least 1 and PORTAL_LOGIN_LOCKOUT_MINUTES at least 1"
    )

# --- Content-Security-Policy (django-csp 4) -------------------------------------------------------
# The templates have no inline scripts, styles or event handlers; htmx's indicator style is turned off
# in base.html (htmx-config) and its rule lives in portal.css. Chromium checks it: tests/browser.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Celery ---------------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
else:
    # kombu's filesystem transport: a folder of message files, shared by web, worker and beat.
    _broker_dir = var.BROKER_DIR
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True  # our state lives in Operation rows, never in a result backend
# What survives a broker outage or a dead worker is the Operation row, not the message: a committed
# NotStarted row is (re-)sent by the dispatcher beat (patching.tasks.dispatch_queued), and a run whose
# heartbeat stopped is taken over or failed (services._claim, services.fail_stale_operations). The
# message settings below only make recovery faster; correctness never depends on them.
# - acks_late: a message is acknowledged once its task ended, so one a worker had fetched (or was
#   running) when it died comes back instead of being lost; a second delivery is harmless, the
#   claim is compare-and-swap.
# - reject_on_worker_lost: a pool child killed mid-task puts its message straight back. If the run
#   had not been claimed yet it runs at once; if it had, the copy finds nothing to claim until the
#   heartbeat goes stale, and the dispatcher re-sends it then. A poison task cannot loop forever:
#   the claim stops taking a run over after PORTAL_MAX_ATTEMPTS.
# - visibility_timeout: how long Redis waits before redelivering an unacknowledged message (a worker
#   SIGKILLed as a whole). It must exceed the longest task (CELERY_TASK_TIME_LIMIT), or Redis would
#   hand a running task to a second worker; it no longer decides how soon a crash is noticed (the
#   heartbeat does), so it can stay well above the limit.
# - publishing: no retries and a short connect timeout, so a request never hangs while Redis is
#   down; the outbox retries instead (services.send_to_workers logs the failure and returns).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 15 * 60
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = 2
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 2 * CELERY_TASK_TIME_LIMIT,
        "socket_connect_timeout": 2,
        "max_retries": 0,  # a publish tries the connection once (kombu reads this in default_channel)
    }
# People first: what a person starts (Assess now, Install now, the admin's actions) and the due steps
# of runs in progress (services.advance_operations: short, and late if they waited) go to the "user"
# queue; the platform's rounds (periodic assessment, automatic patching, maintenance windows) and the
# beat's housekeeping to "platform". Every worker consumes both, the user queue first (Redis:
# queue_order_strategy "priority"), so an Assess now waits for at most the batch at hand.
USER_QUEUE, PLATFORM_QUEUE = "user", "platform"
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name), routing_key=name) for name in (USER_QUEUE, PLATFORM_QUEUE)
]  # in the order a worker takes them
CELERY_TASK_DEFAULT_QUEUE = PLATFORM_QUEUE
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS["queue_order_strategy"] = "priority"
# Workers keep their database connection across tasks on purpose: Celery's Django fixup otherwise
# closes it around every task, and a fresh PostgreSQL connection per batch costs more than a small
# batch's work (a broken one is still replaced: CONN_HEALTH_CHECKS).
CELERY_DB_REUSE_MAX = envint("CELERY_DB_REUSE_MAX", "1000")
# How many operations one task message carries: a platform round's operations go to the workers in
# batches of this size (services.send_to_workers), each run set-based by services.execute_operations.
# A batch costs a fixed ~50 ms besides its runs (its statements, the rollup triggers planned for each
# statement, the catalog): 2,000 runs (~0.6 s of work) make that 15% less per run than 500 do.
PORTAL_EXECUTION_BATCH = envint("PORTAL_EXECUTION_BATCH", "2000")
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE = {
    # The outbox: committed operations that were not handed to a worker (broker down) are re-sent.
    "dispatch-queued": {
        "task": "patching.tasks.dispatch_queued",
        "schedule": timedelta(seconds=envint("PORTAL_DISPATCH_BEAT_SECONDS", "10")),
    },
    # Runs whose heartbeat stopped and that may not be taken over again; queued ones nobody ran.
    "fail-stale-operations": {
        "task": "patching.tasks.fail_stale_operations",
        "schedule": timedelta(seconds=30),
    },
    "settle-registrations": {
        "task": "vms.tasks.settle_due_registrations",
        "schedule": timedelta(seconds=30),
    },
    "prune-history": {
        "task": "patching.tasks.prune_history",
        "schedule": timedelta(hours=6),
    },
    # The overview's compliance trend: one figure per subscription per day, the day's last one kept.
    "record-compliance-snapshots": {
        "task": "patching.tasks.record_compliance_snapshots",
        "schedule": timedelta(hours=1),
    },
    # The fleet figures' rollups: deltas appended by the recording statements' triggers, folded often so
    # that readers sum few of them (patching.rollup).
    "fold-rollups": {
        "task": "patching.tasks.fold_rollups",
        "schedule": timedelta(seconds=envint("PORTAL_ROLLUP_FOLD_SECONDS", "5")),
    },
    # Automatic VM guest patching (SPEC §3.5): cheap rounds, so a window opening is caught within minutes.
    "patch-fleet": {
        "task": "patching.tasks.patch_fleet",
        "schedule": timedelta(seconds=envint("PORTAL_PATCH_BEAT_SECONDS", "60")),
    },
    "assess-fleet": {
        "task": "patching.tasks.assess_fleet",
        "schedule": timedelta(seconds=envint("PORTAL_ASSESSMENT_BEAT_SECONDS", "60")),
    },
    # Maintenance configurations: pre-events, windows opening and closing (patching.maintenance.services.run_due).
    "maintenance-run-due": {
        "task": "patching.maintenance.tasks.run_due",
        "schedule": timedelta(seconds=envint("PORTAL_MAINTENANCE_BEAT_SECONDS", "30")),
    },
    "maintenance-prune-runs": {
        "task": "patching.maintenance.tasks.prune_runs",
        "schedule": timedelta(hours=6),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Maintenance configurations (patching.maintenance) ---------------------------------------------
# Azure Update Manager's limits (Learn, update-manager/scheduled-patching, "Service limits"): schedules per
# subscription and region, resource associations per schedule, dynamic scopes per schedule.
PORTAL_MAINTENANCE_MAX_CONFIGURATIONS = envint("PORTAL_MAINTENANCE_MAX_CONFIGURATIONS", "250")
PORTAL_MAINTENANCE_MAX_MACHINES = envint("PORTAL_MAINTENANCE_MAX_MACHINES", "3000")
PORTAL_MAINTENANCE_MAX_DYNAMIC_SCOPES = envint("PORTAL_MAINTENANCE_MAX_DYNAMIC_SCOPES", "200")
# Webhooks: attempts in all, the first retry's delay (doubled each time), and plain http (debug, tests).
PORTAL_WEBHOOK_MAX_ATTEMPTS = envint("PORTAL_WEBHOOK_MAX_ATTEMPTS", "5")
PORTAL_WEBHOOK_RETRY_SECONDS = envfloat("PORTAL_WEBHOOK_RETRY_SECONDS", "10")
PORTAL_WEBHOOK_TIMEOUT_SECONDS = envfloat("PORTAL_WEBHOOK_TIMEOUT_SECONDS", "10")
PORTAL_WEBHOOK_ALLOW_HTTP = envbool("PORTAL_WEBHOOK_ALLOW_HTTP", "true" if DEBUG else "false")

# --- The simulation -------------------------------------------------------------------------------
# Simulated guest work is measured in simulated seconds; the worker sleeps that long divided by
# PORTAL_SIM_SPEED. 0 means "don't sleep at all" (tests, benchmarks, the seed's history).
PORTAL_SIM_SPEED = envfloat("PORTAL_SIM_SPEED", "120")
# Deterministic per-(VM, KB, day) installation failure rate, and per-attempt agent-unreachable rate.
PORTAL_PATCH_FAILURE_RATE = envfloat("PORTAL_PATCH_FAILURE_RATE", "0.02")
PORTAL_AGENT_UNREACHABLE_RATE = envfloat("PORTAL_AGENT_UNREACHABLE_RATE", "0.0")
# An operation still queued or running this long after it was created is failed by the beat task.
PORTAL_STALE_OPERATION_AFTER = timedelta(minutes=envint("PORTAL_STALE_OPERATION_MINUTES", "30"))
# The outbox: a queued operation handed to the broker this long ago and still not started is sent again
# (a lost message, a Redis restarted without its data); one never handed over is sent at the next beat.
PORTAL_DISPATCH_AGAIN_AFTER = timedelta(seconds=envint("PORTAL_DISPATCH_AGAIN_SECONDS", "60"))
# A running operation refreshes its heartbeat every PORTAL_HEARTBEAT_SECONDS; one silent for
# PORTAL_HEARTBEAT_TIMEOUT_SECONDS lost its worker: it is re-sent and taken over, up to
# PORTAL_MAX_ATTEMPTS claims in all (agent retries included), then failed.
PORTAL_HEARTBEAT_SECONDS = envfloat("PORTAL_HEARTBEAT_SECONDS", "10")
PORTAL_HEARTBEAT_TIMEOUT = timedelta(seconds=envint("PORTAL_HEARTBEAT_TIMEOUT_SECONDS", "60"))
PORTAL_MAX_ATTEMPTS = envint("PORTAL_MAX_ATTEMPTS", "6")
# How many days of update history are kept before being pruned.
PORTAL_HISTORY_RETENTION_DAYS = envint("PORTAL_HISTORY_RETENTION_DAYS", "365")
# Preview-feature and provider registration take this long ("up to 15 minutes" in the seed).
PORTAL_REGISTRATION_SECONDS = envint("PORTAL_REGISTRATION_SECONDS", "60")
# While on (as in the 2021 preview), turning hotpatch on needs the three features and the provider registered.
PORTAL_PREVIEW_GATE = envbool("PORTAL_PREVIEW_GATE", "true")
# The largest fleet file the /sandbox/import/ page takes (manage.py import_fleet has no limit).
PORTAL_IMPORT_MAX_BYTES = envint("PORTAL_IMPORT_MAX_BYTES", str(50 * 1024 * 1024))
for _name in ("PORTAL_PATCH_FAILURE_RATE", "PORTAL_AGENT_UNREACHABLE_RATE"):
    if not 0.0 <= globals()[_name] <= 1.0:
        raise ImproperlyConfigured(f"{_name} must be between 0 and 1")
if PORTAL_HEARTBEAT_SECONDS <= 0 or PORTAL_HEARTBEAT_TIMEOUT.total_seconds() < 2 * PORTAL_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("PORTAL_HEARTBEAT_TIMEOUT_SECONDS must be at least twice PORTAL_HEARTBEAT_SECONDS")
if PORTAL_SIM_SPEED < 0:
    raise ImproperlyConfigured("PORTAL_SIM_SPEED must be 0 (no sleeping) or positive")

# --- Automatic patching (patching/orchestrator) ---------------------------------------------------
# Validated by a system check (patching/checks.py): `manage.py check`, `migrate` and `make demo` refuse
# to go on with a bad value, naming the setting. Empty means the default (patching/orchestrator/rules.py).
# The off-peak window in each VM's own time zone (HH:MM-HH:MM, may cross midnight; 00:00-24:00 is all day).
PORTAL_OFF_PEAK_WINDOW = env("PORTAL_OFF_PEAK_WINDOW")
# Rollout phases: regions separated by ',', phases by ';' (the default: three phases, geo pairs
# apart). Geo pairs may not share a phase; regions not listed roll out after the listed phases.
PORTAL_ROLLOUT_PHASES = env("PORTAL_ROLLOUT_PHASES")
# A release's rollout halts when more than this share of its automatic installations failed, once
# at least PORTAL_ROLLOUT_HALT_MIN_ATTEMPTS have finished (an operator resumes it in the admin).
PORTAL_ROLLOUT_HALT_FAILURE_RATE = envfloat("PORTAL_ROLLOUT_HALT_FAILURE_RATE", "0.25")
PORTAL_ROLLOUT_HALT_MIN_ATTEMPTS = envint("PORTAL_ROLLOUT_HALT_MIN_ATTEMPTS", "10")
# An enrolled VM that missed a baseline (it was off) takes it at its next window even in a hotpatch
# month (true), or waits for the next baseline month (false).
PORTAL_BASELINE_CATCH_UP = envbool("PORTAL_BASELINE_CATCH_UP", "true")
# The sandbox (patching/sandbox.py): one advance of the simulated clock covers at most this many days.
PORTAL_SANDBOX_MAX_ADVANCE = timedelta(days=envint("PORTAL_SANDBOX_MAX_ADVANCE_DAYS", "100"))
if PORTAL_SANDBOX_MAX_ADVANCE.days < 1:
    raise ImproperlyConfigured("PORTAL_SANDBOX_MAX_ADVANCE_DAYS must be at least 1")
# Periodic assessment: every 24 h with assessmentMode AutomaticByPlatform, every this many days otherwise.
PORTAL_ASSESSMENT_INTERVAL_DAYS = envint("PORTAL_ASSESSMENT_INTERVAL_DAYS", "3")
for _name in ("PORTAL_PATCH_BEAT_SECONDS", "PORTAL_ASSESSMENT_BEAT_SECONDS"):
    if envint(_name, "60") < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1 (seconds between beat rounds)")

# --- The ARM-compatible API (/arm/) -----------------------------------------------------------------
# Seconds a client should wait between polls of a long-running operation (the SDK prefers this over
# its own polling_interval); 0 in tests.
PORTAL_ARM_RETRY_AFTER = envint("PORTAL_ARM_RETRY_AFTER", "2")
# Items per page of a list (nextLink follows).
PORTAL_ARM_PAGE_SIZE = envint("PORTAL_ARM_PAGE_SIZE", "100")
# This installation's tenant GUID (`az login --tenant` takes it; every subscription reports it).
# Unset: derived from SECRET_KEY (stable while the key is, different on every installation).
# PORTAL_ARM_TENANT_ID is its older name.
PORTAL_TENANT_ID = env("PORTAL_TENANT_ID") or env("PORTAL_ARM_TENANT_ID")
if PORTAL_TENANT_ID:
    try:
        PORTAL_TENANT_ID = str(uuid.UUID(PORTAL_TENANT_ID))
    except ValueError:
        raise ImproperlyConfigured(f"PORTAL_TENANT_ID={PORTAL_TENANT_ID!r} is not a GUID") from None
else:
    # An HMAC of the secret key, not the key itself: the tenant id is public.
    _tenant_seed = hmac.new(SECRET_KEY.encode(), b"hotpatch-portal tenant", hashlib.sha256).hexdigest()
    PORTAL_TENANT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:hotpatch-portal:tenant:{_tenant_seed}"))
PORTAL_ARM_TENANT_ID = PORTAL_TENANT_ID
if PORTAL_ARM_RETRY_AFTER < 0 or PORTAL_ARM_PAGE_SIZE < 1:
    raise ImproperlyConfigured("PORTAL_ARM_RETRY_AFTER must be >= 0 and PORTAL_ARM_PAGE_SIZE >= 1")

# --- Identity for the Azure CLI (portal/arm/identity.py: service principals, ADFS-style token endpoint) ---
# The audience (the "resource") access tokens are issued for: the CLI's activeDirectoryResourceId and
# management endpoint, from GET /arm/metadata/endpoints. Any stable URL; it is never fetched.
PORTAL_ARM_AUDIENCE = env("PORTAL_ARM_AUDIENCE", "https://management.hotpatch-portal.local/")
# Lifetime of an access token (the CLI caches it that long; a revoked principal is refused at once).
PORTAL_ACCESS_TOKEN_SECONDS = envint("PORTAL_ACCESS_TOKEN_SECONDS", "3600")
# Failed client-credential attempts allowed per client id and per client IP address within the window;
# past that the token endpoint answers 429 until the window has passed.
PORTAL_TOKEN_FAILURES_PER_CLIENT = envint("PORTAL_TOKEN_FAILURES_PER_CLIENT", "10")
PORTAL_TOKEN_FAILURES_PER_IP = envint("PORTAL_TOKEN_FAILURES_PER_IP", "30")
PORTAL_TOKEN_FAILURE_WINDOW_SECONDS = envint("PORTAL_TOKEN_FAILURE_WINDOW_SECONDS", "900")
if PORTAL_ACCESS_TOKEN_SECONDS < 60 or min(PORTAL_TOKEN_FAILURES_PER_CLIENT, PORTAL_TOKEN_FAILURES_PER_IP) < 1:
    raise ImproperlyConfigured(
        "PORTAL_ACCESS_TOKEN_SECONDS must be at least 60 and the PORTAL_TOKEN_FAILURES_* limits at least 1"
    )
# The token endpoint refuses plain http (a client secret must not cross the network in clear text).
PORTAL_IDENTITY_REQUIRE_HTTPS = envbool("PORTAL_IDENTITY_REQUIRE_HTTPS", "true")
# make demo: the https port the Azure CLI talks to (the browser keeps http on PORT).
PORTAL_TLS_PORT = envint("PORTAL_TLS_PORT", "8443")
# The https address the "Use the Azure CLI" page tells the CLI to use, e.g. https://portal.example.com.
# Unset: the address the page was read at if that was https, else the same host on PORTAL_TLS_PORT.
PORTAL_CLI_BASE_URL = env("PORTAL_CLI_BASE_URL").rstrip("/")
# The certificate a client must trust (REQUESTS_CA_BUNDLE) when it is not publicly trusted: the page
# shows it and offers it for download. Default: the one `manage.py make_dev_cert` writes.
PORTAL_TLS_CERT = env("PORTAL_TLS_CERT", str(VAR_DIR / "tls" / "cert.pem"))

# --- Cache: the token endpoint's failure counters, shared by every web worker ----------------------
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "hotpatch-portal",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
}
