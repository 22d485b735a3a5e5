"""Where `deepslim auto` keeps its study: an Optuna storage named by ``--storage``.

- none: in memory, one worker.
- ``sqlite:///search.db``: workers on one machine. SQLite locks the whole file, and over a network file
  system its locks are not safe for concurrent writers: not for workers on several machines.
- ``postgresql://user:password@host:port/db``: workers on any machines (Optuna's RDB storage through
  SQLAlchemy and psycopg 3). Each running trial beats every ``heartbeat`` seconds; a trial whose worker
  died (no beat for ``grace`` seconds) is marked FAIL by the next worker that starts a trial, and
  Optuna's stale-trial retry callback queues the same parameters again, up to ``retries`` times. A failed trial is
  never counted as finished.
- ``journal:PATH``: Optuna's journal file, for clusters that share a file system (appends under a file
  lock). Optuna keeps no heartbeats there: a killed worker's trial stays RUNNING, is not counted as
  finished and is not retried.

SQLite takes heartbeats as PostgreSQL does. Every failure to open a storage is one sentence that names it
with its password hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepslim.errors import ConfigError, first_line

SCHEMES = ("sqlite", "postgresql", "journal")


@dataclass(frozen=True)
class StorageConfig:
    url: str | None = None
    heartbeat: int = 30          # seconds between a running trial's heartbeats (RDB storages)
    grace: int | None = None     # seconds without a beat before the trial counts as dead (default 2 x heartbeat)
    retries: int = 2             # times a dead worker's trial is queued again

    def __post_init__(self) -> None:
        if self.heartbeat < 1:
            raise ConfigError(f"--heartbeat must be at least 1 second, got {self.heartbeat}.")
        if self.grace is not None and self.grace <= self.heartbeat:
            raise ConfigError(f"--grace-period ({self.grace} s) must be longer than --heartbeat ({self.heartbeat} s), "
                              "or every running trial would count as dead.")
        if self.retries < 0:
            raise ConfigError(f"--retries must be 0 or more, got {self.retries}.")
        if self.url is not None:
            scheme(self.url)


def scheme(url: str) -> str:
    """``sqlite``, ``postgresql`` or ``journal``; anything else is refused."""
    head = url.split(":", 1)[0].split("+", 1)[0].lower()
    if head == "postgres":
        head = "postgresql"
    if ":" not in url or head not in SCHEMES:
        raise ConfigError(f"--storage {shown(url)} is not a storage deepslim opens; give sqlite:///FILE.db (one "
                          "machine), postgresql://USER:PASSWORD@HOST:PORT/DB (several) or journal:FILE (a shared "
                          "file system).")
    return head


def shown(url: str) -> str:
    """``url`` with its password hidden."""
    if "@" not in url or "://" not in url:
        return url
    head, rest = url.split("://", 1)
    credentials, _, where = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{head}://{user}:***@{where}" if ":" in credentials else url


def sqlalchemy_url(url: str) -> str:
    """PostgreSQL through psycopg 3 (the pinned driver), whatever dialect prefix the user wrote."""
    if scheme(url) != "postgresql":
        return url
    rest = url.split("://", 1)[1]
    return f"postgresql+psycopg://{rest}"


def open_storage(cfg: StorageConfig) -> Any:
    """The Optuna storage ``cfg.url`` names (None: in memory)."""
    import optuna
    if cfg.url is None:
        return None
    kind = scheme(cfg.url)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        path = cfg.url.split(":", 1)[1]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError("--storage journal:FILE needs a file name.")
        try:
            return JournalStorage(JournalFileBackend(path))
        except OSError as exc:
            raise ConfigError(f"Cannot open the journal {path}: {first_line(exc)}.") from exc
    import warnings

    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    engine = {"pool_pre_ping": True} if kind == "postgresql" else {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=cfg.retries) if cfg.retries else None
            return RDBStorage(sqlalchemy_url(cfg.url), engine_kwargs=engine, heartbeat_interval=cfg.heartbeat,
                              grace_period=cfg.grace, heartbeat_stale_trial_callback=retry)
    except Exception as exc:  # SQLAlchemy and the driver raise many types; each becomes one sentence
        raise storage_error(cfg.url, exc) from exc


def storage_error(url: str, exc: BaseException) -> ConfigError:
    """One sentence for a storage that would not open: the server unreachable, the password wrong, the
    database missing, or the driver's own first line."""
    text = " ".join(str(exc).split())
    where = shown(url)
    if "password authentication failed" in text or "no password supplied" in text:
        user = text.split('for user "', 1)[1].split('"', 1)[0] if 'for user "' in text else "the user"
        return ConfigError(f"The database at {where} refused {user}: the password is wrong (password "
                           "authentication failed).")
    if "Connection refused" in text or "connection refused" in text or "could not connect" in text \
            or "timeout expired" in text or "No route to host" in text or "Name or service not known" in text:
        return ConfigError(f"Cannot reach the database at {where}: is the server running, and are its host and port "
                           "right? (connection refused)")
    if "does not exist" in text and "database" in text:
        return ConfigError(f"The database named in {where} does not exist on that server; create it (createdb) or "
                           "name one that does.")
    if "No module named" in text:
        return ConfigError(f"Cannot open {where}: its driver is not installed ({first_line(exc)}).")
    return ConfigError(f"Cannot open the Optuna storage {where}: {first_line(exc)}.")
