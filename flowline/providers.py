"""LLM providers for the ``generative_ai`` node, behind one small interface."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    text: str
    # What a reader of the run history should know: provider, model, tokens, latency.
    note: str


class EchoProvider:
    """Generates nothing: returns the rendered prompt, and says so in the step's note."""

    name = "echo"

    def complete(self, *, prompt, model, temperature, max_tokens, top_p, timeout):
        """Return ``prompt`` unchanged as the completion."""
        return Completion(
            text=prompt,
            note=f"echo provider: nothing generated; the output is the rendered prompt (model {model!r} was not called)",
        )


def from_config(config):
    """Return the provider the configuration selects (only ``echo`` so far; issue #3 adds ``openai``)."""
    return EchoProvider()
