"""Loading a bundle for serving: reuse the open encoder and tokenizer, refuse bad ladders."""

from __future__ import annotations

import logging
from pathlib import Path

from router_model.artifact import read_bundle
from router_model.encoder import EncoderConfig, SentenceEncoder
from router_model.errors import ArtifactMismatch, InvalidData
from router_model.router import ComplexityRouter

logger = logging.getLogger(__name__)


def load_router(
    path: Path, *, encoder_threads: int = 0, previous: ComplexityRouter | None = None
) -> ComplexityRouter:
    """Load a bundle, reusing ``previous``'s tokenizer and open encoder when there is one.

    Raises:
        ArtifactMismatch: when the bundle is missing, corrupt, built for other feature code, or
            its tier ladder is invalid.
    """
    manifest, _ = read_bundle(path)
    encoder = previous.featurizer.encoder if previous is not None else None
    tokenizer = previous.featurizer.tokenizer if previous is not None else None
    if manifest.feature_set == "full" and encoder is None:
        encoder = SentenceEncoder.load(
            config=EncoderConfig(intra_op_threads=encoder_threads), tokenizer=tokenizer
        )
    router = ComplexityRouter.from_artifact(path, encoder=encoder, tokenizer=tokenizer)
    try:
        router.manifest.tier_ladder()
    except InvalidData as exc:
        raise ArtifactMismatch(f"{path}: {exc}") from exc
    # built here (off the event loop on reload, ~20 ms) rather than by the first request
    if router.featurizer.word_piece is None:
        logger.warning("%s: no Python twin of this tokenizer; every prompt goes to Rust", path)
    return router
