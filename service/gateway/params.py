"""The OpenAI chat-completion parameters the gateway checks, and which top-level members it
forwards.

Types and ranges follow OpenAI's API reference for ``POST /v1/chat/completions``; ``null`` is
accepted wherever OpenAI accepts it, and NaN and the infinities are refused everywhere
(``service.gateway.requests`` refuses them at parse time, since JSON has no such numbers).

The rule for unknown top-level members: a member outside ``FORWARDED_MEMBERS`` (OpenAI's
documented request members) is dropped, never forwarded, and its name logged. A client cannot
smuggle ``api_key``, ``base_url`` or a provider-specific switch to an upstream it does not choose;
the ``tierwise`` member is the gateway's own and is never forwarded either.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: OpenAI's documented top-level members of a chat completion request (forwarded as sent).
FORWARDED_MEMBERS = frozenset({
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
    "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier", "stop",
    "store", "stream", "stream_options", "temperature", "tool_choice", "tools", "top_logprobs",
    "top_p", "user", "verbosity", "web_search_options",
})
#: OpenAI's limits: ``n`` choices, ``stop`` sequences, ``logit_bias`` entries, ``metadata``.
MAX_CHOICES = 128
MAX_STOP = 4
MAX_METADATA = 16


def _number(low: float, high: float) -> float | None:
    return Field(default=None, ge=low, le=high, allow_inf_nan=False)


class OpenAIParams(BaseModel):
    """The checked sampling and shape parameters (strict types: ``"1"`` is no number)."""

    model_config = ConfigDict(extra="allow", strict=True)
    temperature: float | None = _number(0.0, 2.0)
    top_p: float | None = _number(0.0, 1.0)
    presence_penalty: float | None = _number(-2.0, 2.0)
    frequency_penalty: float | None = _number(-2.0, 2.0)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    stop: str | list[str] | None = Field(default=None)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=300)
    metadata: dict[str, str] | None = Field(default=None, max_length=MAX_METADATA)
    stream_options: dict[str, bool] | None = None
    response_format: dict[str, object] | None = None
    tools: list[dict[str, object]] | None = Field(default=None, max_length=128)
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    service_tier: str | None = Field(default=None, max_length=32)
    reasoning_effort: str | None = Field(default=None, max_length=32)

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and any(not -100.0 <= b <= 100.0 for b in value.values()):
            raise ValueError("each bias must be a number in [-100, 100]")
        return value
