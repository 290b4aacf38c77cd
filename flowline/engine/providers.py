"""LLM providers for the ``generative_ai`` node, behind one small interface (flowline/nodes/base.py's LLMProvider).

``complete(prompt=, model=, temperature=, max_tokens=, top_p=, timeout=, gate=)`` returns a Completion or raises
the engine's ProviderFailed (HTTP 502; ProviderUnavailable when another attempt may succeed) / RunTimedOut (504),
or the gate's MustWait. ``timeout`` is the time left before the run's deadline; ``gate`` reserves the model's
budget before each HTTP attempt and hears how it ended (flowline/engine/budget.py).
Nothing a provider raises, logs or notes contains the API key or the prompt.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NoReturn

import httpx

from ..core.config import DEFAULT_LLM_MODEL, mask_secret_url
from ..core.fields import PG_INTEGER_MAX, unstorable_reason
from ..nodes.base import CallGate, Completion, ProviderFailed, ProviderUnavailable, RunTimedOut, StepFailed

if TYPE_CHECKING:
    from ..core.config import Settings

log = logging.getLogger("flowline.providers")

# An answer to one completion of at most 4096 tokens is a few hundred KiB at most; anything far larger is refused.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
# Longest wait between two attempts when the provider sends no Retry-After.
BACKOFF_CAP_S = 8.0
# A provider-given error code shown in a step's error (e.g. "invalid_api_key"); anything else is left out.
_ERROR_CODE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class EchoProvider:
    """Generates nothing: returns the rendered prompt, and says so in the step's note."""

    name = "echo"

    def __init__(self, *, default_model: str = DEFAULT_LLM_MODEL) -> None:
        # The model of a generative_ai node whose config names none (LLM_MODEL).
        self.default_model = default_model

    def complete(
        self,
        *,
        prompt: str,
        model: str,
        temperature: float,
        max_tokens: int,
        top_p: float,
        timeout: float,
        gate: CallGate,
    ) -> Completion:
        """Return ``prompt`` unchanged as the completion (nothing is sent, so ``gate`` is not asked)."""
        return Completion(
            text=prompt,
            note=f"echo provider: nothing generated; the output is the rendered prompt (model {model!r} was not called)",
            prompt_tokens=0,
            completion_tokens=0,
        )

    def close(self) -> None:
        """Nothing to release."""


class _AttemptTimedOut(Exception):
    """One attempt outlived its time budget."""


class _RateLimited(Exception):
    """The provider answered 429; ``retry_after`` is the wait it asked for (None: it named none)."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after


class _Retryable(Exception):
    """One attempt failed in a way worth another try; ``cause`` completes "LLM provider ..."."""

    def __init__(self, cause: str, retry_after: float | None = None, timed_out: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after
        self.timed_out = timed_out


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _seconds(value: float) -> str:
    return f"{value:.3g} s"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Return the wait in seconds the provider asked for (``retry-after-ms`` or ``Retry-After``), or None."""
    try:
        if "retry-after-ms" in headers:
            value = float(headers["retry-after-ms"]) / 1000
        elif "retry-after" in headers:
            raw = headers["retry-after"].strip()
            try:
                value = float(raw)
            except ValueError:
                value = parsedate_to_datetime(raw).timestamp() - time.time()
        else:
            return None
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return max(0.0, value) if math.isfinite(value) else None


def _error_code(body: bytes) -> str:
    """Return the provider's short error code or type (``{"error": {"code"|"type": ...}}``) if it is one, else ''."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError, RecursionError):
        return ""
    if not isinstance(error, dict):
        return ""
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and 0 < len(value) <= 64 and set(value) <= _ERROR_CODE_CHARS:
            return value
    return ""


def _token_count(value: object) -> int | None:
    """Return ``value``, a count of tokens the provider reported, or None when it is not a plausible one."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= PG_INTEGER_MAX:
        return value
    return None


def _shown_model(value: object, requested: str) -> str:
    if isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable():
        return value
    return requested


