"""The batch window's front: which requests are deferred, the 202 job answer, and job lookups.

A request is non-urgent with ``{"tierwise": {"urgent": false}}`` in its body or the header
``x-tierwise-urgent: false`` (the body wins). It is routed as usual (``Completions.plan``); when
the batch window is on and the chosen tier has a ``batch_discount``, it is queued in the job store
and answered 202 with a job id, else it is answered synchronously (marked ``x-tierwise-batch``).
A non-urgent stream is a contradiction and refused (400). ``service.gateway.batch.runner`` sends
queued
jobs upstream and writes their results back. Deferred requests skip the response cache. A
non-urgent request whose routed tier has no batch price is answered now on the same decision
(``Deferral.plan`` goes to ``Completions.handle``): one request, one decision, one record.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from router_model.errors import NotFound
from router_model.router import prompt_digest
from service.gateway.batch.jobs import Job, JobStore
from service.gateway.batch.runner import BatchMetrics
from service.gateway.config import GatewayConfig, TierConfig
from service.gateway.decisions.source import DecisionSource
from service.gateway.errors import BadRequest
from service.gateway.levers.trimming import trim_forward
from service.gateway.planning import Plan, Planner
from service.gateway.requests import ChatBody, ChatRequest
from service.gateway.tenants import tenant_of

logger = logging.getLogger(__name__)

URGENT_HEADER = "x-tierwise-urgent"
#: Response header of a non-urgent request answered synchronously: why it was not batched.
FALLBACK_HEADER = "x-tierwise-batch"
JOB_PREFIX = "tw-job-"
_FALSE = frozenset({"false", "0", "no"})
_TRUE = frozenset({"true", "1", "yes"})


def non_urgent(body: ChatBody, headers: Mapping[str, str]) -> bool:
    """Whether the request may wait for a batch: ``tierwise.urgent``, else the header.

    Raises:
        BadRequest: when the header is not a boolean.
    """
    if body.tierwise is not None and body.tierwise.urgent is not None:
        return not body.tierwise.urgent
    header = headers.get(URGENT_HEADER)
    if header is None:
        return False
    value = header.strip().lower()
    if value not in _FALSE | _TRUE:
        raise BadRequest(f"{URGENT_HEADER} must be true or false, got {header[:20]!r}",
                         param=URGENT_HEADER, code="invalid_value")
    return value in _FALSE


@dataclass(frozen=True)
class Deferral:
    """The outcome of ``BatchWindow.defer``: a 202 response, or why the request goes on now."""

    response: JSONResponse | None = None
    #: ``off`` (batch window disabled) or ``unsupported`` (the tier has no batch price).
    fallback: str | None = None
    #: The routing decision already taken (``unsupported``): the synchronous answer reuses it.
    plan: Plan | None = None


@dataclass
class BatchWindow:
    """Queues non-urgent requests as jobs and answers job lookups (any replica, shared store)."""

    config: GatewayConfig
    jobs: JobStore | None
    planner: Planner
    decisions: DecisionSource
    tokenizer: Any
    metrics: BatchMetrics

    def batch_tiers(self) -> dict[str, TierConfig]:
        """The tiers with a batch price, by name (none while the window is off)."""
        if not self.config.batch.enabled:
            return {}
        return {t.name: t for t in self.config.tiers if t.batch_discount is not None}

    async def defer(self, chat: ChatRequest, headers: Mapping[str, str]) -> Deferral:
        """Queue the request when it is non-urgent and its tier has a batch price.

        Raises:
            BadRequest: a non-urgent stream, or a request the gateway cannot use at all.
            ModelNotFound, InvalidPrompt: when the request cannot be routed.
        """
        body = chat.body
        if not non_urgent(body, headers):
            return Deferral()
        if body.stream:
            raise BadRequest("a non-urgent request is answered later through the batch "
                             "endpoint and cannot stream: drop 'stream' or send it urgent",
                             param="stream", code="invalid_value")
        tiers = self.batch_tiers()
        if not tiers or self.jobs is None:
            return Deferral(fallback="off")
        scored = chat.scored
        plan = await self.planner.plan(body, headers, chat.messages)
        tier = tiers.get(plan.tier)
        if tier is None:
            return Deferral(fallback="unsupported", plan=plan)
        forward = chat.forward()
        trimmed = await trim_forward(forward, self.config.trim, body.tierwise, self.tokenizer)
        features: list[float] = []
        if plan.decision is not None:
            features = await self.decisions.features(scored)
        job = Job(
            id=JOB_PREFIX + uuid.uuid4().hex, tenant=chat.tenant, tier=tier.name,
            status="queued", created_at=time.time(), request=forward,
            draft=self._draft(body, plan, scored, features, trimmed),
        )
        await self.jobs.add(job)
        self.metrics.jobs.labels("queued").inc()
        logger.info("job %s queued for tier %s (decision %s)", job.id, tier.name,
                    plan.decision_id)
        return Deferral(JSONResponse(
            job_document(job, tier), status_code=202,
            headers={"location": f"/v1/tierwise/jobs/{job.id}",
                     "x-tierwise-decision-id": plan.decision_id, "x-tierwise-tier": tier.name},
        ))

    def _draft(self, body: ChatBody, plan: Plan, scored: str, features: list[float],
               trimmed: int) -> dict[str, Any]:
        """The traffic record's fields known now; the runner adds usage, cost and status."""
        d, policy = plan.decision, plan.policy
        return {
            "decision_id": plan.decision_id, "arm": plan.arm, "propensity": plan.propensity,
            "source": plan.source, "requested_model": body.model, "decided_tier": plan.tier,
            "router_tier": d.tier if d else "", "fail_open": plan.source == "fail_open",
            "router_latency_ms": d.latency_ms if d else None,
            "quality": d.quality if d else (policy.quality if policy else None),
            "min_tier": d.min_tier if d else None, "max_tier": d.max_tier if d else None,
            "probabilities": d.probabilities if d else {},
            "model_version": d.model_version if d else None,
            "feature_version": d.feature_version if d and features else None,
            "features": features, "prompt_sha256": prompt_digest(scored) if scored else "",
            "prompt": scored if self.config.traffic.store_prompts and scored else None,
            "trimmed_tokens": trimmed,
        }

    async def job(self, job_id: str, headers: Mapping[str, str]) -> dict[str, Any]:
        """The job document of the caller's own job.

        Raises:
            NotFound: when there is no such job, or it is another tenant's.
        """
        found = None
        if self.jobs is not None and job_id.startswith(JOB_PREFIX):
            found = await self.jobs.get(job_id, tenant_of(headers))
        if found is None:
            raise NotFound(f"no job with id {job_id[:80]!r}")
        # a tier dropped from the config since the job was queued still shows its job
        tier = next((t for t in self.config.tiers if t.name == found.tier), None)
        return job_document(found, tier)


def job_document(job: Job, tier: TierConfig | None) -> dict[str, Any]:
    """What clients see of a job: ``response`` once completed, ``error`` once failed."""
    return {
        "id": job.id, "object": "tierwise.batch_job", "status": _public_status(job.status),
        "created_at": int(job.created_at), "tier": job.tier,
        "model": tier.model if tier else None,
        "decision_id": job.draft.get("decision_id"),
        "batch_discount": tier.batch_discount if tier else None,
        "completed_at": None if job.finished_at is None else int(job.finished_at),
        "response": job.result,
        "error": None if job.error is None else {
            "message": job.error, "type": "api_error", "param": None, "code": "batch_failed"},
    }


def _public_status(status: str) -> str:
    # a claim is internal bookkeeping: for the client the job still waits for its batch
    return "queued" if status == "claimed" else status
