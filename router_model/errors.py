"""The tierwise exception hierarchy, shared by training and serving.

    RouterError                 base; every error has a stable ``code``
    ├── InvalidPrompt           the request cannot be scored (empty, too long, bad policy)
    │   └── PromptTooLarge      the request is over the size limit (HTTP 413)
    ├── ModelNotReady           no model bundle is loaded yet
    ├── ArtifactMismatch        a bundle is corrupt or was built for other feature code
    ├── Overloaded              the service sheds load
    ├── UpstreamError           an upstream LLM provider failed
    ├── NotFound                a referenced object (decision id, tier) does not exist
    └── InvalidData             a labeled-data or tiers file is malformed (names file and line)
"""

from __future__ import annotations

from typing import ClassVar


class RouterError(Exception):
    """Base of all tierwise errors; ``code`` is stable and machine-readable."""

    code: ClassVar[str] = "router_error"


class InvalidPrompt(RouterError):
    """The request cannot be scored: empty or malformed prompt, unknown tier, bad knob."""

    code: ClassVar[str] = "invalid_prompt"


class PromptTooLarge(InvalidPrompt):
    """The request body or prompt is over the configured size limit."""

    code: ClassVar[str] = "prompt_too_large"


class ModelNotReady(RouterError):
    """No model bundle is loaded (yet)."""

    code: ClassVar[str] = "model_not_ready"


class ArtifactMismatch(RouterError):
    """A model bundle is corrupt, incomplete, or built for a different feature version."""

    code: ClassVar[str] = "artifact_mismatch"


class Overloaded(RouterError):
    """The service has more work queued than its limit and sheds this request."""

    code: ClassVar[str] = "overloaded"


class UpstreamError(RouterError):
    """An upstream LLM provider failed (5xx, 429, timeout, refused connection)."""

    code: ClassVar[str] = "upstream_error"


class NotFound(RouterError):
    """A referenced object does not exist (for example an unknown decision id)."""

    code: ClassVar[str] = "not_found"


class InvalidData(RouterError):
    """A labeled-data or tiers file is malformed; the message names the file and line."""

    code: ClassVar[str] = "invalid_data"