class OpenAIProvider:
    """Any OpenAI-compatible Chat Completions endpoint (``POST {base_url}/chat/completions``).

    Each attempt is bounded by ``min(timeout_s, time left in the run)`` and passes the call's gate first (the
    model's budget). 5xx, timeouts and connection errors are retried up to ``max_retries`` times, waiting as the
    provider's Retry-After asks or else with exponential backoff (``backoff_s`` doubling, capped, full jitter);
    a 429 is no failure: the gate pauses the model and the run waits (a queued run back in the queue, a sync run
    in the gate's next ``before_attempt``); other statuses are not retried. No wait or attempt goes past the
    run's deadline.
    """

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        default_model: str = DEFAULT_LLM_MODEL,
    ) -> None:
        if not api_key:
            raise ValueError("the openai provider needs an API key")
        self.default_model = default_model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        # One client (and its keep-alive connections) per process; httpx clients are safe to share among threads.
        # The key lives only in its default headers (httpx masks Authorization in reprs).
        self._client = httpx.Client(
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json", "User-Agent": "flowline"},
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"<OpenAIProvider {mask_secret_url(self.url)}>"

    def close(self) -> None:
        """Close the HTTP client's keep-alive connections."""
        self._client.close()

    def complete(
        self,
        *,
        prompt: str,
        model: str,
        temperature: float,
        max_tokens: int,
        top_p: float,
        timeout: float,
        gate: CallGate,
    ) -> Completion:
        """Return the completion of ``prompt`` by ``model``.

        :raise ProviderFailed: the provider answered an error, could not be reached, timed out on every attempt,
            or returned something that is not a completion.
        :raise RunTimedOut: the run's deadline (``timeout`` seconds from now) came first.
        :raise MustWait: the run must wait for the model's budget or its pause after a 429 (from ``gate``).
        """
        started = time.monotonic()
        deadline = started + timeout
        if not timeout > 0:
            raise RunTimedOut("run timed out before the LLM provider was called")
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": temperature,
            "max_tokens": max_tokens,
            "top_p": top_p,
        }
        # Requests sent (the note's "attempts") and those that failed in a way LLM_MAX_RETRIES counts.
        attempt = failures = 0
        while True:
            gate.before_attempt()
            attempt += 1
            remaining = deadline - time.monotonic()
            budget = min(self.timeout_s, remaining)
            try:
                status, reason, body = self._attempt(payload, budget)
            except _RateLimited as limited:
                log.warning("LLM provider answered 429 Too Many Requests (model %s); the run waits", model)
                gate.rate_limited(limited.retry_after)
                continue
            except _Retryable as failure:
                gate.failed()
                failures += 1
                if failure.timed_out and remaining <= self.timeout_s:
                    # This attempt had only what was left of the run: the run's time bound was hit.
                    self._fail(RunTimedOut, f"run timed out waiting for the LLM provider ({_attempts(attempt)})")
                if failures > self.max_retries:
                    self._fail(ProviderUnavailable, f"LLM provider {failure.cause} after {_attempts(attempt)}")
                delay = self._delay(failures, failure.retry_after)
                if time.monotonic() + delay >= deadline:
                    asked = " (it asked to wait " + _seconds(delay) + ")" if failure.retry_after is not None else ""
                    self._fail(
                        ProviderUnavailable,
                        f"LLM provider {failure.cause} after {_attempts(attempt)}; "
                        f"no time left before the run's deadline to retry{asked}",
                    )
                log.warning(
                    "LLM provider %s (attempt %d of %d); retrying in %s",
                    failure.cause,
                    failures,
                    self.max_retries + 1,
                    _seconds(delay),
                )
                time.sleep(delay)
                continue
            if 200 <= status < 300:
                try:
                    completion = self._completion(body, model, attempt, started)
                except StepFailed:
                    gate.answered(None, None)
                    raise
                gate.answered(completion.prompt_tokens, completion.completion_tokens)
                return completion
            gate.answered(None, None)
            code = _error_code(body)
            self._fail(
                ProviderFailed,
                f"LLM provider answered {status} {reason}".rstrip()
                + (f" ({code}; not retried)" if code else " (not retried)"),
            )

    def _fail(self, exception_class: type[StepFailed], message: str) -> NoReturn:
        log.warning("%s", message)
        raise exception_class(message) from None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return random.uniform(0, min(BACKOFF_CAP_S, self.backoff_s * 2 ** (attempt - 1)))

    def _attempt(self, payload: dict[str, Any], budget: float) -> tuple[int, str, bytes]:
        """POST once within ``budget`` seconds; return (status, reason, body) of an answer not worth retrying.

        :raise _RateLimited: on 429.
        :raise _Retryable: on 5xx, a timeout or a connection error.
        """
        attempt_deadline = time.monotonic() + budget
        seconds = budget if math.isfinite(budget) else None
        try:
            with self._client.stream("POST", self.url, json=payload, timeout=httpx.Timeout(seconds)) as response:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        self._fail(
                            ProviderFailed,
                            f"LLM provider's response is larger than "
                            f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MiB (not retried)",
                        )
                    chunks.append(chunk)
                    if time.monotonic() > attempt_deadline:
                        raise _AttemptTimedOut
                status, reason, headers = response.status_code, response.reason_phrase, response.headers
        except (httpx.TimeoutException, _AttemptTimedOut):
            raise _Retryable("timed out", timed_out=True) from None
        except httpx.TransportError as exc:
            # The exception's text is left out: it may quote a header (and so the key).
            raise _Retryable(f"could not be reached ({type(exc).__name__})") from None
        except httpx.DecodingError:
            self._fail(ProviderFailed, "LLM provider returned a malformed response (undecodable content encoding)")
        except httpx.HTTPError as exc:
            self._fail(ProviderFailed, f"LLM provider request failed ({type(exc).__name__}; not retried)")
        body = b"".join(chunks)
        if status == 429:
            raise _RateLimited(_retry_after(headers))
        if status >= 500:
            raise _Retryable(f"answered {status} {reason}".rstrip(), retry_after=_retry_after(headers))
        return status, reason, body

    def _completion(self, body: bytes, model: str, attempts: int, started: float) -> Completion:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            self._fail(ProviderFailed, "LLM provider returned a malformed response (not JSON)")
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text = choice = None
        if not isinstance(text, str):
            self._fail(ProviderFailed, "LLM provider returned a malformed response (no choices[0].message.content)")
        if unstorable_reason(text):
            self._fail(
                ProviderFailed,
                "LLM provider returned text that cannot be stored (a NUL character or an unpaired surrogate)",
            )
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_tokens, completion_tokens = (
            _token_count(usage.get("prompt_tokens")),
            _token_count(usage.get("completion_tokens")),
        )
        if prompt_tokens is not None and completion_tokens is not None:
            tokens = f"{prompt_tokens} prompt + {completion_tokens} completion tokens"
        else:
            tokens = "token usage not reported"
        cut = ", cut off at max_tokens" if isinstance(choice, dict) and choice.get("finish_reason") == "length" else ""
        elapsed_ms = round((time.monotonic() - started) * 1000)
        return Completion(
            text=text,
            note=f"openai provider: model {_shown_model(data.get('model'), model)}, {tokens}{cut}, "
            f"{_attempts(attempts)}, {elapsed_ms} ms",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


# The providers: what from_config returns, and what a run's context holds.
Provider = EchoProvider | OpenAIProvider


def from_config(config: Settings) -> Provider:
    """Return the provider the configuration selects: ``openai`` whenever LLM_API_KEY is set, else ``echo``."""
    api_key = config.llm_api_key
    default_model = config.llm_model
    if not api_key:
        log.info("LLM provider: echo (LLM_API_KEY is not set: generative_ai nodes return their rendered prompt)")
        return EchoProvider(default_model=default_model)
    provider = OpenAIProvider(
        api_key=api_key,
        base_url=config.llm_base_url,
        timeout_s=config.llm_timeout_s,
        max_retries=config.llm_max_retries,
        backoff_s=config.llm_backoff_s,
        default_model=default_model,
    )
    log.info(
        "LLM provider: openai at %s (%s per attempt, up to %d retries)",
        mask_secret_url(provider.url),
        _seconds(provider.timeout_s),
        provider.max_retries,
    )
    return provider
