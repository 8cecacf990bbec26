"""The signed manifest of a delta, exactly as deltas/manifest.ts builds and verifies it.

Signed bytes: ``SIGNING_CONTEXT`` + canonical JSON (RFC 8785 restricted to strings, safe
integers, lists and objects; keys sorted by UTF-16 code units). Signature: Ed25519,
base64url without padding. Wire form: canonical JSON of ``{"manifest", "signature"}``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .config import DNS_LABEL, DNS_SUBDOMAIN
from .encodings import parse_encoding
from .errors import DeltaError, SovereignConfigError, SovereignError

MANIFEST_VERSION = 1
SIGNING_CONTEXT = "sovereign-delta-manifest/1\n"
KEY_PREFIX = "ed25519:"
MAX_SAFE_INTEGER = 2**53 - 1


def _field_invalid(message: str) -> DeltaError:
    return DeltaError("ManifestFieldInvalid", f"{message}; the learner must send a valid manifest")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_string(value: str) -> str:
    """As JSON.stringify writes a well-formed string: only quote, backslash and C0 controls escaped."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise _field_invalid("a string holds a lone surrogate")
    out = []
    for c in value:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be")


def canonical_json(value: object) -> str:
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, bool) or value is None:
        raise _field_invalid(f"{value!r} cannot appear in a manifest")
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise _field_invalid(f"{value} is not a safe integer")
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise _field_invalid(f"key {k!r} is not a string")
        keys = sorted(value, key=_utf16_key)
        return "{" + ",".join(f"{_json_string(k)}:{canonical_json(value[k])}" for k in keys) + "}"
    raise _field_invalid(f"{type(value).__name__} cannot appear in a manifest")


def manifest_digest(manifest: dict) -> str:
    """``sha256:<hex>`` of the canonical manifest: its identity at the hub."""
    return "sha256:" + hashlib.sha256(canonical_json(manifest).encode("utf-8")).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# ---------------------------------------------------------------------------------------------
# Keys


def load_private_key(path: str) -> Ed25519PrivateKey:
    """The learner's Ed25519 private key from a PEM file (PKCS#8, unencrypted)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise SovereignConfigError(
            "KeyInvalid",
            f"cannot read the learner key {path} ({err.strerror}); SOVEREIGN_LEARNER_KEY must name the PEM "
            "file the attestation agent wrote for this pod",
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise SovereignConfigError("KeyInvalid", f"{path} is not an unencrypted PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        kind = type(key).__name__.removesuffix("PrivateKey").removeprefix("_")
        raise SovereignConfigError(
            "KeyInvalid", f"{path} holds a {kind} key; learners sign their manifests with Ed25519"
        )
    return key


def public_key_field(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """``ed25519:`` + base64url of the 32 raw public key bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + b64url(raw)


def public_key_from_field(value: str) -> Ed25519PublicKey:
    if not isinstance(value, str) or not re.fullmatch(r"ed25519:[A-Za-z0-9_-]{43}", value):
        raise _field_invalid("learnerKey must be ed25519:<base64url of 32 bytes>")
    return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(value[len(KEY_PREFIX) :] + "="))


# ---------------------------------------------------------------------------------------------
# Building, checking, signing


