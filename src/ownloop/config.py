"""The one place that reads configuration (environment variables, with defaults)."""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from ownloop import objectstore
from ownloop._files import inside, private_folder
from ownloop.errors import InvalidInputError, StoreUnavailableError

__all__ = ["Config"]


# The name audit rows record for the local user; fullmatch, so no trailing newline slips in.
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def _default_user() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        name = ""
    # LOGNAME or USER may hold anything; keep what a user name may hold, else fall back to the uid
    cleaned = re.sub(r"[^A-Za-z0-9._@+-]", "_", name).lstrip("._@+-")[:64]
    return cleaned if _USER.fullmatch(cleaned) else f"uid-{os.getuid()}"


def _user(env: Mapping[str, str]) -> str:
    raw = env.get("OWNLOOP_USER")
    if not raw:
        return _default_user()
    if not _USER.fullmatch(raw):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise InvalidInputError(
            f"OWNLOOP_USER={shown!r} is not a user name ownloop records: use 1 to 64 letters, "
            "digits, '.', '_', '@', '+' or '-', starting with a letter or digit "
            "(e.g. OWNLOOP_USER=alice)"
        )
    return raw


_N = TypeVar("_N", int, float)


def _number(
    env: Mapping[str, str], name: str, default: _N, kind: type[_N], low: _N, high: _N
) -> _N:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidInputError(
            f"{name}={raw!r} is not a{'n integer' if kind is int else ' number'}; unset it or fix it"
        ) from None
    if not low <= value <= high:
        raise InvalidInputError(f"{name}={raw} is outside {low}..{high}; unset it or fix it")
    return value


_S3_ENV = ("AWS_", "OWNLOOP_S3_")


