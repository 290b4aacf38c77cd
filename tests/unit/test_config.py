"""Settings: read from the environment with clear errors, and no password ever shown."""

import dataclasses
import os

import pytest

from flowline.core import config


@pytest.mark.parametrize(
    "url, shown",
    [
        (
            "postgresql://app:s3cret@db.example.com:5432/flowline?sslmode=require",
            "postgresql://app:***@db.example.com:5432/flowline?sslmode=require",
        ),
        (
            "postgresql://app@db.example.com/flowline?password=s3cret&sslmode=require",
            "postgresql://app@db.example.com/flowline?password=***&sslmode=require",
        ),
        (
            "postgresql://postgres@/postgres?host=/tmp/sock&port=5432",
            "postgresql://postgres@/postgres?host=/tmp/sock&port=5432",
        ),
        ("host=db user=app password=s3cret dbname=flowline", "user=app password=*** dbname=flowline host=db"),
        ("postgresql://app:s3cret@[::1", "<unparseable DATABASE_URL>"),
    ],
)
def test_mask_url_hides_passwords(url, shown):
    assert config.mask_url(url) == shown
    assert "s3cret" not in config.mask_url(url)


def test_defaults_apply_when_settings_are_unset_or_empty():
    names = [setting.name for setting in config.FLOWLINE_SETTINGS if setting.blank_is_default]
    assert config.from_env({}) == config.from_env({name: "" for name in names} | {"LOG_LEVEL": "INFO"})
    settings = config.from_env({})
    assert (settings.db_pool_timeout_s, settings.statement_timeout_ms, settings.sync_run_timeout_s) == (
        2.0,
        5000,
        25.0,
    )
    assert settings.cors_origins == ("http://localhost:3000", "http://127.0.0.1:3000")
    assert settings.llm_model == "gpt-4o-mini"


def test_cors_origins_are_a_comma_separated_list_that_replaces_the_default():
    assert config.from_env({"CORS_ORIGINS": " https://a.example, http://localhost:3000 ,"}).cors_origins == (
        "https://a.example",
        "http://localhost:3000",
    )
    assert config.from_env({"CORS_ORIGINS": "https://a.example:8443"}).cors_origins == ("https://a.example:8443",)


@pytest.mark.parametrize("value", ["none", "None", " NONE "])
def test_cors_origins_none_turns_cors_off(value):
    assert config.from_env({"CORS_ORIGINS": value}).cors_origins == ()


@pytest.mark.parametrize("value", ["localhost:3000", "http://app.example/path", "ftp://app.example", "https://"])
def test_a_cors_origin_that_is_not_an_origin_is_refused_at_start(value):
    with pytest.raises(config.ConfigError, match="CORS_ORIGINS"):
        config.from_env({"CORS_ORIGINS": value})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DB_POOL_MAX_SIZE": "four"}, "DB_POOL_MAX_SIZE must be an integer, got 'four'"),
        ({"DB_POOL_MAX_SIZE": "0"}, "DB_POOL_MAX_SIZE must be at least 1, got 0"),
        ({"SYNC_RUN_TIMEOUT_S": "soon"}, "SYNC_RUN_TIMEOUT_S must be a number, got 'soon'"),
        ({"DB_POOL_TIMEOUT_S": "nan"}, "DB_POOL_TIMEOUT_S must be at least 0.1, got nan"),
        ({"PDF_EXTRACT_TIMEOUT_S": "0"}, "PDF_EXTRACT_TIMEOUT_S must be at least 0.1, got 0.0"),
        ({"PDF_EXTRACT_MEMORY_MB": "32"}, "PDF_EXTRACT_MEMORY_MB must be at least 64, got 32"),
        ({"PDF_EXTRACT_CONCURRENCY": "0"}, "PDF_EXTRACT_CONCURRENCY must be at least 1, got 0"),
        ({"WEBHOOK_RETRY_SCHEDULE_S": "5,soon"}, "WEBHOOK_RETRY_SCHEDULE_S must be comma-separated seconds"),
        ({"WEBHOOK_RETRY_SCHEDULE_S": "5,-1"}, "WEBHOOK_RETRY_SCHEDULE_S must be comma-separated seconds"),
        ({"WEBHOOK_RETRY_SCHEDULE_S": "5,nan"}, "WEBHOOK_RETRY_SCHEDULE_S must be comma-separated seconds"),
        ({"WEBHOOK_TIMEOUT_S": "10", "WEBHOOK_LEASE_S": "10"}, r"WEBHOOK_LEASE_S \(10\) must be at least"),
        ({"WEBHOOK_ALLOW_PRIVATE": "maybe"}, "WEBHOOK_ALLOW_PRIVATE must be 1 or 0"),
    ],
)
def test_unusable_values_are_refused_with_a_clear_message(env, message):
    with pytest.raises(config.ConfigError, match=message):
        config.from_env(env)


