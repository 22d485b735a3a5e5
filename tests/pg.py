"""A throwaway PostgreSQL server for tests: ``initdb`` into a temporary directory, ``pg_ctl`` on a free loopback
port, password authentication (scram-sha-256) for one user, stopped and removed afterwards.

PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user the Debian package
creates. Without the server binaries the caller skips with :data:`MISSING`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD, DATABASE = "deepslim", "s3cret-for-tests", "postgres"
MISSING = "needs the PostgreSQL server (Debian package postgresql: initdb, pg_ctl); .ci/run installs it"


def binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (the newest Debian version, else PATH)."""
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "pg_ctl").is_file():
            return Path(directory)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


@dataclass(frozen=True)
class Server:
    port: int
    data: Path | None = None
    prefix: tuple[str, ...] = ()
    bindir: Path | None = None

    def url(self, *, password: str = PASSWORD, port: int | None = None) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{port or self.port}/{DATABASE}"


def stop(server: Server) -> None:
    """Stop ``server`` at once (as a crash would), before its context ends."""
    subprocess.run([*server.prefix, str(server.bindir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "-w",
                    "stop"], capture_output=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server():
    """Start a server; yield a :class:`Server`; stop it and delete its files."""
    bindir = binaries()
    if bindir is None:
        raise RuntimeError(MISSING)
    root = Path(tempfile.mkdtemp(prefix="deepslim-pg-"))
    data, pwfile, log = root / "data", root / "pw", root / "server.log"
    pwfile.write_text(PASSWORD + "\n")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    os.chmod(root, 0o700)
    port = free_port()
    run = lambda *args: subprocess.run([*prefix, *map(str, args)], check=True, capture_output=True, text=True,
                                       timeout=120)
    try:
        run(bindir / "initdb", "-D", data, "-U", USER, "--pwfile", pwfile, "--auth", "scram-sha-256", "-E", "UTF8",
            "--no-sync")
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o",
            f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off -c max_connections=60", "start")
        yield Server(port, data, tuple(prefix), bindir)
    except subprocess.CalledProcessError as exc:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr or exc.stdout}\n{tail}") from exc
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
