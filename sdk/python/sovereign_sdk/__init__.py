"""Sovereign trainer SDK: what a learner pod's training code calls to fetch the round's global
model from its region and publish its signed, encoded delta. See docs/sdk.md."""

from .config import LearnerConfig
from .delta import check_weights, delta_of, to_numpy
from .deltafile import DeltaContents, DeltaTensor, WrittenDelta, read_delta, write_delta
from .encodings import DEFAULT_INT4_BLOCK, DEFAULT_INT8_BLOCK, decode_values, encode_values, parse_encoding
from .errors import (
    DeltaError,
    DeltaRefused,
    ModelError,
    ModelMismatchError,
    Refusal,
    SovereignConfigError,
    SovereignError,
    TransportError,
)
from .learner import Learner, PublishedDelta
from .manifest import (
    canonical_json,
    load_private_key,
    manifest_digest,
    public_key_field,
    serialize_signed_manifest,
    sign_manifest,
    verify_manifest_signature,
)
from .model import GlobalModel
from .overlap import Overlap

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_INT4_BLOCK",
    "DEFAULT_INT8_BLOCK",
    "DeltaContents",
    "DeltaError",
    "DeltaRefused",
    "DeltaTensor",
    "GlobalModel",
    "Learner",
    "LearnerConfig",
    "ModelError",
    "ModelMismatchError",
    "Overlap",
    "PublishedDelta",
    "Refusal",
    "SovereignConfigError",
    "SovereignError",
    "TransportError",
    "WrittenDelta",
    "canonical_json",
    "check_weights",
    "decode_values",
    "delta_of",
    "encode_values",
    "load_private_key",
    "manifest_digest",
    "parse_encoding",
    "public_key_field",
    "read_delta",
    "serialize_signed_manifest",
    "sign_manifest",
    "to_numpy",
    "verify_manifest_signature",
    "write_delta",
]
