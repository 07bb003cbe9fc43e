"""Spawner settings: everything comes from the environment, with defaults for a fresh machine."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SPAWNER_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _secret_key() -> str:
    """Use SPAWNER_SECRET_KEY, else a key generated once and kept in var/."""
    if key := os.environ.get("SPAWNER_SECRET_KEY"):
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("SPAWNER_DEBUG", "0") == "1"
ALLOWED_HOSTS = os.environ.get("SPAWNER_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("SPAWNER_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_q",
    "django_htmx",
    "template_partials",
    "ninja",  # the REST API (dashboard/api): its docs page's assets are served from static
    "spawner",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "dashboard.api.limits.body_limit",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "spawner.urls"
ASGI_APPLICATION = "spawner.asgi.application"
WSGI_APPLICATION = "spawner.wsgi.application"

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
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# SQLite by default: WAL so readers never block the writer, IMMEDIATE
# transactions so two writers queue on the busy timeout instead of failing with
# "database is locked" halfway through a transaction.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'spawner.sqlite3'}"),
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if os.environ.get("SPAWNER_SQLITE_WRITE_LOCK", "1") == "1":
        DATABASES["default"]["ENGINE"] = "spawner.sqlite"
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not :memory:) so the cluster subprocess in integration tests shares it.
    DATABASES["default"].setdefault("TEST", {})["NAME"] = str(VAR_DIR / f"test-{os.getpid()}.sqlite3")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# A form without its CSRF token gets the site's 403 page, saying what to do.
CSRF_FAILURE_VIEW = "dashboard.pages.errors.csrf_failure"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

# --- Spawner engine -------------------------------------------------------------
SPAWNER = {
    # Where each attempt's full output goes.
    "LOG_DIR": Path(os.environ.get("SPAWNER_LOG_DIR", VAR_DIR / "logs")),
    # Where coding agents' git worktrees live (one directory per batch).
    "WORKSPACE_DIR": Path(os.environ.get("SPAWNER_WORKSPACE_DIR", VAR_DIR / "workspaces")),
    # An attempt whose heartbeat is older than this is lost (its worker died).
    "LEASE_SECONDS": _env_float("SPAWNER_LEASE_SECONDS", 30),
    # An agent whose worker's heartbeat has not reached the database for this long is stopped by its
    # own launcher, before any other cluster may run it again (0: 0.6 x the lease).
    "FENCE_SECONDS": _env_float("SPAWNER_FENCE_SECONDS", 0),
    # How often a running attempt writes its heartbeat, and polls for cancel.
    "HEARTBEAT_SECONDS": _env_float("SPAWNER_HEARTBEAT_SECONDS", 5),
    "POLL_SECONDS": _env_float("SPAWNER_POLL_SECONDS", 0.2),
    # How often the reaper looks for lost attempts and stalled batches.
    "REAPER_SECONDS": _env_float("SPAWNER_REAPER_SECONDS", 2),
    # How often output reaches the database (tail + event) at most.
    "OUTPUT_SECONDS": _env_float("SPAWNER_OUTPUT_SECONDS", 1),
    "TAIL_BYTES": _env_int("SPAWNER_TAIL_BYTES", 16_384),
    # SIGTERM first, then SIGKILL after this grace.
    "KILL_GRACE_SECONDS": _env_float("SPAWNER_KILL_GRACE_SECONDS", 5),
    # A stopping cluster lets running agents finish this long, then hands the rest back (no retry spent).
    "DRAIN_SECONDS": _env_float("SPAWNER_DRAIN_SECONDS", 300),
    # Housekeeping (`manage.py spawner_gc`, and each cluster every GC_SECONDS, 0 = never): a worktree
    # of an ended batch goes once merged or discarded, or this long after its batch ended.
    "WORKTREE_RETENTION_HOURS": _env_float("SPAWNER_WORKTREE_RETENTION_HOURS", 72),
    "GC_SECONDS": _env_float("SPAWNER_GC_SECONDS", 600),
    "GC_LIMIT": _env_int("SPAWNER_GC_LIMIT", 50),  # worktrees removed per scheduled round at most
    # Cluster processes keep database connections this long (the web server does not).
    "WORKER_CONN_MAX_AGE": _env_int("SPAWNER_WORKER_CONN_MAX_AGE", 300),
    # Wake the waiting side (pushers, relays) when work is committed; "off" leaves the polls alone.
    "WAKE": os.environ.get("SPAWNER_WAKE", "on") != "off",
    "MAX_TASKS": _env_int("SPAWNER_MAX_TASKS", 1000),
    "MAX_PARALLEL": _env_int("SPAWNER_MAX_PARALLEL", 256),
    "MAX_TIMEOUT": _env_int("SPAWNER_MAX_TIMEOUT", 4 * 3600),
    "MAX_RETRIES": _env_int("SPAWNER_MAX_RETRIES", 10),
    "BACKOFF_SECONDS": _env_float("SPAWNER_BACKOFF_SECONDS", 2),
    "BACKOFF_MAX_SECONDS": _env_float("SPAWNER_BACKOFF_MAX_SECONDS", 300),
    # Rate limits: a run waits out at most this many limits, this long in all, each wait capped.
    "RATE_LIMIT_MAX_WAITS": _env_int("SPAWNER_RATE_LIMIT_MAX_WAITS", 20),
    "RATE_LIMIT_MAX_TOTAL_SECONDS": _env_float("SPAWNER_RATE_LIMIT_MAX_TOTAL_SECONDS", 1800),
    "RATE_LIMIT_MAX_WAIT_SECONDS": _env_float("SPAWNER_RATE_LIMIT_MAX_WAIT_SECONDS", 300),
    # Model agents: connecting, and the longest silence between two streamed chunks.
    "MODEL_CONNECT_TIMEOUT_SECONDS": _env_float("SPAWNER_MODEL_CONNECT_TIMEOUT_SECONDS", 10),
    "MODEL_READ_TIMEOUT_SECONDS": _env_float("SPAWNER_MODEL_READ_TIMEOUT_SECONDS", 120),
    # Webhooks: sent by the cluster's delivery loop, never by an agent's worker. Hosts listed in
    # SPAWNER_WEBHOOK_ALLOW_HOSTS (comma-separated) may be private or loopback; no other may.
    "WEBHOOK_ALLOW_HOSTS": os.environ.get("SPAWNER_WEBHOOK_ALLOW_HOSTS", ""),
    "WEBHOOK_TIMEOUT_SECONDS": _env_float("SPAWNER_WEBHOOK_TIMEOUT_SECONDS", 5),
    "WEBHOOK_ATTEMPTS": _env_int("SPAWNER_WEBHOOK_ATTEMPTS", 6),
    "WEBHOOK_BACKOFF_SECONDS": _env_float("SPAWNER_WEBHOOK_BACKOFF_SECONDS", 5),
    "WEBHOOK_BACKOFF_MAX_SECONDS": _env_float("SPAWNER_WEBHOOK_BACKOFF_MAX_SECONDS", 600),
    "WEBHOOK_POLL_SECONDS": _env_float("SPAWNER_WEBHOOK_POLL_SECONDS", 0.5),
    # The broker outbox (spawner.engine.queue, with Redis): a message owed is sent right after its commit;
    # a cluster's sender loop sends it after OUTBOX_GRACE_SECONDS if that did not happen (the committing
    # process died), and again after a failed send, from OUTBOX_RETRY_SECONDS doubling up to the max.
    "OUTBOX_GRACE_SECONDS": _env_float("SPAWNER_OUTBOX_GRACE_SECONDS", 10),
    "OUTBOX_RETRY_SECONDS": _env_float("SPAWNER_OUTBOX_RETRY_SECONDS", 0.5),
    "OUTBOX_RETRY_MAX_SECONDS": _env_float("SPAWNER_OUTBOX_RETRY_MAX_SECONDS", 5),
    "OUTBOX_POLL_SECONDS": _env_float("SPAWNER_OUTBOX_POLL_SECONDS", 0.5),
    # The API's event stream (GET /api/batches/{id}/events): how often an idle stream looks at the
    # log again, the keep-alive comment's interval, and how long one stream lasts before the client
    # resumes it (Last-Event-ID).
    "EVENTS_WAIT_SECONDS": _env_float("SPAWNER_EVENTS_WAIT_SECONDS", 0.5),
    "EVENTS_KEEPALIVE_SECONDS": _env_float("SPAWNER_EVENTS_KEEPALIVE_SECONDS", 15),
    "EVENTS_STREAM_SECONDS": _env_float("SPAWNER_EVENTS_STREAM_SECONDS", 1800),
    # Cost (issue 10): the new-batch page asks for a confirmation above this estimated cost (USD).
    "CONFIRM_COST_USD": _env_float("SPAWNER_CONFIRM_COST_USD", 5.0),
    # ... and when this many runs of paid agents (models, CLIs that report usage) have no estimate yet.
    "CONFIRM_UNKNOWN_RUNS": _env_int("SPAWNER_CONFIRM_UNKNOWN_RUNS", 10),
    # Review: how many approvals make a combined result approved, and whether the batch's owner's own
    # approval is one of them (by default someone other than the owner approves).
    "REVIEW_APPROVALS": max(1, _env_int("SPAWNER_REVIEW_APPROVALS", 1)),
    "REVIEW_OWNER_COUNTS": os.environ.get("SPAWNER_REVIEW_OWNER_COUNTS", "0") == "1",
    # Environment variables passed from the server to every agent process.
    "ENV_ALLOWLIST": os.environ.get("SPAWNER_ENV_ALLOWLIST", "PATH,HOME,LANG,LC_ALL,TERM,TMPDIR,USER,SHELL,TZ").split(
        ","
    ),
}
SPAWNER["LOG_DIR"].mkdir(parents=True, exist_ok=True)
# An agent's launcher stops it once its worker's heartbeat is older than the fence (0.6 x the lease
# by default, spawner.engine.execution.fence_seconds): the heartbeat must renew it well within that,
# whatever the lease is set to, or every agent would be fenced. So it beats at least 3 times a fence.
_FENCE = min(SPAWNER["FENCE_SECONDS"] or 0.6 * SPAWNER["LEASE_SECONDS"], 0.9 * SPAWNER["LEASE_SECONDS"])
SPAWNER["HEARTBEAT_SECONDS"] = min(SPAWNER["HEARTBEAT_SECONDS"], _FENCE / 3)

# --- where finished logs are kept, for every web server to read ----------------------------------
# Agents write their output under SPAWNER_LOG_DIR on their own machine while they run. Unset, the
# logs stay there (one machine: the web server reads them in place, nothing is copied). With
# SPAWNER_LOG_STORAGE_DIR (a directory every machine mounts) or SPAWNER_LOG_STORAGE_BACKEND (any
# Django storage, e.g. storages.backends.s3.S3Storage, configured by SPAWNER_LOG_STORAGE_OPTIONS as
# JSON), a finished attempt's files are stored there and its live output goes through the database.
_LOG_STORAGE_BACKEND = os.environ.get("SPAWNER_LOG_STORAGE_BACKEND", "")
_LOG_STORAGE_DIR = os.environ.get("SPAWNER_LOG_STORAGE_DIR", "")
_LOG_STORAGE_OPTIONS = json.loads(os.environ.get("SPAWNER_LOG_STORAGE_OPTIONS") or "{}")
if not isinstance(_LOG_STORAGE_OPTIONS, dict):
    raise ValueError('SPAWNER_LOG_STORAGE_OPTIONS must be a JSON object, e.g. {"bucket_name": "logs"}')
if not _LOG_STORAGE_BACKEND:
    _LOG_STORAGE_OPTIONS.setdefault("location", _LOG_STORAGE_DIR or str(SPAWNER["LOG_DIR"]))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "spawner_logs": {
        "BACKEND": _LOG_STORAGE_BACKEND or "django.core.files.storage.FileSystemStorage",
        "OPTIONS": _LOG_STORAGE_OPTIONS,
    },
}
# The storage alias finished logs go to; "" keeps them in SPAWNER_LOG_DIR (the single-machine default).
SPAWNER["LOG_STORAGE"] = "spawner_logs" if (_LOG_STORAGE_BACKEND or _LOG_STORAGE_DIR) else ""
# Live output kept in the database per running attempt at most (shared storage only); past it the
# viewer shows what came so far and the whole log once the attempt ends.
SPAWNER["LIVE_LOG_MAX_BYTES"] = _env_int("SPAWNER_LIVE_LOG_MAX_BYTES", 32 * 1024 * 1024)

# --- django-q2 ------------------------------------------------------------------
# Agents mostly wait on their processes, so workers are not bounded by cores.
# q2 re-delivers a task that outlives `retry`: keep it above the longest agent
# timeout plus the longest backoff, so only a dead worker causes a re-delivery
# (and the attempt fencing turns that re-delivery into a no-op).
SPAWNER_WORKERS = _env_int("SPAWNER_WORKERS", 20)
_Q_TIMEOUT = (
    SPAWNER["MAX_TIMEOUT"] + int(max(SPAWNER["BACKOFF_MAX_SECONDS"], SPAWNER["RATE_LIMIT_MAX_WAIT_SECONDS"])) + 120
)
if DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    # A process stopped or cut off in the middle of a transaction holds its row locks until its
    # session ends, and several such processes queued for one row (a batch's) hand the lock from one
    # to the next: PostgreSQL ends a session idle in a transaction after this long (a sixth of the
    # lease, at least 1 s), so the clusters still alive can reap its attempts and move its batches on.
    _idle_tx = _env_float("SPAWNER_DB_IDLE_TRANSACTION_SECONDS", max(1.0, SPAWNER["LEASE_SECONDS"] / 6))
    if _idle_tx > 0:
        _options = DATABASES["default"].setdefault("OPTIONS", {})
        _options["options"] = (
            _options.get("options", "") + f" -c idle_in_transaction_session_timeout={int(_idle_tx * 1000)}"
        ).strip()

Q_CLUSTER = {
    "name": "spawner",
    "workers": SPAWNER_WORKERS,
    "recycle": 500,
    "timeout": _Q_TIMEOUT,
    "retry": _Q_TIMEOUT + 60,
    "queue_limit": SPAWNER_WORKERS,
    # The ORM broker's pusher is woken when a message is committed (spawner.engine.wake); this poll is
    # the fallback for a wake-up that never comes (a launch on another machine sharing PostgreSQL).
    "poll": _env_float("SPAWNER_BROKER_POLL", 0.1),
    "guard_cycle": 0.5,
    "ack_failures": True,
    "max_attempts": 1,
    "save_limit": 500,
    "catch_up": False,
    "label": "Task queue",
}
if redis_url := os.environ.get("REDIS_URL"):
    Q_CLUSTER["redis"] = redis_url
else:
    Q_CLUSTER["orm"] = "default"
# q2's broker plus a note of which cluster took each attempt, so a dead cluster's prefetched
# messages are sent again (spawner/engine/recovery.py).
Q_CLUSTER["broker_class"] = "spawner.engine.broker." + ("Orm" if "orm" in Q_CLUSTER else "Redis")

# --- Channels -------------------------------------------------------------------
if redis_url := os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("SPAWNER_LOG_LEVEL", "WARNING")},
    "loggers": {
        "django_q": {"level": os.environ.get("SPAWNER_Q_LOG_LEVEL", "WARNING")},
    },
}

# --- dashboard ---
# Every page needs a signed-in user unless its view says otherwise (the login page).
MIDDLEWARE += ["django.contrib.auth.middleware.LoginRequiredMiddleware", "dashboard.middleware.HtmxLoginRedirect"]
# daphne serves static files itself through servestatic, straight from the finders,
# so `make run` works without collectstatic.
SERVESTATIC_USE_FINDERS = True
# Where batches launched from the browser run (a spec's `cwd` is relative to it).
SPAWNER_WORKDIR = Path(os.environ.get("SPAWNER_WORKDIR", BASE_DIR))
DASHBOARD = {
    # How often the relay reads new events from the log when no wake-up comes (spawner.engine.wake
    # wakes it on each commit of events); bounds the live latency only without wake-ups.
    "RELAY_POLL_SECONDS": _env_float("SPAWNER_RELAY_POLL_SECONDS", 0.1),
    "PAGE_SIZE": 25,
    # Bytes of full log returned by each "load earlier output".
    "LOG_CHUNK_BYTES": 65_536,
}
