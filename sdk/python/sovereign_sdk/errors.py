"""Errors a learner's code can act on.

Every error carries a PascalCase reason code (what to grep for in logs) and a message that
says what to do next. ``str(err)`` is ``"<Reason>: <message>"``, as in the TypeScript side
(deltas/errors.ts, transport/errors.ts); reasons shared with it keep its names.
"""

from __future__ import annotations

from dataclasses import dataclass


class SovereignError(Exception):
    """Base class; ``err.reason`` is the code, ``err.message`` the advice."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class SovereignConfigError(SovereignError):
    """The pod's environment or key is unusable: ``ConfigMissing``, ``ConfigInvalid``, ``KeyInvalid``."""


class ModelError(SovereignError):
    """The global model: ``ModelTimeout``, ``ModelDigestMismatch``, ``ModelInvalid``, ``ModelNotFetched``."""


class ModelMismatchError(ModelError):
    """The trained weights do not have the global model's tensor names, shapes or a float dtype.

    ``missing``: names in the global model the weights lack; ``unexpected``: names the global
    model does not have; ``different``: human-readable shape/dtype differences.
    """

    def __init__(
        self,
        message: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        different: list[str] | None = None,
    ) -> None:
        super().__init__("ModelMismatch", message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.different = different or []


class DeltaError(SovereignError):
    """Writing a delta failed: ``EncodingUnknown``, ``EncodingNonFinite``, ``DeltaNameInvalid``,
    ``DeltaLayoutInvalid``, ``ManifestFieldInvalid``, ``ManifestSignatureInvalid``,
    ``ManifestKeyMismatch``, ``ManifestDigestMismatch``, ``ManifestHeaderMismatch``."""


class TransportError(SovereignError):
    """NATS: ``NatsUnavailable``, ``DeltaBucketMissing``, ``PublishFailed``, ``ModelFetchFailed``."""


@dataclass(frozen=True)
class Refusal:
    """What the hub publishes when it refuses a delta (see docs/sdk.md, "Refusals")."""

    object: str
    """The delta's object name, ``<namespace>/<run>/round-<n>/<learner>``."""
    reason: str
    """The hub's reason code, e.g. ``ManifestDigestMismatch`` or ``ManifestKeyMismatch``."""
    message: str
    round: int


class DeltaRefused(SovereignError):
    """The hub refused a delta this learner published. ``err.refusal.reason`` is the hub's code."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(
            "DeltaRefused",
            f"the hub refused delta '{refusal.object}' of round {refusal.round}: {refusal.reason}: {refusal.message}",
        )
        self.refusal = refusal