def test_the_webhook_retry_schedule_is_read_as_seconds_and_its_default_spans_about_a_day():
    assert config.from_env({"WEBHOOK_RETRY_SCHEDULE_S": "0.5, 1,2"}).webhook_retry_schedule_s == (0.5, 1.0, 2.0)
    default = config.from_env({}).webhook_retry_schedule_s
    assert len(default) + 1 == 11 and 22 * 3600 < sum(default) < 26 * 3600
    assert list(default) == sorted(default), "the waits never shrink"


def test_connections_get_the_statement_timeout_utc_and_no_jit():
    conninfo = config.connection_kwargs("postgresql://app@db/flowline?options=-c%20search_path%3Dapp", 1234, "flowline")
    assert "statement_timeout=1234" in conninfo and "TimeZone=UTC" in conninfo and "search_path=app" in conninfo
    assert "jit=off" in conninfo


# --- defaults that follow other settings, overrides ------------------------------------------------------------------

UNDER_GUNICORN = {config.GUNICORN_MARKER: "gunicorn/27.0.1"}


def test_the_pools_size_follows_gunicorn_threads_under_gunicorn_and_is_4_elsewhere():
    assert config.from_env({}).db_pool_max_size == 4
    assert config.from_env({"GUNICORN_THREADS": "6"}).db_pool_max_size == 4
    assert config.from_env(UNDER_GUNICORN).db_pool_max_size == 2
    assert config.from_env({**UNDER_GUNICORN, "GUNICORN_THREADS": "6"}).db_pool_max_size == 6
    assert config.from_env({**UNDER_GUNICORN, "GUNICORN_THREADS": "6", "DB_POOL_MAX_SIZE": "3"}).db_pool_max_size == 3


def test_waiters_default_to_all_threads_but_one():
    assert config.from_env({}).wait_max_waiters == 1
    assert config.from_env({"GUNICORN_THREADS": "8"}).wait_max_waiters == 7
    assert config.from_env({"GUNICORN_THREADS": "8", "WAIT_MAX_WAITERS": "2"}).wait_max_waiters == 2
    with pytest.raises(config.ConfigError, match="GUNICORN_THREADS must be at least 1, got 0"):
        config.from_env({"GUNICORN_THREADS": "0"})


def test_gunicorn_marks_its_workers_environment_as_from_env_expects(monkeypatch):
    """When this fails after a gunicorn upgrade, re-check config.GUNICORN_MARKER: without it every gunicorn worker's
    pool falls back to 4 connections instead of one per thread."""
    from gunicorn.arbiter import Arbiter

    monkeypatch.setattr(Arbiter, "setup", lambda self, app: None)
    monkeypatch.setattr(os, "environ", {})
    Arbiter(None)
    assert config.from_env({**os.environ, "GUNICORN_THREADS": "6"}).db_pool_max_size == 6


def test_overrides_replace_settings_by_name_and_keep_the_object_frozen():
    loaded = config.from_env({})
    changed = config.override(loaded, {"API_TOKENS": ["t" * 16], "DB_POOL_MAX_SIZE": 10, "TESTING": True})
    assert (changed.api_tokens, changed.db_pool_max_size) == (("t" * 16,), 10)
    assert (loaded.api_tokens, loaded.db_pool_max_size) == ((), 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.db_pool_max_size = 1
    with pytest.raises(config.ConfigError, match="WEBHOOK_LEASE_S"):
        config.override(loaded, {"WEBHOOK_TIMEOUT_S": 60.0})


def test_secret_values_are_the_secret_settings_that_are_set():
    loaded = config.from_env({"LLM_API_KEY": "k" * 20, "API_TOKENS": f"{'a' * 16},{'b' * 16}", "SECRET_KEY": "s" * 32})
    assert sorted(loaded.secret_values()) == sorted(["k" * 20, "a" * 16, "b" * 16, "s" * 32])
    assert config.from_env({}).secret_values() == ()
