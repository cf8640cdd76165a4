"""HTTP request and response models: a field-for-field mirror of ``tierwise/v1/router.proto``.

``tests/unit/service/test_schemas.py`` compares every mirrored model with its proto message. The
deliberate differences follow OpenAI's chat format: ``ChatMessage.content`` also takes a plain
string (the shorthand for one text part) or null (an assistant turn that only calls tools), and
the members of a message or content part that the router does not use (``name``, ``tool_calls``,
``tool_call_id``, ``image_url``, ``cache_control``, ...) are accepted and ignored, as a protobuf
parser skips unknown fields. ``ReloadRequest``, ``ReloadResponse`` and ``Problem`` are HTTP-only
(admin and RFC 9457 errors) and have no proto counterpart.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    # unknown fields are an error rather than silently ignored: a misspelled "polcy" must not
    # route with the default policy
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class _Request(_Strict):
    # what a client sends is taken at its JSON type: "0.5" and true are not numbers (pydantic's
    # lax mode would route them as 0.5 and 1.0); nested objects are still read from JSON objects
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())


class _ChatShape(BaseModel):
    # clients send a chat as they hold it, in OpenAI's format, which has many members the router
    # does not score and gains more every year: those are ignored rather than refused. A
    # misspelled member is ignored too, which costs little here: the fields that are read keep
    # their types, and a chat without user text to score is still refused
    model_config = ConfigDict(extra="ignore", strict=True, protected_namespaces=())


class ContentPart(_ChatShape):
    """One part of a chat message's content; only parts of type ``text`` are scored."""

    type: str = Field(examples=["text"])
    text: str = ""


class ChatMessage(_ChatShape):
    """One chat turn in OpenAI format."""

    role: str = Field(examples=["user"])
    content: str | list[ContentPart] | None = Field(
        default=None,
        description="A string, a list of content parts (only 'text' parts are scored), or null "
        "(an assistant turn with tool calls).",
    )


class Policy(_Request):
    """A request's routing policy; unset fields fall back to the bundle's defaults."""

    quality: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Required probability that the chosen tier answers as well as the best tier.",
    )
    min_tier: str | None = Field(default=None, description="Cheapest tier allowed (inclusive).")
    max_tier: str | None = Field(default=None, description="Most expensive tier allowed.")
    allowed_tiers: list[str] = Field(
        default_factory=list, description="When non-empty, only these tiers may be chosen."
    )


class RouteRequest(_Request):
    """Exactly one of ``prompt`` and ``messages``, and an optional policy."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"prompt": "What is 2 + 2?"},
                {
                    "messages": [{"role": "user", "content": "Prove that sqrt(2) is irrational."}],
                    "policy": {"quality": 0.9},
                },
            ]
        }
    )

    prompt: str | None = None
    messages: list[ChatMessage] = Field(default_factory=list)
    policy: Policy | None = None


class RouteResponse(_Strict):
    """One routing decision."""

    decision_id: str = Field(description="uuid4 hex; the request id in the decision log.")
    tier: str
    model: str = Field(description="Upstream model name of the chosen tier.")
    probabilities: dict[str, float] = Field(
        description="Probability that each tier is the cheapest adequate one."
    )
    expected_cost_usd: float
    top_tier_cost_usd: float
    policy: Policy = Field(description="The policy applied, defaults filled in.")
    model_version: str
    feature_version: int
    input_tokens: int
    latency_ms: float = Field(description="Time in the service core, transports excluded.")


class RouteBatchRequest(_Request):
    """Several route requests, scored together."""

    requests: list[RouteRequest]


class RouteBatchResponse(_Strict):
    """Decisions in the order of the requests."""

    responses: list[RouteResponse]


class TierInfo(_Strict):
    """A tier: API name, upstream model, list prices in USD per million tokens."""

    name: str
    model: str
    input_price: float
    output_price: float


class ListTiersResponse(_Strict):
    """The served tier ladder, cheapest first."""

    tiers: list[TierInfo]


class ModelInfo(_Strict):
    """The served bundle's identity."""

    name: str
    model_version: str
    feature_version: int
    feature_set: str
    default_quality: float
    tiers: list[TierInfo]
    created_at: str
    git_sha: str


class ReloadRequest(_Request):
    """HTTP-only admin request: load the bundle directory at ``path`` and serve it."""

    path: str = Field(min_length=1)


class ReloadResponse(_Strict):
    """HTTP-only: the bundle served before and after a reload."""

    previous_model_version: str | None
    model: ModelInfo


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``), the body of every HTTP error."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str = Field(description="Stable machine-readable error code.")
