"""`deepslim auto --storage`: which URLs open which Optuna storage, and the sentences for the rest."""

from __future__ import annotations

import pytest

from deepslim.errors import ConfigError
from pipeline.storage import StorageConfig, open_storage, scheme, shown, sqlalchemy_url, storage_error


def test_the_password_never_shows():
    assert shown("postgresql://me:pa55@db.example:5432/search") == "postgresql://me:***@db.example:5432/search"
    assert shown("sqlite:///x.db") == "sqlite:///x.db" and shown("postgresql://me@db/search") == "postgresql://me@db/search"


def test_postgresql_goes_through_psycopg_3_whatever_the_prefix():
    for url in ("postgresql://u:p@h/d", "postgres://u:p@h/d", "postgresql+psycopg2://u:p@h/d"):
        assert scheme(url) == "postgresql" and sqlalchemy_url(url) == "postgresql+psycopg://u:p@h/d"


@pytest.mark.parametrize("url", ["mysql://u:p@h/d", "search.db", "redis://h"])
def test_other_storages_are_refused_with_the_ones_it_opens(url):
    with pytest.raises(ConfigError, match="postgresql://USER:PASSWORD@HOST:PORT/DB .* journal:FILE"):
        StorageConfig(url)


def test_heartbeat_settings_are_checked():
    with pytest.raises(ConfigError, match="must be longer than --heartbeat"):
        StorageConfig("sqlite:///x.db", heartbeat=5, grace=5)
    with pytest.raises(ConfigError, match="at least 1 second"):
        StorageConfig("sqlite:///x.db", heartbeat=0)


def test_a_journal_file_is_a_shared_study(tmp_path):
    import optuna
    url = f"journal:{tmp_path / 'search.log'}"
    first = optuna.create_study(study_name="s", storage=open_storage(StorageConfig(url)))
    first.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="s", storage=open_storage(StorageConfig(url)))  # another worker's view
    assert [t.number for t in again.trials] == [0, 1] and (tmp_path / "search.log").stat().st_size > 0


def test_driver_errors_become_one_sentence():
    url = "postgresql://me:pa55@db:5432/search"
    refused = storage_error(url, RuntimeError('connection failed: FATAL:  password authentication failed for user "me"'))
    assert str(refused) == ("The database at postgresql://me:***@db:5432/search refused me: the password is wrong "
                            "(password authentication failed).")
    assert "pa55" not in str(storage_error(url, RuntimeError("connection failed: Connection refused")))
    assert "does not exist" in str(storage_error(url, RuntimeError('FATAL:  database "search" does not exist')))
