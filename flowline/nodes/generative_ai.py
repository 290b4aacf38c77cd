"""``generative_ai``: a prompt rendered with the node's input, completed by the configured LLM provider."""

import time
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, fields, validate

from ..core.fields import StrictFloat, Text, not_blank
from .base import NodeContext, NodeType


class GenerativeAIConfigSchema(Schema):
    """``generative_ai``: ``{text}`` in the prompt is replaced by the node's input; without it the input follows.
    No ``prompt``: the input is the prompt. No ``model``: the server's LLM_MODEL."""

    prompt = Text(
        load_default="{text}",
        validate=validate.Length(min=1, max=4000),
        metadata={"description": "Default `{text}`: the node's input is the whole prompt."},
    )
    # No load_default: a missing model is left out (the executor asks for LLM_MODEL), while null stays a 422.
    model = Text(
        validate=[validate.Length(min=1, max=200), not_blank],
        metadata={"description": "Default: the server's LLM_MODEL setting."},
    )
    temperature = StrictFloat(load_default=1.0, validate=validate.Range(min=0, max=2))
    max_tokens = fields.Integer(strict=True, load_default=1024, validate=validate.Range(min=1, max=4096))
    top_p = StrictFloat(load_default=1.0, validate=validate.Range(min=0, max=1))


def render_prompt(prompt: str, text: str) -> str:
    """Return ``prompt`` with ``{text}`` replaced by ``text``; without ``{text}``, ``text`` follows a blank line."""
    if "{text}" in prompt:
        return prompt.replace("{text}", text)
    return f"{prompt}\n\n{text}"


def estimated_tokens(prompt: str, max_tokens: int) -> int:
    """Return the tokens a call is reserved for before it is sent: its prompt's characters / 4 (rounded up: about
    four characters a token in English text) + the most it may answer (``max_tokens``)."""
    return -(-len(prompt) // 4) + max_tokens


def run(config: Mapping[str, Any], text: str, ctx: NodeContext) -> tuple[str, str | None]:
    """Return the provider's completion of the rendered prompt, within what is left of the run's time.

    :raise ProviderFailed: the provider failed (ProviderUnavailable: worth another attempt).
    :raise RunTimedOut: the run's deadline came first.
    :raise MustWait: the run must wait for the model's budget (or its pause after a 429).
    """
    remaining = ctx.deadline - time.monotonic()
    model = config.get("model") or ctx.provider.default_model
    prompt = render_prompt(config["prompt"], text)
    completion = ctx.provider.complete(
        prompt=prompt,
        model=model,
        temperature=config["temperature"],
        max_tokens=config["max_tokens"],
        top_p=config["top_p"],
        timeout=remaining,
        gate=ctx.llm_gate(model, estimated_tokens(prompt, config["max_tokens"])),
    )
    ctx.record_usage(model, completion.prompt_tokens, completion.completion_tokens)
    if "model" not in config:
        return completion.text, f"{completion.note}; model {model} is LLM_MODEL (the node names none)"
    return completion.text, completion.note


NODE_TYPE = NodeType(
    name="generative_ai",
    config_schema=GenerativeAIConfigSchema(),
    run=run,
    waits_outside=True,
    file_keys=(),
    component="GenerativeAI",
    description="A `generative_ai` node: its prompt, with the input in place of `{text}`, completed by the "
    "server's LLM provider.",
)
