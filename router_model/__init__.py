"""What training and serving share: features, the bundle format, the decision policy, settings."""

from router_model.artifact import Manifest, read_bundle, write_bundle
from router_model.errors import (
    ArtifactMismatch,
    InvalidData,
    InvalidPrompt,
    ModelNotReady,
    NotFound,
    Overloaded,
    PromptTooLarge,
    RouterError,
    UpstreamError,
)
from router_model.features import (
    FEATURE_VERSION,
    Featurizer,
    extract_features,
    feature_names,
    featurize,
)
from router_model.policy import Policy, ResolvedPolicy, choose_tiers
from router_model.router import ComplexityRouter, RouteDecision
from router_model.settings import Settings
from router_model.tiers import Tier, load_tiers

__all__ = [
    "ArtifactMismatch",
    "ComplexityRouter",
    "FEATURE_VERSION",
    "Featurizer",
    "InvalidData",
    "InvalidPrompt",
    "Manifest",
    "ModelNotReady",
    "NotFound",
    "Overloaded",
    "Policy",
    "PromptTooLarge",
    "ResolvedPolicy",
    "RouteDecision",
    "RouterError",
    "Settings",
    "Tier",
    "UpstreamError",
    "choose_tiers",
    "extract_features",
    "feature_names",
    "featurize",
    "load_tiers",
    "read_bundle",
    "write_bundle",
]