def rfc3339_now() -> str:
    """UTC now as RFC 3339 with milliseconds and ``Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _integer(where: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value > MAX_SAFE_INTEGER:
        raise _field_invalid(f"{where} must be an integer ≥ {minimum}, got {value!r}")
    return value


def check_manifest(m: dict) -> dict:
    """The checks of deltas/manifest.ts checkManifest, so that a bad field fails here, not at the hub."""
    fields = {
        "version", "namespace", "run", "round", "region", "learner", "learnerKey", "baseModel", "encoding",
        "tokens", "innerSteps", "createdAt", "size", "tensors",
    }  # fmt: skip
    optional = {"trainMs", "waitMs"}
    if not isinstance(m, dict) or set(m) - optional != fields:
        raise _field_invalid(
            f"the manifest must have exactly the fields {sorted(fields)}, and may have {sorted(optional)}"
        )
    if m["version"] != MANIFEST_VERSION or isinstance(m["version"], bool):
        raise _field_invalid(f"version must be {MANIFEST_VERSION}")
    names = (("namespace", DNS_LABEL, 63), ("run", DNS_LABEL, 63), ("region", DNS_LABEL, 63))
    for key, pattern, limit in (*names, ("learner", DNS_SUBDOMAIN, 253)):
        if not isinstance(m[key], str) or len(m[key]) > limit or not pattern.match(m[key]):
            raise _field_invalid(f"{key} is malformed: {m[key]!r}")
    _integer("round", m["round"], 0)
    public_key_from_field(m["learnerKey"])
    if not isinstance(m["baseModel"], str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", m["baseModel"]):
        raise _field_invalid("baseModel must be sha256:<64 hex>")
    try:
        parse_encoding(m["encoding"])
    except (SovereignError, TypeError):
        raise _field_invalid(f"encoding {m['encoding']!r} is unknown") from None
    _integer("tokens", m["tokens"], 1)
    _integer("innerSteps", m["innerSteps"], 1)
    created = m["createdAt"]
    if not isinstance(created, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z", created):
        raise _field_invalid(f"createdAt {created!r} is not RFC 3339 UTC")
    _integer("size", m["size"], 8)
    for key in sorted(optional & set(m)):
        _integer(key, m[key], 0)
    if not isinstance(m["tensors"], list):
        raise _field_invalid("tensors must be a list")
    names = set()
    for i, t in enumerate(m["tensors"]):
        if not isinstance(t, dict) or set(t) != {"name", "dtype", "shape", "sha256"}:
            raise _field_invalid(f"tensors[{i}] must have exactly name, dtype, shape, sha256")
        if not isinstance(t["name"], str) or not t["name"] or t["name"] in names:
            raise _field_invalid(f"tensors[{i}].name is empty or repeated")
        names.add(t["name"])
        for d in t["shape"]:
            _integer(f"tensors[{i}].shape", d, 0)
        if not isinstance(t["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", t["sha256"]):
            raise _field_invalid(f"tensors[{i}].sha256 is malformed")
    return m


def build_manifest(
    *,
    namespace: str,
    run: str,
    round: int,
    region: str,
    learner: str,
    key: Ed25519PrivateKey,
    base_model: str,
    encoding: str,
    tokens: int,
    inner_steps: int,
    size: int,
    tensors: list[dict],
    created_at: str | None = None,
    train_ms: int | None = None,
    wait_ms: int | None = None,
) -> dict:
    """`train_ms`, `wait_ms`: optional, what the learner spent training and waiting since its
    previous delta; the hub counts them per region (goodput) and nothing else."""
    timing = {k: v for k, v in (("trainMs", train_ms), ("waitMs", wait_ms)) if v is not None}
    return check_manifest(
        {
            **timing,
            "version": MANIFEST_VERSION,
            "namespace": namespace,
            "run": run,
            "round": round,
            "region": region,
            "learner": learner,
            "learnerKey": public_key_field(key),
            "baseModel": base_model,
            "encoding": encoding,
            "tokens": tokens,
            "innerSteps": inner_steps,
            "createdAt": created_at or rfc3339_now(),
            "size": size,
            "tensors": tensors,
        }
    )


def _signed_bytes(manifest: dict) -> bytes:
    return (SIGNING_CONTEXT + canonical_json(manifest)).encode("utf-8")


def sign_manifest(manifest: dict, key: Ed25519PrivateKey) -> dict:
    """``{"manifest", "signature"}``; the manifest must name this key."""
    check_manifest(manifest)
    if manifest["learnerKey"] != public_key_field(key):
        raise DeltaError("ManifestKeyMismatch", "the manifest names another key than the one signing it")
    return {"manifest": manifest, "signature": b64url(key.sign(_signed_bytes(manifest)))}


def serialize_signed_manifest(signed: dict) -> str:
    """The signed manifest as sent in the object's ``sovereign.manifest`` metadata."""
    return canonical_json(signed)


def verify_manifest_signature(signed: dict, trusted: Ed25519PublicKey) -> dict:
    """As the hub checks it: fields, that it names `trusted`, and the signature."""
    if not isinstance(signed, dict) or set(signed) != {"manifest", "signature"}:
        raise _field_invalid("a signed manifest is exactly {manifest, signature}")
    manifest = check_manifest(signed["manifest"])
    if manifest["learnerKey"] != public_key_field(trusted):
        raise DeltaError("ManifestKeyMismatch", f"the manifest names key {manifest['learnerKey']}, not the trusted one")
    signature = signed["signature"]
    if not isinstance(signature, str) or not re.fullmatch(r"[A-Za-z0-9_-]{86}", signature):
        raise DeltaError("ManifestSignatureInvalid", "the signature is not 64 bytes of base64url")
    try:
        trusted.verify(base64.urlsafe_b64decode(signature + "=="), _signed_bytes(manifest))
    except InvalidSignature:
        raise DeltaError("ManifestSignatureInvalid", "the signature does not match the manifest") from None
    return manifest
