"""What the gateway reads from a client request: the chat body, the knob, the A/B unit id.

The members the gateway uses and OpenAI's sampling parameters are validated (strictly: wrong
types and out-of-range values are 400s, as at OpenAI; ``service.gateway.params``); other members
of OpenAI's reference are forwarded untouched, unknown ones dropped. NaN and Infinity, which
Python's json reads but JSON has not, are refused. Every string of a body, keys included, must be
valid Unicode: JSON can spell a lone UTF-16 surrogate (``"\\ud800"``), which no UTF-8 encoder,
database or protobuf takes, so such a body is refused whole (400) before anything is routed or
recorded. So is a body nesting arrays and objects deeper than ``MAX_JSON_DEPTH``: the parser and
the code that copies or hashes a body recurse, and a client must not choose how deep.

The per-request knob comes from the ``tierwise`` body member (``{"quality": 0.8, "min_tier":
"weak", "max_tier": "strong", "allowed_tiers": ["weak", "strong"], "trim": true, "cascade":
true}``, sent with the OpenAI SDK as ``extra_body={"tierwise": {...}}``) or, for ``quality``
only, from the ``x-tierwise-quality`` header; the body wins when both are given. ``"cache":
"auto" | "exact" | "off"`` (or the ``x-tierwise-cache`` header, the body winning) limits the
response cache for one request (``docs/cache.md``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router_model.chat import ChatMessage, ContentPart, scored_text
from router_model.errors import InvalidPrompt
from router_model.policy import Policy
from service.gateway.errors import BadRequest
from service.gateway.json_text import holds_lone_surrogate
from service.gateway.params import FORWARDED_MEMBERS, OpenAIParams
from service.gateway.tenants import tenant_of

logger = logging.getLogger(__name__)

AUTO_MODEL = "tierwise-auto"
QUALITY_HEADER = "x-tierwise-quality"
CACHE_HEADER = "x-tierwise-cache"
#: What a request lets the response cache do: "auto" every layer the config enables, "exact"
#: the exact layer only, "off" no lookup and no store.
CacheMode = Literal["auto", "exact", "off"]
CACHE_MODES: tuple[CacheMode, ...] = ("auto", "exact", "off")
#: Where the A/B unit id comes from, in order: body ``user``, then these headers.
USER_HEADERS = ("x-tierwise-user", "x-session-id")

M = TypeVar("M", bound=BaseModel)
#: Deepest nesting of arrays and objects a request body may have (the body itself is level 1);
#: OpenAI's own structured-output schemas stay far below it.
MAX_JSON_DEPTH = 100


class PartIn(BaseModel):
    """One content part; only ``text`` parts are scored."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class MessageIn(BaseModel):
    """One chat message as the OpenAI API takes it."""

    model_config = ConfigDict(extra="allow", strict=True)
    role: str = Field(min_length=1)
    content: str | list[PartIn] | None = None


class KnobIn(BaseModel):
    """The ``tierwise`` extension member of a request."""

    model_config = ConfigDict(extra="forbid", strict=True)
    quality: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    min_tier: str | None = None
    max_tier: str | None = None
    #: None: every tier; an empty list would allow none, so it is refused (min_length).
    allowed_tiers: list[str] | None = Field(default=None, min_length=1)
    #: Trim redundant context before forwarding (None: the config's ``trim.enabled``).
    trim: bool | None = None
    #: Try a cheaper tier first, escalating when unsure (None: the config's ``cascade.enabled``).
    cascade: bool | None = None
    #: False: the request may wait for the upstream's batch endpoint
    #: (``service.gateway.batch.window``).
    urgent: bool | None = None
    #: What the response cache may do for this request (None: the header, else "auto").
    cache: CacheMode | None = None


