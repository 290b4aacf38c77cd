"""The openai provider: the real HTTP client against a local OpenAI-compatible server (tests/support/fake_llm.py),
driven through the API. Whatever happens, the key and the prompt stay out of answers, run history and logs."""

import logging
import re
import socket
import time

import pytest

from flowline.core import config
from flowline.engine import providers
from tests.support.fake_llm import FakeLLM, completion

KEY = "sk-test-secret"
# Markers that make the prompt and the input recognisable wherever they might leak.
PROMPT = "PROMPT-7c1e summarise for the board: {text}"
INPUT = "INPUT-93ab quarterly numbers"
RENDERED = "PROMPT-7c1e summarise for the board: INPUT-93ab quarterly numbers"
NODE = {"prompt": PROMPT, "model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 300, "top_p": 0.9}
# A provider's error body that quotes the key and the prompt, as some do: none of its text may be passed on.
LEAKY_ERROR = {
    "error": {
        "message": f"Incorrect API key provided: {KEY}; request was {RENDERED!r}",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def logs(caplog):
    """Every log line at DEBUG, Flowline's (which do not propagate to the root logger) and the HTTP client's."""
    flowline_logger = logging.getLogger("flowline")
    flowline_logger.addHandler(caplog.handler)
    for name in (None, "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog
    flowline_logger.removeHandler(caplog.handler)


@pytest.fixture
def llm_client(make_app, fake, logs):
    """Return a factory of test clients whose app uses the openai provider against ``fake`` (settings overridable)."""

    def make(**overrides):
        settings = {
            "LLM_API_KEY": KEY,
            "LLM_BASE_URL": fake.url,
            "LLM_TIMEOUT_S": 5.0,
            "LLM_MAX_RETRIES": 2,
            "LLM_BACKOFF_S": 0.01,
            "LOG_LEVEL": "DEBUG",
            **overrides,
        }
        return make_app(**settings).test_client()

    return make


def _run(client, workflow):
    workflow_id = workflow([("generative_ai", NODE)])
    started = time.monotonic()
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": INPUT})
    return response, time.monotonic() - started


def _history_rows(sql, run_id):
    """Every stored row of the run (run, steps, events) as JSON text."""
    rows = []
    for table, column in (("runs", "id"), ("run_steps", "run_id"), ("run_events", "run_id")):
        rows += [
            r["row"]
            for r in sql.execute(f"SELECT row_to_json(t)::text AS row FROM {table} t WHERE {column} = %s", (run_id,))
        ]
    return rows


def assert_failed_without_leaks(client, sql, logs, response, status, detail):
    """The run failed with ``status``/``detail``; neither key nor prompt is in the answer, the history or the logs."""
    assert response.status_code == status, response.json
    assert response.json["detail"] == detail
    assert response.json["status"] == "Failed"
    run_id = response.json["run_id"]
    history = client.get(f"/runs/{run_id}").json
    assert history["run"]["status"] == "Failed" and history["run"]["error_message"] == detail
    (step,) = history["steps"]
    assert (step["status"], step["error_message"], step["output_text"]) == ("Failed", detail, None)

    stored = _history_rows(sql, run_id)
    for text in (
        response.get_data(as_text=True),
        client.get(f"/runs/{run_id}").get_data(as_text=True),
        client.get(f"/runs/{run_id}/events").get_data(as_text=True),
        *stored,
        logs.text,
    ):
        assert KEY not in text
    # The prompt is history (the step's config snapshot and input), but no error or log line repeats it.
    for text in (response.get_data(as_text=True), history["run"]["error_message"], step["error_message"], logs.text):
        assert "PROMPT-7c1e" not in text and "INPUT-93ab" not in text


# --- success -----------------------------------------------------------------------------------------------------


def test_a_completion_is_the_steps_output_and_its_note_says_model_tokens_and_latency(
    llm_client, fake, workflow, sql, logs
):
    fake.reply(200, completion("Numbers are up.", prompt_tokens=12, completion_tokens=5))
    response, _ = _run(llm_client(), workflow)

    assert response.status_code == 200, response.json
    assert response.json["final_output"] == "Numbers are up."
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": RENDERED}],
        "temperature": 0.2,
        "max_tokens": 300,
        "top_p": 0.9,
    }
    (step,) = llm_client().get(f"/runs/{response.json['run_id']}").json["steps"]
    assert step["status"] == "Succeeded" and step["output_text"] == "Numbers are up."
    assert re.fullmatch(
        r"openai provider: model gpt-4o-mini-2024-07-18, 12 prompt \+ 5 completion tokens, "
        r"1 attempt, \d+ ms",
        step["note"],
    ), step["note"]
    assert all(KEY not in row for row in _history_rows(sql, response.json["run_id"]))
    assert KEY not in logs.text and "INPUT-93ab" not in logs.text
    # No price set for the model: the tokens are recorded, the cost is not known.
    assert step["usage"] == {"model": "gpt-4o-mini", "prompt_tokens": 12, "completion_tokens": 5, "cost_usd": None}


def test_a_steps_usage_is_priced_with_the_models_prices_when_it_ran(llm_client, fake, workflow):
    client = llm_client()
    prices = {"usd_per_million_input_tokens": 2.5, "usd_per_million_output_tokens": 10}
    assert client.put("/llm-models/gpt-4o-mini", json=prices).status_code == 200
    fake.reply(200, completion("Numbers are up.", prompt_tokens=1200, completion_tokens=300))
    first, _ = _run(client, workflow)
    # A later price change does not rewrite what an earlier step cost.
    client.put("/llm-models/gpt-4o-mini", json={"usd_per_million_input_tokens": 100})
    (step,) = client.get(f"/runs/{first.json['run_id']}").json["steps"]
    assert step["usage"] == {
        "model": "gpt-4o-mini",
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "cost_usd": pytest.approx((1200 * 2.5 + 300 * 10) / 1e6),
    }


def test_a_completion_cut_at_max_tokens_and_without_usage_says_so(llm_client, fake, workflow):
    body = completion("Numbers are", finish_reason="length")
    del body["usage"]
    fake.reply(200, body)
    response, _ = _run(llm_client(), workflow)
    assert response.status_code == 200 and response.json["final_output"] == "Numbers are"
    (step,) = llm_client().get(f"/runs/{response.json['run_id']}").json["steps"]
    assert "token usage not reported, cut off at max_tokens, 1 attempt" in step["note"]
    assert step["usage"] == {"model": "gpt-4o-mini", "prompt_tokens": None, "completion_tokens": None, "cost_usd": None}


# --- retries -----------------------------------------------------------------------------------------------------


def test_a_429_is_a_wait_not_a_failure_and_spends_no_retry(llm_client, fake, workflow, logs):
    # LLM_MAX_RETRIES=0: a 429 is not among the failures it counts; the sync run waits the second asked and calls again.
    fake.reply(429, LEAKY_ERROR, headers={"Retry-After": "1"})
    fake.reply(200, completion("second time lucky"))
    response, _ = _run(llm_client(LLM_MAX_RETRIES=0), workflow)

    assert response.status_code == 200, response.json
    assert response.json["final_output"] == "second time lucky"
    first, second = fake.requests
    assert second.at - first.at >= 0.95
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.requests)
    (step,) = llm_client().get(f"/runs/{response.json['run_id']}").json["steps"]
    assert ", 2 attempts, " in step["note"] and step["status"] == "Succeeded"
    assert "LLM provider answered 429 Too Many Requests (model gpt-4o-mini); the run waits" in logs.text
    assert KEY not in logs.text and "PROMPT-7c1e" not in logs.text


def test_retry_after_is_honoured_over_the_backoff(llm_client, fake, workflow):
    fake.reply(503, {}, headers={"Retry-After": "1"})
    response, _ = _run(llm_client(LLM_BACKOFF_S=0), workflow)
    assert response.status_code == 200, response.json
    first, second = fake.requests
    assert second.at - first.at >= 0.95


def test_500_is_retried_up_to_llm_max_retries_then_fails_with_502(llm_client, fake, workflow, sql, logs):
    fake.reply(500, LEAKY_ERROR, times=10)
    response, _ = _run(llm_client(LLM_MAX_RETRIES=2), workflow)
    assert_failed_without_leaks(
        llm_client(), sql, logs, response, 502, "LLM provider answered 500 Internal Server Error after 3 attempts"
    )
    assert len(fake.requests) == 3


def test_llm_max_retries_0_makes_one_attempt(llm_client, fake, workflow, sql, logs):
    fake.reply(502, "bad gateway", times=10)
    response, _ = _run(llm_client(LLM_MAX_RETRIES=0), workflow)
    assert_failed_without_leaks(
        llm_client(), sql, logs, response, 502, "LLM provider answered 502 Bad Gateway after 1 attempt"
    )
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "status, detail",
    [
        (401, "LLM provider answered 401 Unauthorized (invalid_api_key; not retried)"),
        (400, "LLM provider answered 400 Bad Request (invalid_api_key; not retried)"),
        (404, "LLM provider answered 404 Not Found (invalid_api_key; not retried)"),
    ],
)
def test_other_4xx_fail_the_run_with_502_at_once(llm_client, fake, workflow, sql, logs, status, detail):
    fake.reply(status, LEAKY_ERROR, times=10)
    response, _ = _run(llm_client(), workflow)
    assert_failed_without_leaks(llm_client(), sql, logs, response, 502, detail)
    assert len(fake.requests) == 1


def test_an_error_body_without_a_plain_code_gives_the_status_alone(llm_client, fake, workflow, sql, logs):
    fake.reply(403, {"error": {"code": f"denied for {KEY}", "message": RENDERED}})
    response, _ = _run(llm_client(), workflow)
    assert_failed_without_leaks(
        llm_client(), sql, logs, response, 502, "LLM provider answered 403 Forbidden (not retried)"
    )


# --- time ----------------------------------------------------------------------------------------------------------


@pytest.mark.serial  # it times the run against a bound
def test_attempts_that_time_out_are_retried_then_fail_with_502(llm_client, fake, workflow, sql, logs):
    fake.reply(200, completion("too late"), delay=3, times=10)
    response, elapsed = _run(llm_client(LLM_TIMEOUT_S=0.2, LLM_MAX_RETRIES=1), workflow)
    assert_failed_without_leaks(llm_client(), sql, logs, response, 502, "LLM provider timed out after 2 attempts")
    assert len(fake.requests) == 2
    assert elapsed < 2


def test_a_slow_then_fast_provider_succeeds_on_the_second_attempt(llm_client, fake, workflow):
    fake.reply(200, completion("too late"), delay=3)
    fake.reply(200, completion("in time"))
    response, _ = _run(llm_client(LLM_TIMEOUT_S=0.3), workflow)
    assert response.status_code == 200 and response.json["final_output"] == "in time"
    assert len(fake.requests) == 2


@pytest.mark.serial  # it times the run against a bound
def test_the_runs_time_bound_cuts_an_attempt_short_with_504(llm_client, fake, workflow, sql, logs):
    fake.reply(200, completion("too late"), delay=5, times=10)
    response, elapsed = _run(llm_client(SYNC_RUN_TIMEOUT_S=0.5, LLM_TIMEOUT_S=30), workflow)
    assert_failed_without_leaks(
        llm_client(), sql, logs, response, 504, "run timed out waiting for the LLM provider (1 attempt)"
    )
    assert len(fake.requests) == 1
    assert elapsed < 2


@pytest.mark.serial  # it times the run against a bound
def test_a_retry_after_past_the_runs_deadline_fails_at_once_with_504(llm_client, fake, workflow, sql, logs):
    fake.reply(429, LEAKY_ERROR, headers={"Retry-After": "60"})
    response, elapsed = _run(llm_client(SYNC_RUN_TIMEOUT_S=5), workflow)
    assert_failed_without_leaks(
        llm_client(),
        sql,
        logs,
        response,
        504,
        "run timed out waiting for gpt-4o-mini: paused after a 429 (room in 60 s, after the run's deadline)",
    )
    assert len(fake.requests) == 1
    assert elapsed < 2


def test_a_retry_after_is_cut_to_llm_max_retry_after_s(llm_client, fake, workflow):
    fake.reply(429, LEAKY_ERROR, headers={"Retry-After": "3600"})
    response, _ = _run(llm_client(LLM_MAX_RETRY_AFTER_S=0.5), workflow)
    assert response.status_code == 200, response.json
    first, second = fake.requests
    assert 0.45 <= second.at - first.at < 5


def test_an_unreachable_provider_is_retried_then_fails_with_502(llm_client, workflow, sql, logs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the test connects: connection refused
    response, _ = _run(llm_client(LLM_BASE_URL=f"http://127.0.0.1:{port}/v1"), workflow)
    assert_failed_without_leaks(
        llm_client(), sql, logs, response, 502, "LLM provider could not be reached (ConnectError) after 3 attempts"
    )


# --- malformed answers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, why",
    [
        ("this is not JSON", "not JSON"),
        (b"\xff\xfe not utf-8", "not JSON"),
        ({}, "no choices[0].message.content"),
        ({"choices": []}, "no choices[0].message.content"),
        ([1, 2], "no choices[0].message.content"),
        ({"choices": [{"message": {"role": "assistant", "content": None}}]}, "no choices[0].message.content"),
        ({"choices": [{"message": "text"}]}, "no choices[0].message.content"),
    ],
)
def test_a_malformed_answer_fails_the_run_with_502_and_is_not_retried(llm_client, fake, workflow, sql, logs, body, why):
    fake.reply(200, body, times=10)
    response, _ = _run(llm_client(), workflow)
    assert_failed_without_leaks(
        llm_client(), sql, logs, response, 502, f"LLM provider returned a malformed response ({why})"
    )
    assert len(fake.requests) == 1


def test_text_postgresql_cannot_store_fails_the_run_instead_of_the_write(llm_client, fake, workflow, sql, logs):
    fake.reply(200, '{"choices": [{"message": {"content": "a\\u0000b"}}]}')
    response, _ = _run(llm_client(), workflow)
    assert_failed_without_leaks(
        llm_client(),
        sql,
        logs,
        response,
        502,
        "LLM provider returned text that cannot be stored (a NUL character or an unpaired surrogate)",
    )


# --- selection, readiness, settings --------------------------------------------------------------------------------


def test_readyz_and_the_startup_log_name_the_active_provider(make_app, fake, logs):
    ready = make_app(LLM_API_KEY=KEY, LLM_BASE_URL=fake.url + "/").test_client().get("/readyz")
    assert ready.status_code == 200 and ready.json["llm_provider"] == "openai"
    assert f"LLM provider: openai at {fake.url}/chat/completions" in logs.text
    assert make_app().test_client().get("/readyz").json["llm_provider"] == "echo"
    assert "LLM provider: echo (LLM_API_KEY is not set" in logs.text
    assert KEY not in logs.text and KEY not in ready.get_data(as_text=True)


def test_provider_selection_follows_llm_api_key():
    assert isinstance(providers.from_config(config.from_env({})), providers.EchoProvider)
    chosen = providers.from_config(config.from_env({"LLM_API_KEY": f"  {KEY}\n"}))
    assert isinstance(chosen, providers.OpenAIProvider) and chosen.name == "openai"
    assert chosen.url == "https://api.openai.com/v1/chat/completions"
    assert KEY not in repr(chosen) and KEY not in repr(vars(chosen))
    chosen.close()


def test_llm_settings_defaults_and_refusals():
    settings = config.from_env({})
    assert (
        settings.llm_api_key,
        settings.llm_base_url,
        settings.llm_timeout_s,
        settings.llm_max_retries,
        settings.llm_backoff_s,
    ) == ("", "https://api.openai.com/v1", 30.0, 3, 0.5)
    with pytest.raises(config.ConfigError) as refused:
        config.from_env({"LLM_API_KEY": "sk-test-\nsecret"})
    assert "secret" not in str(refused.value)
    with pytest.raises(config.ConfigError, match="must not contain a user or password") as refused:
        config.from_env({"LLM_BASE_URL": "https://user:hunter2@llm.example.com/v1"})
    assert "hunter2" not in str(refused.value)
    with pytest.raises(config.ConfigError, match="must be an http"):
        config.from_env({"LLM_BASE_URL": "llm.example.com/v1"})
    with pytest.raises(config.ConfigError, match=r"LLM_TIMEOUT_S must be at least 0\.1"):
        config.from_env({"LLM_TIMEOUT_S": "0"})
    with pytest.raises(config.ConfigError, match="LLM_MAX_RETRIES must be an integer"):
        config.from_env({"LLM_MAX_RETRIES": "many"})
