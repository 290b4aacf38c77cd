"""Settings: read from the environment with clear errors, and no password ever shown."""

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
    assert config.from_env({}) == config.from_env({name: "" for name in config.from_env({})} | {"LOG_LEVEL": "INFO"})
    settings = config.from_env({})
    assert (settings["DB_POOL_TIMEOUT_S"], settings["STATEMENT_TIMEOUT_MS"], settings["SYNC_RUN_TIMEOUT_S"]) == (
        2.0,
        5000,
        25.0,
    )
    assert settings["CORS_ORIGINS"] == ["http://localhost:3000", "http://127.0.0.1:3000"]
    assert settings["LLM_MODEL"] == "gpt-4o-mini"


def test_cors_origins_are_a_comma_separated_list_that_replaces_the_default():
    assert config.from_env({"CORS_ORIGINS": " https://a.example, http://localhost:3000 ,"})["CORS_ORIGINS"] == [
        "https://a.example",
        "http://localhost:3000",
    ]
    assert config.from_env({"CORS_ORIGINS": "https://a.example:8443"})["CORS_ORIGINS"] == ["https://a.example:8443"]


@pytest.mark.parametrize("value", ["none", "None", " NONE "])
def test_cors_origins_none_turns_cors_off(value):
    assert config.from_env({"CORS_ORIGINS": value})["CORS_ORIGINS"] == []


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
    assert config.from_env({"WEBHOOK_RETRY_SCHEDULE_S": "0.5, 1,2"})["WEBHOOK_RETRY_SCHEDULE_S"] == (0.5, 1.0, 2.0)
    default = config.from_env({})["WEBHOOK_RETRY_SCHEDULE_S"]
    assert len(default) + 1 == 11 and 22 * 3600 < sum(default) < 26 * 3600
    assert list(default) == sorted(default), "the waits never shrink"


def test_connections_get_the_statement_timeout_and_utc():
    conninfo = config.connection_kwargs("postgresql://app@db/flowline?options=-c%20search_path%3Dapp", 1234, "flowline")
    assert "statement_timeout=1234" in conninfo and "TimeZone=UTC" in conninfo and "search_path=app" in conninfo