class ChatBody(OpenAIParams):
    """The members of ``POST /v1/chat/completions`` the gateway reads or checks."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    stream: bool = False
    user: str | None = None
    tierwise: KnobIn | None = None


class FeedbackIn(BaseModel):
    """``POST /v1/feedback``: a score in [0, 1] or thumbs up/down for a decision."""

    model_config = ConfigDict(extra="forbid", strict=True)
    decision_id: str = Field(min_length=1, max_length=64)
    score: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    thumbs: str | None = Field(default=None, pattern="^(up|down)$")
    comment: str | None = Field(default=None, max_length=2000)


def parse_json(raw: bytes, model: type[M]) -> tuple[M, dict[str, Any]]:
    """Validate a JSON object body against ``model``; returns it and the parsed document.

    Raises:
        BadRequest: naming the offending member (``param``) when the body is not usable.
    """
    try:
        doc = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        _refuse_depth(None)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"the request body is not valid JSON ({exc})", code="invalid_json"
        ) from None
    if not isinstance(doc, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    check_document(doc)
    try:
        return model.model_validate(doc), doc
    except ValidationError as exc:
        raise invalid(exc) from None


def _refuse_constant(name: str) -> NoReturn:
    """Python's json reads ``NaN``, ``Infinity`` and ``-Infinity``; JSON has no such numbers."""
    raise BadRequest(f"the request body is not valid JSON ({name} is not a JSON number)",
                     code="invalid_json")