def _url(env: Mapping[str, str], name: str) -> str | None:
    """An object-storage URL setting, checked for its form now (the bucket is reached later)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    objectstore.parse_url(name, raw)
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Config:
    """Where ownloop keeps its state and who is acting.

    >>> Config.from_env({"OWNLOOP_HOME": "/tmp/x"}).db_url
    'sqlite:////tmp/x/ownloop.db'
    """

    home: Path
    db_url_override: str | None = None
    user: str = "local"
    predlog_flush_s: float = 1.0
    predlog_max_buffer: int = 500_000
    cpu_hour_price: float = 0.05
    max_body_bytes: int = 8 * 1024 * 1024
    max_json_depth: int = 32
    max_model_bytes: int = 2 << 30
    reload_poll_s: float = 0.5
    deploy_tick_s: float = 5.0
    shadow_queue: int = 1000
    allow_env_mismatch: bool = False
    smtp_url: str | None = None  # smtp://user:pass@host:port or smtps://...; unset: no mail
    smtp_from: str = "ownloop@localhost"
    allow_private_webhooks: bool = False  # let alerts reach loopback and private addresses
    outbound_timeout_s: float = 10.0  # the whole of one outbound request (webhook, mail)
    alert_repeat_s: float = 4 * 3600.0  # an open, unacknowledged alert is sent again this often
    alert_tick_s: float = 30.0  # how often a serve process evaluates rules and delivers
    public_url: str | None = None  # where people reach ownloop serve, for links in alerts
    serve_monitor_every_s: float | None = None  # serve runs the monitors this often (off: None)
    compact_every_s: float | None = None  # serve compacts the prediction log this often (off)
    compact_older_than_s: float = 3600.0  # ... merging segments written at least this long ago
    auth: bool = False  # require a token on loopback too (off loopback it is always required)
    public_inference: bool = False  # inference answers without a token (everything else needs one)
    max_label_rows: int = 10_000  # rows in one label batch (HTTP or Python)
    max_header_bytes: int = 16 * 1024  # request line and headers of one HTTP request, in all
    max_headers: int = 100  # header fields in one HTTP request
    header_timeout_s: float = 10.0  # a client must send its request line and headers in this time
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int = 1000  # open connections per serve process; more are answered 503
    session_hours: float = 12.0  # a dashboard sign-in lasts this long (and never past its token)
    # Host names the dashboard answers besides loopback ones (DNS-rebinding guard), e.g. a proxy's
    allowed_hosts: tuple[str, ...] = ()
    # s3://bucket/prefix for the prediction log and the artifacts (unset: folders under home)
    predictions_url: str | None = None
    artifacts_url: str | None = None
    # the environment the S3 credentials and endpoint are read from (AWS_*, OWNLOOP_S3_*)
    s3_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        return cls._read(env)

    @classmethod
    def _read(cls, env: Mapping[str, str]) -> Config:
        home = Path(env.get("OWNLOOP_HOME") or ".ownloop").expanduser().absolute()
        return cls(
            home=home,
            db_url_override=env.get("OWNLOOP_DB_URL") or None,
            user=_user(env),
            predlog_flush_s=_number(env, "OWNLOOP_PREDLOG_FLUSH_S", 1.0, float, 0.01, 60.0),
            predlog_max_buffer=_number(env, "OWNLOOP_PREDLOG_MAX_BUFFER", 500_000, int, 1, 10**9),
            cpu_hour_price=_number(env, "OWNLOOP_CPU_HOUR_PRICE", 0.05, float, 0.0, 1e6),
            max_body_bytes=_number(env, "OWNLOOP_MAX_BODY_BYTES", 8 << 20, int, 1024, 1 << 34),
            max_json_depth=_number(env, "OWNLOOP_MAX_JSON_DEPTH", 32, int, 2, 1000),
            max_model_bytes=_number(env, "OWNLOOP_MAX_MODEL_BYTES", 2 << 30, int, 1024, 1 << 40),
            reload_poll_s=_number(env, "OWNLOOP_RELOAD_POLL_S", 0.5, float, 0.05, 60.0),
            deploy_tick_s=_number(env, "OWNLOOP_DEPLOY_TICK_S", 5.0, float, 0.1, 3600.0),
            shadow_queue=_number(env, "OWNLOOP_SHADOW_QUEUE", 1000, int, 1, 10**6),
            allow_env_mismatch=env.get("OWNLOOP_ALLOW_ENV_MISMATCH", "").lower()
            in ("1", "true", "yes"),
            smtp_url=env.get("OWNLOOP_SMTP_URL") or None,
            smtp_from=env.get("OWNLOOP_SMTP_FROM") or "ownloop@localhost",
            allow_private_webhooks=env.get("OWNLOOP_ALLOW_PRIVATE_WEBHOOKS", "").lower()
            in ("1", "true", "yes"),
            outbound_timeout_s=_number(env, "OWNLOOP_OUTBOUND_TIMEOUT_S", 10.0, float, 0.1, 300.0),
            alert_repeat_s=_number(env, "OWNLOOP_ALERT_REPEAT_S", 14400.0, float, 1.0, 1e7),
            alert_tick_s=_number(env, "OWNLOOP_ALERT_TICK_S", 30.0, float, 0.1, 86400.0),
            public_url=(env.get("OWNLOOP_PUBLIC_URL") or "").rstrip("/") or None,
            serve_monitor_every_s=_number(
                env, "OWNLOOP_SERVE_MONITOR_EVERY_S", 0.0, float, 0.0, 86400.0 * 7
            )
            or None,
            compact_every_s=_number(env, "OWNLOOP_COMPACT_EVERY_S", 0.0, float, 0.0, 86400.0 * 7)
            or None,
            compact_older_than_s=_number(
                env, "OWNLOOP_COMPACT_OLDER_THAN_S", 3600.0, float, 60.0, 86400.0 * 7
            ),
            auth=_flag(env, "OWNLOOP_AUTH"),
            public_inference=_flag(env, "OWNLOOP_PUBLIC_INFERENCE"),
            max_label_rows=_number(env, "OWNLOOP_MAX_LABEL_ROWS", 10_000, int, 1, 10**7),
            max_header_bytes=_number(env, "OWNLOOP_MAX_HEADER_BYTES", 16 << 10, int, 1024, 1 << 24),
            max_headers=_number(env, "OWNLOOP_MAX_HEADERS", 100, int, 8, 10_000),
            header_timeout_s=_number(env, "OWNLOOP_HEADER_TIMEOUT_S", 10.0, float, 0.1, 600.0),
            keep_alive_s=_number(env, "OWNLOOP_KEEP_ALIVE_S", 5.0, float, 0.1, 3600.0),
            max_connections=_number(env, "OWNLOOP_MAX_CONNECTIONS", 1000, int, 1, 10**6),
            session_hours=_number(env, "OWNLOOP_SESSION_HOURS", 12.0, float, 0.01, 24.0 * 90),
            allowed_hosts=tuple(
                h.strip().lower()
                for h in env.get("OWNLOOP_ALLOWED_HOSTS", "").split(",")
                if h.strip()
            ),
            predictions_url=_url(env, "OWNLOOP_PREDICTIONS_URL"),
            artifacts_url=_url(env, "OWNLOOP_ARTIFACTS_URL"),
            s3_env=tuple(sorted((k, v) for k, v in env.items() if k.startswith(_S3_ENV))),
        )

    def with_home(self, home: Path | str) -> Config:
        return replace(self, home=Path(home).expanduser().absolute())

    def ensure_home(self) -> Path:
        """Create the home folder (0700); a clear error when it is a file or cannot be created.

        A link inside it that leads out of it (the database, artifacts, predictions) is refused.
        """
        try:
            private_folder(self.home)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot use {self.home} as the ownloop home: {exc.strerror or exc}; "
                "point OWNLOOP_HOME at a writable folder"
            ) from exc
        if not self.home.is_dir():
            raise StoreUnavailableError(
                f"{self.home} is not a folder; point OWNLOOP_HOME at a writable folder"
            )
        for name in ("ownloop.db", "ownloop.db-wal", "ownloop.db-shm", "artifacts", "predictions"):
            inside(self.home, self.home / name)
        self.check_storage()
        return self.home

    def check_storage(self) -> None:
        """Reach each bucket set by a URL once; a clear error naming the setting if it fails."""
        for setting, url, path in (
            ("OWNLOOP_PREDICTIONS_URL", self.predictions_url, self.predictions_dir),
            ("OWNLOOP_ARTIFACTS_URL", self.artifacts_url, self.artifacts_dir),
        ):
            if url is not None and isinstance(path, objectstore.ObjectPath):
                objectstore.check(setting, path)

    @property
    def db_url(self) -> str:
        return self.db_url_override or f"sqlite:///{self.home / 'ownloop.db'}"

    @cached_property
    def artifacts_dir(self) -> Path:
        """The artifacts folder, or an :class:`~ownloop.objectstore.ObjectPath` in a bucket."""
        if self.artifacts_url is not None:
            return objectstore.open_location(
                "OWNLOOP_ARTIFACTS_URL", self.artifacts_url, dict(self.s3_env)
            )
        return self.home / "artifacts"

    @cached_property
    def predictions_dir(self) -> Path:
        """The prediction log's folder, or an :class:`~ownloop.objectstore.ObjectPath`."""
        if self.predictions_url is not None:
            return objectstore.open_location(
                "OWNLOOP_PREDICTIONS_URL", self.predictions_url, dict(self.s3_env)
            )
        return self.home / "predictions"
