"""Where `deepslim auto` keeps its study: an Optuna storage named by ``--storage``, and the study in it.

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

import contextlib
import time
from collections.abc import Iterator
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


def open_study(storage: StorageConfig, name: str, *, seed: int = 0, record: dict[str, Any] | None = None,
               create: bool = True):
    """Create or join the `deepslim auto` study ``name`` (``create=False``: it must exist). Workers starting
    together race to create the storage's tables; the loser waits and joins. With ``record`` (what the
    search searches), a study made for another search is refused."""
    import random

    import optuna
    where = shown(storage.url or "memory")
    for attempt in range(8):
        try:
            opened = open_storage(storage)
            if not create:
                study = optuna.load_study(study_name=name, storage=opened)
            else:
                study = optuna.create_study(directions=["minimize", "minimize", "minimize"], storage=opened,
                                            study_name=name, load_if_exists=True,
                                            sampler=optuna.samplers.NSGAIISampler(seed=seed))
            break
        except ConfigError as exc:  # open_storage's sentence; a generic one may be the race, so try again
            if attempt == 7 or "Cannot open the Optuna storage" not in str(exc):
                raise
        except KeyError as exc:  # load_study: no such study
            raise ConfigError(f"There is no study '{name}' in {where}; name one the workers ran (--study).") from exc
        except ValueError as exc:  # the study exists with other directions: another program's
            raise ConfigError(f"Study '{name}' in {where} is not a deepslim auto study ({first_line(exc)}); give "
                              "another --study name.") from exc
        except Exception as exc:  # SQLAlchemy raises several types while another worker sets the storage up
            error = storage_error(storage.url or "", exc)
            if attempt == 7 or "Cannot open the Optuna storage" not in str(error):
                raise error from exc
        time.sleep(0.5 + random.random())
    if record is not None:
        _check_record(study, record, name, where)
    return study


def _check_record(study, record: dict[str, Any], name: str, where: str) -> None:
    theirs = study.user_attrs.get("deepslim_search")
    if theirs is None:
        study.set_user_attr("deepslim_search", record)
        return
    differs = next((k for k in sorted(set(record) | set(theirs)) if record.get(k) != theirs.get(k)), None)
    if differs is not None:
        raise ConfigError(f"Study '{name}' in {where} was created for another search (its {differs} is "
                          f"{theirs.get(differs)!r}, this one's {record.get(differs)!r}); join it with the same "
                          "model, data and options, or give another --study name.")


@contextlib.contextmanager
def storage_errors(url: str | None) -> Iterator[None]:
    """The database going away mid-search (SQLAlchemy's or the driver's errors) as one sentence. Optuna's
    heartbeat thread meets the same error first; it is left to the main thread to say, not printed."""
    import threading
    default = threading.excepthook

    def hook(args) -> None:
        if _database_cause(args.exc_value) is None:
            default(args)

    threading.excepthook = hook
    try:
        yield
    except Exception as exc:
        cause = _database_cause(exc)
        if cause is None:
            raise
        raise storage_error(url or "", cause) from exc
    finally:
        threading.excepthook = default


def _database_cause(exc: BaseException | None) -> BaseException | None:
    """The database error ``exc`` is, or arose from (Optuna 5 can turn a failed tell into an UnboundLocalError
    whose context is the database's error)."""
    seen = 0
    while exc is not None and seen < 8:
        if type(exc).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "sqlite3"):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None