def invalid(exc: ValidationError) -> BadRequest:
    """The 400 of a failed validation: its first error's message, naming the member."""
    first = exc.errors(include_url=False)[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
    message = str(first["msg"]).removeprefix("Value error, ")  # a validator's own words
    return BadRequest(f"{param}: {message}" if param else message, param=param, code=code)


def check_document(doc: dict[str, Any]) -> None:
    """Refuse a document nested deeper than ``MAX_JSON_DEPTH`` or with a string (key or value)
    holding an unpaired UTF-16 surrogate.

    One pass over the parsed document, as long as ``json.dumps`` of it takes.

    Raises:
        BadRequest: naming where the first such string, or the too deep member, is (``param``).
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack:  # iterative: the depth of a document is the client's choice
        value, path = stack.pop()
        if type(value) is dict:
            bad_key = next((k for k in value if holds_lone_surrogate(k)), None)
            if bad_key is not None:
                _refuse_text((*path, bad_key))
            items: Any = value.items()
        else:
            items = enumerate(value)
        for key, item in items:
            kind = type(item)  # json.loads makes exactly these types
            if kind is str:
                if holds_lone_surrogate(item):
                    _refuse_text((*path, key))
            elif kind is dict or kind is list:
                if len(path) + 2 > MAX_JSON_DEPTH:
                    _refuse_depth(path[0] if path else key)
                stack.append((item, (*path, key)))


def _refuse_text(where: tuple[str | int, ...]) -> NoReturn:
    param = ".".join(str(p) for p in where).encode("utf-8", "replace").decode()
    raise BadRequest(f"{param}: the string holds an unpaired UTF-16 surrogate (such as "
                     "\\ud800), which is not valid Unicode text", param=param,
                     code="invalid_value")


def _refuse_depth(member: str | int | None) -> NoReturn:
    raise BadRequest(f"the request body nests arrays and objects deeper than {MAX_JSON_DEPTH} "
                     "levels" + (f" (in {member!r})" if member is not None else ""),
                     param=None if member is None else str(member), code="invalid_json")


def parse_chat(raw: bytes) -> tuple[ChatBody, dict[str, Any]]:
    """The chat request and its document less unknown members (``service.gateway.params``:
    dropped, never forwarded); the ``tierwise`` member is kept for the caller to strip.

    Raises:
        BadRequest: when the body is not JSON or a member has the wrong type or range.
    """
    body, doc = parse_json(raw, ChatBody)
    dropped = [k for k in doc if k not in FORWARDED_MEMBERS and k != "tierwise"]
    if dropped:
        logger.info("dropped unknown request members %s", [k[:40] for k in dropped[:10]])
        doc = {k: v for k, v in doc.items() if k not in dropped}
    return body, doc


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion request, parsed once: what the batch window, the planner, the levers
    and the completion all take."""

    body: ChatBody
    #: The whole document as the client sent it (``tierwise`` included); see ``forward``.
    doc: dict[str, Any]
    messages: tuple[ChatMessage, ...]
    #: The text the router scores ("" for a pass-through request without one).
    scored: str
    #: Who asked (``tenants.tenant_of``).
    tenant: str

    def forward(self) -> dict[str, Any]:
        """A fresh copy of the document to forward upstream (without ``tierwise``; levers such
        as trimming change their copy, never the request)."""
        return {k: v for k, v in self.doc.items() if k != "tierwise"}


def read_chat(raw: bytes, headers: Mapping[str, str]) -> ChatRequest:
    """Parse a chat completion request once.

    Raises:
        BadRequest: when the body is not a usable chat request, or a ``tierwise-auto`` request
            has nothing to score.
    """
    body, doc = parse_chat(raw)
    messages = to_messages(body.messages)
    return ChatRequest(body, doc, messages, request_text(body, messages), tenant_of(headers))


def request_text(body: ChatBody, messages: tuple[ChatMessage, ...]) -> str:
    """The text the router scores; a routed request needs one, a pass-through does not.

    Raises:
        BadRequest: when a ``tierwise-auto`` request has nothing to score.
    """
    try:
        return scored_text(messages)
    except InvalidPrompt as exc:
        if body.model == AUTO_MODEL:
            raise BadRequest(str(exc), param="messages") from exc
        return ""


def to_messages(messages: Sequence[MessageIn]) -> tuple[ChatMessage, ...]:
    """The core's view of the chat (string content is one text part)."""
    out = []
    for m in messages:
        if isinstance(m.content, str):
            parts: tuple[ContentPart, ...] = (ContentPart("text", m.content),)
        else:
            parts = tuple(ContentPart(p.type, p.text or "") for p in m.content or [])
        out.append(ChatMessage(m.role, parts))
    return tuple(out)


def request_policy(
    body: ChatBody, headers: Mapping[str, str], tiers: Sequence[str],
    default_quality: float | None,
) -> Policy:
    """The routing policy of a request: body ``tierwise``, then the header, then the default.

    Raises:
        BadRequest: when the knob is not a number in [0, 1] or a tier name is unknown.
    """
    knob = body.tierwise or KnobIn()
    quality = knob.quality
    header = headers.get(QUALITY_HEADER)
    if quality is None and header is not None:
        try:
            quality = float(header)
        except ValueError:
            quality = math.nan
        if not 0.0 <= quality <= 1.0:
            raise BadRequest(
                f"{QUALITY_HEADER} must be a number in [0, 1], got {header[:20]!r}",
                param=QUALITY_HEADER, code="invalid_value",
            )
    for param, name in [("tierwise.min_tier", knob.min_tier), ("tierwise.max_tier", knob.max_tier),
                        *(("tierwise.allowed_tiers", n) for n in knob.allowed_tiers or ())]:
        if name is not None and name not in tiers:
            raise BadRequest(
                f"{param}: unknown tier {name!r}; tiers are {list(tiers)}",
                param=param, code="invalid_value",
            )
    return Policy(
        quality=quality if quality is not None else default_quality,
        min_tier=knob.min_tier, max_tier=knob.max_tier,
        allowed_tiers=tuple(knob.allowed_tiers or ()),
    )


def cache_mode(body: ChatBody, headers: Mapping[str, str]) -> CacheMode:
    """The request's cache mode: body ``tierwise.cache``, then the header, then "auto".

    Raises:
        BadRequest: when the header is not one of the modes.
    """
    if body.tierwise is not None and body.tierwise.cache is not None:
        return body.tierwise.cache
    header = headers.get(CACHE_HEADER)
    if header is None:
        return "auto"
    for mode in CACHE_MODES:
        if header.strip().lower() == mode:
            return mode
    raise BadRequest(f"{CACHE_HEADER} must be one of {list(CACHE_MODES)}, got {header[:20]!r}",
                     param=CACHE_HEADER, code="invalid_value")


def unit_id(body: ChatBody, headers: Mapping[str, str]) -> str | None:
    """The id that keeps a user's A/B arm sticky (None: assign at random)."""
    if body.user:
        return body.user
    for name in USER_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None
