"""Loading a bundle for serving: reuse the open encoder and tokenizer, refuse bad ladders and,
on a reload, a ladder whose tier names differ from the served one."""

from __future__ import annotations

import logging
from pathlib import Path

from router_model.artifact import read_bundle
from router_model.encoder import EncoderConfig, SentenceEncoder
from router_model.errors import ArtifactMismatch, InvalidData
from router_model.router import ComplexityRouter
from service.shared.errors import TiersChanged

logger = logging.getLogger(__name__)


def load_router(
    path: Path,
    *,
    encoder_threads: int = 0,
    previous: ComplexityRouter | None = None,
    kind: type[ComplexityRouter] = ComplexityRouter,
) -> ComplexityRouter:
    """Load a bundle as a ``kind``, reusing ``previous``'s tokenizer and open encoder if given.

    A reload (``previous`` given) must keep ``previous``'s tier names in the same order: clients
    such as a gateway using this router remotely check the ladder once, at their start, and would
    then meet tier names they do not know. Prices and upstream models may change.

    Raises:
        TiersChanged: when ``previous`` is given and the bundle's tier names differ from its.
        ArtifactMismatch: when the bundle is missing, corrupt, built for other feature code, or
            its tier ladder is invalid.
    """
    manifest, _ = read_bundle(path)
    if previous is not None:
        # checked before an encoder is loaded for a bundle that would be refused anyway
        _check_same_tiers(path, [t.name for t in manifest.tiers], previous)
    encoder = previous.featurizer.encoder if previous is not None else None
    tokenizer = previous.featurizer.tokenizer if previous is not None else None
    if manifest.feature_set == "full" and encoder is None:
        encoder = SentenceEncoder.load(
            config=EncoderConfig(intra_op_threads=encoder_threads), tokenizer=tokenizer
        )
    router = kind.from_artifact(path, encoder=encoder, tokenizer=tokenizer)
    try:
        router.manifest.tier_ladder()
    except InvalidData as exc:
        raise ArtifactMismatch(f"{path}: {exc}") from exc
    # built here (off the event loop on reload, ~20 ms) rather than by the first request
    if router.featurizer.word_piece is None:
        logger.warning("%s: no Python twin of this tokenizer; every prompt goes to Rust", path)
    return router


def _check_same_tiers(path: Path, names: list[str], previous: ComplexityRouter) -> None:
    served = [t.name for t in previous.tiers]
    if names != served:
        raise TiersChanged(
            f"{path}: its tiers {names} differ from the served tiers {served}; "
            "changing tiers needs a restart (the served bundle is kept)"
        )
