"""The LiteLLM plug-in: tierwise picks the deployment of a LiteLLM model group.

Two ways in, one decision (``TierPicker``): ``TierwiseRoutingStrategy`` for a ``litellm.Router``
in your own process (``Router.set_custom_routing_strategy``), and ``TierwiseProxyHook``, a
LiteLLM ``CustomLogger`` callback for the LiteLLM proxy that narrows a group's healthy deployments
to the chosen tier's. A deployment belongs to a tier by ``model_info: {tierwise_tier: NAME}``, or
else by its model being the tier's model. When the router service gives no decision within the
deadline, the request fails open to the ``fail_open`` deployment, and a warning says why.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from litellm.integrations.custom_logger import CustomLogger
from litellm.router import Router
from litellm.types.router import CustomRoutingStrategyBase

from integrations.tierwise_client import Chat, RouterCallFailed, TierwiseClient

logger = logging.getLogger(__name__)

Deployment = dict[str, Any]
#: The ``model_info`` key that names a deployment's tier.
TIER_KEY = "tierwise_tier"


@dataclass(frozen=True)
class TierwiseOptions:
    """Where the router service is and what to do without it.

    ``router``: ``grpc://HOST:PORT`` or ``http://HOST:PORT``; ``groups``: the LiteLLM model groups
    tierwise routes (others route as LiteLLM would); ``fail_open``: what serves when the router
    gives no decision, a tier name (``model_info.tierwise_tier``), a deployment id
    (``model_info.id``) or a model (``litellm_params.model``); ``timeout_s``: the deadline of
    one router call; ``quality``: the policy's quality knob (None: the router's default).
    """

    router: str
    groups: tuple[str, ...]
    fail_open: str
    timeout_s: float = 0.1
    quality: float | None = None


def deployment_tier(deployment: Mapping[str, Any]) -> str | None:
    """The tier a deployment is marked with (``model_info.tierwise_tier``), if any."""
    tier = (deployment.get("model_info") or {}).get(TIER_KEY)
    return str(tier) if tier is not None else None


def _serves_model(deployment: Mapping[str, Any], model: str) -> bool:
    # LiteLLM names a model "provider/model": "openai/gpt-4o" serves the tier model "gpt-4o"
    name = str((deployment.get("litellm_params") or {}).get("model", ""))
    return name == model or name.partition("/")[2] == model


def fail_open_deployments(deployments: Sequence[Deployment], name: str) -> list[Deployment]:
    """The deployments ``name`` means: those of that tier, with that id, or serving that model."""
    return [d for d in deployments
            if deployment_tier(d) == name or (d.get("model_info") or {}).get("id") == name
            or _serves_model(d, name)]


def tier_deployments(deployments: Sequence[Deployment], tier: str,
                     model: str | None = None) -> list[Deployment]:
    """The deployments marked with ``tier``; when none is marked, those serving ``model``."""
    marked = [d for d in deployments if deployment_tier(d) == tier]
    if marked or model is None:
        return marked
    return [d for d in deployments if deployment_tier(d) is None and _serves_model(d, model)]


class TierPicker:
    """Narrows a model group's deployments to those of the tier the router service chose."""

    def __init__(self, options: TierwiseOptions, client: TierwiseClient | None = None) -> None:
        self.options = options
        self.client = client or TierwiseClient(options.router, options.timeout_s,
                                               options.quality)

    def routes(self, group: str, messages: Chat | None) -> bool:
        """Whether tierwise decides this request (a chat to one of its groups)."""
        return group in self.options.groups and bool(messages)

    async def apick(self, group: str, deployments: Sequence[Deployment],
                    messages: Chat) -> list[Deployment]:
        """The deployments of the chosen tier, or of the fail-open tier without a decision."""
        try:
            answer = await self.client.aroute(messages)
        except RouterCallFailed as exc:
            return self._fail_open(group, deployments, str(exc))
        return self._chosen(group, deployments, answer.tier, answer.model)

    def pick(self, group: str, deployments: Sequence[Deployment],
             messages: Chat) -> list[Deployment]:
        """``apick``, blocking."""
        try:
            answer = self.client.route(messages)
        except RouterCallFailed as exc:
            return self._fail_open(group, deployments, str(exc))
        return self._chosen(group, deployments, answer.tier, answer.model)

    def _chosen(self, group: str, deployments: Sequence[Deployment], tier: str,
                model: str) -> list[Deployment]:
        chosen = tier_deployments(deployments, tier, model)
        if chosen:
            return chosen
        return self._fail_open(group, deployments, f"no healthy deployment for tier {tier!r}")

    def _fail_open(self, group: str, deployments: Sequence[Deployment],
                   why: str) -> list[Deployment]:
        fallback = fail_open_deployments(deployments, self.options.fail_open)
        logger.warning("tierwise: %s (router %s); group %s fails open to %s%s", why,
                       self.client.address, group, self.options.fail_open,
                       "" if fallback else ", which has no healthy deployment: LiteLLM picks")
        return fallback or list(deployments)


