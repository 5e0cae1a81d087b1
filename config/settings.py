"""Settings for the hash exchange.

One module, every knob an environment variable with a safe default (listed in
.env.example and README.md). With nothing set it runs on SQLite and a Redis on
127.0.0.1:6379; `make run` writes a port of the checkout's own into .env and brings that
Redis up by itself.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import warnings
from pathlib import Path

import dj_database_url
from dotenv import load_dotenv

from core.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
# .env before any setting is read (VAR_DIR too), with python-dotenv, as dev/server.py reads
# it: comments after values, `export`, quotes and repeated keys (the last wins) mean what
# they mean in a shell. Real environment variables win (override=False). A missing file
# (or ENV_FILE=/dev/null, as the tests set it) reads as empty.
load_dotenv(os.environ.get("ENV_FILE", BASE_DIR / ".env"), override=False)

VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))

DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

# Keyed digest of API keys: a leaked database alone does not reveal or forge keys.
# Defaults to SECRET_KEY; set it separately so that SECRET_KEY can rotate.
API_KEY_PEPPER = env_str("API_KEY_PEPPER", SECRET_KEY)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Admin logins: lockout after repeated failures, and TOTP two-factor (config/admin_security.py).
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    # HTTP and database figures for /metrics (config/metrics.py).
    "django_prometheus",
    "core.apps.CoreConfig",
    "exchange.apps.ExchangeConfig",
    "members.apps.MembersConfig",
    "hashes.apps.HashesConfig",
    "intake.apps.IntakeConfig",
    "federation.apps.FederationConfig",
]

MIDDLEWARE = [
    # First and last: django-prometheus times everything in between.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # The request id is on every log line, the 413 below included.
    "config.middleware.RequestIdMiddleware",
    "config.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.SecurityHeadersMiddleware",
    # Last, as django-axes asks: it turns a lockout into its answer.
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# Admin logins (the API authenticates with keys, not these): django-axes locks a username
# from an address out after AXES_FAILURE_LIMIT failures for AXES_COOLOFF_HOURS, and with
# ADMIN_REQUIRE_OTP (on unless DEBUG) the admin asks for a TOTP code as well
# (`manage.py admin_totp USERNAME` gives an admin its authenticator secret).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("AXES_COOLOFF_HOURS", 1)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "config.admin_security.client_ip"
AXES_LOCKOUT_CALLABLE = "config.admin_security.locked_out"
ADMIN_REQUIRE_OTP = env_bool("ADMIN_REQUIRE_OTP", not DEBUG)
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "Hash exchange")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
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

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
# django-prometheus's wrappers of the same backends count queries, errors and connections for /metrics.
_PROMETHEUS_BACKENDS = {
    "django.db.backends.postgresql": "django_prometheus.db.backends.postgresql",
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
}
_ENGINE = DATABASES["default"]["ENGINE"]
DATABASES["default"]["ENGINE"] = _PROMETHEUS_BACKENDS.get(_ENGINE, _ENGINE)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # IMMEDIATE transactions take the write lock at BEGIN, so concurrent writers queue
    # instead of failing with "database is locked" when a read turns into a write.
    # Connections are kept (DB_CONN_MAX_AGE) as on PostgreSQL: a new SQLite connection per
    # request re-read the schema and re-ran the PRAGMAs, ~2 ms of every request that touched
    # the database (docs/decisions.md).
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that the Celery workers and servers that tests start share it.
    DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_SQLITE_NAME", str(VAR_DIR / "test.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_TIMEOUT_SECONDS = float(env_str("REDIS_TIMEOUT_SECONDS", "1.0"))
# After Redis fails on a request path, that path skips Redis for this long in the process.
REDIS_QUIET_SECONDS = float(env_str("REDIS_QUIET_SECONDS", "5"))
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env_str("CACHE_URL", REDIS_URL),
        "KEY_PREFIX": "hx",
        "OPTIONS": {
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
        },
    }
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 1, "socket_timeout": 5}
CELERY_BROKER_CONNECTION_TIMEOUT = 1
# kombu's Redis transport, except that a worker survives losing Redis with a task in
# flight (config/broker.py says why). A rediss:// URL gets TLS with the certificate
# checked, where kombu's own default would not check it.
CELERY_BROKER_TRANSPORT = "config.broker:Transport"
if CELERY_BROKER_URL.startswith("rediss://"):
    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ROUTES = {
    "exchange.tasks.deliver_endpoint": {"queue": "webhooks"},
    "exchange.tasks.deliver_group": {"queue": "webhooks"},
}
# One beat, guaranteed (config/beat.py): every beat takes a lock in Redis before it sends a
# periodic task; a second beat stands by and takes over within BEAT_LOCK_SECONDS of the first dying.
BEAT_LOCK_SECONDS = env_int("BEAT_LOCK_SECONDS", 30)
CELERY_BEAT_SCHEDULER = "config.beat:LockedScheduler"
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {"task": "exchange.tasks.heartbeat", "schedule": 15.0},
    # Finds work whose wake-up call was lost (Redis down) and retries that are due.
    "obligations": {"task": "exchange.tasks.project_obligations", "schedule": 60.0},
    "participation": {
        "task": "exchange.tasks.check_participation",
        "schedule": float(os.environ.get("PARTICIPATION_CHECK_SECONDS") or 3600),
    },
    "webhooks-sweep": {
        "task": "exchange.tasks.sweep_webhooks",
        "schedule": float(os.environ.get("WEBHOOK_SWEEP_SECONDS") or 15),
    },
    # Signs a checkpoint of the audit log when it grew, and asks the witnesses to cosign it.
    "auditlog-checkpoint": {
        "task": "exchange.tasks.checkpoint",
        "schedule": float(os.environ.get("CHECKPOINT_SECONDS") or 10),
    },
    # Merges hashes added since the last matching-index snapshot into a new one (docs/matching.md).
    "match-index-compact": {
        "task": "hashes.tasks.match_index_compact",
        "schedule": float(os.environ.get("MATCH_INDEX_COMPACT_SECONDS") or 60),
    },
    # Quarantines hashes matched far more than their program's usual rate (docs/floods.md).
    "match-anomalies": {
        "task": "exchange.tasks.scan_match_anomalies",
        "schedule": 900.0,
    },
    # Pulls every due peer's feed (docs/federation.md); each peer is claimed in the database.
    "peers-sync": {
        "task": "federation.tasks.peers_sync",
        "schedule": float(os.environ.get("PEER_SYNC_SECONDS") or 2),
    },
    # Builds the programs' feed snapshots that are missing or stale (exchange/snapshots.py).
    "snapshots-refresh": {
        "task": "exchange.tasks.snapshots_refresh",
        "schedule": float(os.environ.get("SNAPSHOT_REFRESH_SECONDS") or 300),
    },
    # Rebuilds the snapshots from the database, dropping retired hashes.
    "match-index-rebuild": {
        "task": "hashes.tasks.match_index_rebuild",
        "schedule": float(os.environ.get("MATCH_INDEX_REBUILD_SECONDS") or 86400),
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
# The languages the intake pages speak (chosen from the browser's Accept-Language): add a
# language here with its catalogue in locale/ (docs/intake.md, "Translations").
LANGUAGES = [("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
# Until `collectstatic` has run (development, tests) WhiteNoise serves through the finders
# and would warn on every request that STATIC_ROOT does not exist yet.
warnings.filterwarnings("ignore", message="No directory at")

# Request bodies above this size are refused with 413 before anything is parsed.
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 4 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

API_RATE_LIMIT = env_str("API_RATE_LIMIT", "1200/min")

# Signed submissions: how far a payload's created_at may be from the server's clock, and
# how many envelopes one request may carry.
SUBMISSION_CLOCK_SKEW_SECONDS = env_int("SUBMISSION_CLOCK_SKEW_SECONDS", 600)
SUBMISSION_BATCH_MAX = env_int("SUBMISSION_BATCH_MAX", 1000)

# Secrets kept in the database (webhook secrets) are encrypted with a key derived from
# this; the clearinghouse's Ed25519 key (webhook v1a signatures, checkpoints) comes from
# SERVER_SIGNING_KEY (standard base64 of a 32-byte seed). Both default to values derived
# from SECRET_KEY; set them explicitly so that SECRET_KEY can rotate.
SECRETS_ENCRYPTION_KEY = env_str("SECRETS_ENCRYPTION_KEY", SECRET_KEY)
SERVER_SIGNING_KEY = env_str("SERVER_SIGNING_KEY", "")

# Webhooks
WEBHOOKS_ALLOW_PRIVATE = env_bool("WEBHOOKS_ALLOW_PRIVATE", False)
# Standard Webhooks recommends 15 to 30 s for a receiver to answer.
WEBHOOK_TIMEOUT_SECONDS = float(env_str("WEBHOOK_TIMEOUT_SECONDS", "15"))
# Seconds to wait before each retry; the default spans about three days.
WEBHOOK_RETRY_SCHEDULE = [
    int(x) for x in env_list("WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000,36000,36000,36000,36000")
]
WEBHOOK_BATCH_SIZE = env_int("WEBHOOK_BATCH_SIZE", 100)
# A worker holds an endpoint this long past its last step (a claim, or an acknowledged
# POST), so a killed worker's endpoint is free again after it. It must outlast one POST
# (connect and read timeouts) and the bookkeeping around it: three timeouts, at least 30 s.
WEBHOOK_CLAIM_SECONDS = env_int("WEBHOOK_CLAIM_SECONDS", max(30, round(3 * WEBHOOK_TIMEOUT_SECONDS)))
WEBHOOK_SWEEP_SECONDS = float(env_str("WEBHOOK_SWEEP_SECONDS", "15"))
# Federation (docs/federation.md): how often beat pulls peers' feeds, how long a peer has
# to answer, entries per page, how long a worker holds a peer, and the longest backoff
# after failures. Peer URLs must be https unless DEBUG or PEERS_ALLOW_HTTP.
PEER_SYNC_SECONDS = float(env_str("PEER_SYNC_SECONDS", "2"))
PEER_TIMEOUT_SECONDS = float(env_str("PEER_TIMEOUT_SECONDS", "30"))
PEER_PAGE_SIZE = env_int("PEER_PAGE_SIZE", 1000)
PEER_CLAIM_SECONDS = env_int("PEER_CLAIM_SECONDS", 300)
PEER_MAX_BACKOFF_SECONDS = env_int("PEER_MAX_BACKOFF_SECONDS", 3600)
PEERS_ALLOW_HTTP = env_bool("PEERS_ALLOW_HTTP", False)
# A new peer link (cursor 0) starts from the peer's program snapshots (federation/snapshots.py).
PEER_BOOTSTRAP_FROM_SNAPSHOTS = env_bool("PEER_BOOTSTRAP_FROM_SNAPSHOTS", True)
# A snapshot of at least PEER_VERIFY_MIN_ENTRIES entries is checked by this many processes
# while the syncing one stores it (federation/verifying.py); -1: one per CPU, up to 4; 0:
# none. Never in a Celery prefork child, which may not have children.
PEER_VERIFY_PROCESSES = env_int("PEER_VERIFY_PROCESSES", -1)
PEER_VERIFY_MIN_ENTRIES = env_int("PEER_VERIFY_MIN_ENTRIES", 20_000)
WEBHOOK_DRAIN_SECONDS = float(env_str("WEBHOOK_DRAIN_SECONDS", "20"))
# One delivery task drains up to this many endpoints together (exchange/delivery.py
# `deliver_group`): endpoints at the same cursor share one page, one query per step and one
# commit per round. Smaller groups spread a fan-out over more tasks, hence processes.
WEBHOOK_GROUP_SIZE = env_int("WEBHOOK_GROUP_SIZE", 5)
# Threads of each worker process that send a group's POSTs at the same time (they wait on
# receivers); 1 sends them one after another.
WEBHOOK_POST_THREADS = env_int("WEBHOOK_POST_THREADS", 32)

# Program snapshots (exchange/snapshots.py): a program's current hashes at a sequence number,
# signed and compressed, so a new member or peer starts there and reads only the feed after it.
SNAPSHOT_DIR = Path(env_str("SNAPSHOT_DIR", str(VAR_DIR / "snapshots")))
SNAPSHOT_REFRESH_SECONDS = float(env_str("SNAPSHOT_REFRESH_SECONDS", "300"))
# A program's snapshot is rebuilt when this many of its events came after it, or when any
# did and it is older than SNAPSHOT_MAX_AGE_SECONDS.
SNAPSHOT_MIN_NEW_EVENTS = env_int("SNAPSHOT_MIN_NEW_EVENTS", 10_000)
SNAPSHOT_MAX_AGE_SECONDS = float(env_str("SNAPSHOT_MAX_AGE_SECONDS", "3600"))

# The audit log (docs/auditlog.md). Its origin names the log in every checkpoint and is the
# key name of its signatures: set it once, before the first checkpoint, and keep it (a
# witness takes a new origin for a new log). By default: SITE_URL without its scheme,
# followed by the path of the log's API, as C2SP tlog-tiles suggests.
AUDITLOG_ORIGIN = env_str("AUDITLOG_ORIGIN", "") or (SITE_URL.split("://", 1)[-1] + "/api/v1/log")
# How often beat signs a checkpoint (when the log grew) and sends it to the witnesses.
CHECKPOINT_SECONDS = float(env_str("CHECKPOINT_SECONDS", "10"))

# Matching (POST /api/v1/match, docs/matching.md).
MATCH_QUERIES_MAX = env_int("MATCH_QUERIES_MAX", 1000)
MATCH_RESULTS_MAX = env_int("MATCH_RESULTS_MAX", 100)
# Snapshots of the index, mapped by every web process of the host; must be a local disk.
MATCH_INDEX_DIR = Path(env_str("MATCH_INDEX_DIR", str(VAR_DIR / "index")))
# 0: check the ledger for new hashes before every match request (one primary-key lookup).
MATCH_REFRESH_SECONDS = float(env_str("MATCH_REFRESH_SECONDS", "0"))
MATCH_INDEX_COMPACT_SECONDS = float(env_str("MATCH_INDEX_COMPACT_SECONDS", "60"))
MATCH_INDEX_REBUILD_SECONDS = float(env_str("MATCH_INDEX_REBUILD_SECONDS", "86400"))
# A compaction writes a new snapshot when this many hashes were added since the last one,
# or when any were and the snapshot is older than MATCH_INDEX_MAX_AGE_SECONDS.
MATCH_INDEX_COMPACT_MIN = env_int("MATCH_INDEX_COMPACT_MIN", 10_000)
MATCH_INDEX_MAX_AGE_SECONDS = float(env_str("MATCH_INDEX_MAX_AGE_SECONDS", "3600"))
# A process that finds no snapshot loads up to this many hashes of a type itself; above
# it, it builds the host's snapshot (under a file lock) and maps it.
MATCH_INDEX_BOOTSTRAP_MAX = env_int("MATCH_INDEX_BOOTSTRAP_MAX", 200_000)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["members.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["members.auth.IsActiveMember", "members.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["core.api.CredentialRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"credential": API_RATE_LIMIT},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.api.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "core.api.Pagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "core.problems.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Hash exchange API",
    "DESCRIPTION": (
        "Members of the clearinghouse submit signed hashes, receive them by pull feed and "
        "webhooks, and report outcomes. Authenticate with `Authorization: Bearer <api key>`. "
        "Errors are application/problem+json."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Operation ids and tags from the path after /api/v1 (`feed_retrieve`, tag `feed`), not
    # `api_v1_feed_retrieve` under one tag `api`: generated clients get readable names.
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Every operation's refusals (401, 400, 404…) as problem+json, from core/schema.py.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "core.schema.add_problem_responses"],
    "ENUM_NAME_OVERRIDES": {
        "MemberKindEnum": "members.models.Member.Kind",
        "MemberStatusEnum": "members.models.Member.Status",
        "EnrollmentStateEnum": "members.models.Enrollment.State",
        "FeedKindEnum": "exchange.feed.FEED_KINDS",
        "ObligationStatusEnum": "exchange.serializers.OBLIGATION_STATUSES",
        "ObligationFilterEnum": "exchange.serializers.OBLIGATION_FILTERS",
        "ItemStatusEnum": "exchange.serializers.ITEM_STATUSES",
        "SignalTypeEnum": "hashexchange_client.signal_types.SIGNAL_TYPE_NAMES",
    },
}

# TLS: behind a proxy that terminates it (deploy/), the proxy says so in X-Forwarded-Proto.
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_TLS_PROXY else None
_SERVED_OVER_TLS = not DEBUG and SITE_URL.startswith("https")
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", _SERVED_OVER_TLS)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Sent only on requests that came over TLS, so plain-HTTP development never sees it.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if _SERVED_OVER_TLS else 0)
# An operator's decision for the whole domain, so off unless set (README, Production).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _SERVED_OVER_TLS and BEHIND_TLS_PROXY)
# Probes and scrapes from inside the network stay on plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
# The debug page (DEBUG=1 only) shows settings; URLs with credentials are shown without them.
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.debug.CredentialHidingFilter"

# /metrics (config/metrics.py): readable with `Authorization: Bearer <METRICS_TOKEN>`, or from
# METRICS_ALLOWED_NETWORKS (comma-separated CIDRs, e.g. 10.0.0.0/8), or from loopback when DEBUG.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network(net, strict=False) for net in env_list("METRICS_ALLOWED_NETWORKS", "")]
# Migrations are not reported as metrics: that would query the database when the app loads.
PROMETHEUS_EXPORT_MIGRATIONS = False

# Logs: plain text, or LOG_FORMAT=json for one JSON object per line; every line carries the
# request id (X-Request-ID) and the Celery task, and API keys, secrets and hash values are
# redacted whatever the level (core/logs.py). Celery workers and beat use the same setting.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
LOGGING = logging_config(log_format=LOG_FORMAT, level=env_str("LOG_LEVEL", "INFO"))

# The intake (/intake/): people open anonymous cases from their own browser (docs/intake.md).
# The member whose keys the cases' keys become, and the program each answer to "were you
# under 18 in the images?" routes to.
INTAKE_MEMBER = env_str("INTAKE_MEMBER", "intake-web")
INTAKE_PROGRAM_MINOR = env_str("INTAKE_PROGRAM_MINOR", "take-it-down")
INTAKE_PROGRAM_ADULT = env_str("INTAKE_PROGRAM_ADULT", "ncii")
# Programs whose participating platforms the page may name; elsewhere it gives a count.
INTAKE_NAMED_PROGRAMS = env_list("INTAKE_NAMED_PROGRAMS", "")
# Abuse controls: proof-of-work bits for opening a case, cases per network address per
# window (kept in Redis as keyed hashes that expire), hashes per case, wrong-secret tries.
INTAKE_POW_BITS = env_int("INTAKE_POW_BITS", 16)
INTAKE_CASES_PER_ADDRESS = env_int("INTAKE_CASES_PER_ADDRESS", 10)
INTAKE_ADDRESS_WINDOW_SECONDS = env_int("INTAKE_ADDRESS_WINDOW_SECONDS", 3600)
INTAKE_MAX_HASHES_PER_CASE = env_int("INTAKE_MAX_HASHES_PER_CASE", 300)
INTAKE_STATUS_TRIES_PER_ADDRESS = env_int("INTAKE_STATUS_TRIES_PER_ADDRESS", 20)
