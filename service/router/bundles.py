"""Loading a bundle for serving: reuse the open encoder and tokenizer, refuse bad ladders and,
on a reload, a ladder whose tier names differ from the served one; where an admin reload may
load from (``allowed_bundle``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from router_model.artifact import MANIFEST_FILE, MODEL_FILE, read_bundle
from router_model.encoder import EncoderConfig, SentenceEncoder
from router_model.errors import ArtifactMismatch, InvalidData
from router_model.router import ComplexityRouter
from service.shared.errors import BundleNotAllowed, TiersChanged

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


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """Inode, mtime and size of a file (None when it cannot be read): a watched file's change."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def allowed_bundle(requested: str, roots: Sequence[Path]) -> Path:
    """The real path of a bundle an admin asked to load, if it lies under one of ``roots``.

    Symlinks are resolved first, for the directory and for each file the loader reads, so no
    link leads out of the roots. The message names the path asked for, never a file's content.

    Raises:
        BundleNotAllowed: when the path (or a file in it) resolves outside every root.
        ArtifactMismatch: when it cannot be resolved at all (a NUL byte, a symlink loop).
    """
    try:
        real = Path(requested).resolve()
        files = [(real / name).resolve() for name in (MANIFEST_FILE, MODEL_FILE)]
        bases = [root.resolve() for root in roots]
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop
        raise ArtifactMismatch(f"{requested[:200]!r}: not a model bundle (not a usable path: "
                               f"{type(exc).__name__})") from exc
    for base in bases:
        if all(p.is_relative_to(base) for p in (real, *files)):
            return real
    raise BundleNotAllowed(
        f"{requested[:200]!r} is not under a configured bundle root "
        "(TIERWISE_SERVICE__BUNDLE_ROOTS), or a symlink in it leads out of one")