class TierwiseRoutingStrategy(CustomRoutingStrategyBase):  # type: ignore[misc,unused-ignore]
    """A ``litellm.Router`` routing strategy: tierwise picks the deployment of its groups.

    ``install()`` sets it on the router. Other groups, and calls without a chat (embeddings),
    route as the router's own strategy would. The async path picks among the healthy deployments
    (cooldowns applied); the blocking path among the group's deployments.
    """

    def __init__(self, router: Router, options: TierwiseOptions,
                 client: TierwiseClient | None = None) -> None:
        self.router = router
        self.picker = TierPicker(options, client)

    def install(self) -> TierwiseRoutingStrategy:
        """Make this the router's strategy (``Router.set_custom_routing_strategy``)."""
        self.router.set_custom_routing_strategy(self)
        return self

    async def async_get_available_deployment(
        self, model: str, messages: list[dict[str, Any]] | None = None,
        input: str | list[Any] | None = None, specific_deployment: bool | None = False,
        request_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = request_kwargs if request_kwargs is not None else {}
        if specific_deployment or not self.picker.routes(model, messages):
            return await Router.async_get_available_deployment(
                self.router, model=model, request_kwargs=kwargs, messages=messages, input=input,
                specific_deployment=specific_deployment)
        healthy = await self.router.async_get_healthy_deployments(
            model=model, request_kwargs=kwargs, messages=messages, input=input,
            specific_deployment=specific_deployment)
        if isinstance(healthy, dict) or not healthy:
            # one pinned deployment, or none healthy: LiteLLM answers (and raises) as it would
            return await Router.async_get_available_deployment(
                self.router, model=model, request_kwargs=kwargs, messages=messages, input=input,
                specific_deployment=specific_deployment)
        assert messages is not None  # routes() checked it
        return random.choice(await self.picker.apick(model, healthy, messages))

    def get_available_deployment(
        self, model: str, messages: list[dict[str, Any]] | None = None,
        input: str | list[Any] | None = None, specific_deployment: bool | None = False,
        request_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        deployments: list[Deployment] = [dict(d) for d in
                                         self.router.get_model_list(model_name=model) or []]
        if specific_deployment or not self.picker.routes(model, messages) or not deployments:
            return Router.get_available_deployment(
                self.router, model=model, messages=messages, input=input,
                specific_deployment=specific_deployment, request_kwargs=request_kwargs)
        assert messages is not None
        return random.choice(self.picker.pick(model, deployments, messages))

    async def aclose(self) -> None:
        """Close the router-service connections."""
        await self.picker.client.aclose()


class TierwiseProxyHook(CustomLogger):  # type: ignore[misc,unused-ignore]
    """A LiteLLM proxy callback: narrows a tierwise group's healthy deployments to the chosen tier.

    It runs where LiteLLM filters deployments (``async_filter_deployments``, after cooldowns), so
    LiteLLM's retries, cooldowns and fallbacks work as before within the tier.
    """

    def __init__(self, options: TierwiseOptions, client: TierwiseClient | None = None) -> None:
        super().__init__()
        self.picker = TierPicker(options, client)

    async def async_filter_deployments(
        self, model: str, healthy_deployments: list[Deployment],
        messages: list[Any] | None, request_kwargs: dict[str, Any] | None = None,
        parent_otel_span: Any = None,
    ) -> list[Deployment]:
        if not healthy_deployments or not self.picker.routes(model, messages):
            return healthy_deployments
        assert messages is not None
        return await self.picker.apick(model, healthy_deployments, messages)
