import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sovereign_sdk import (
    DeltaError,
    SovereignConfigError,
    canonical_json,
    load_private_key,
    public_key_field,
    serialize_signed_manifest,
    sign_manifest,
    verify_manifest_signature,
)
from sovereign_sdk.manifest import SIGNING_CONTEXT, build_manifest, check_manifest


def manifest_for(key, **changes):
    fields = dict(
        namespace="default", run="r", round=0, region="berlin", learner="learner-0", key=key, base_model="sha256:" + "0" * 64,
        encoding="bf16", tokens=10, inner_steps=2, size=64,
        tensors=[{"name": "w", "dtype": "BF16", "shape": [2, 3], "sha256": "f" * 64}],
    )  # fmt: skip
    fields.update(changes)
    return build_manifest(**fields)


def test_sign_and_verify(key_file):
    path, key = key_file
    loaded = load_private_key(path)
    m = manifest_for(loaded)
    assert m["learnerKey"] == public_key_field(key) and len(m["learnerKey"]) == len("ed25519:") + 43
    signed = sign_manifest(m, loaded)
    wire = serialize_signed_manifest(signed)
    assert wire == canonical_json(json.loads(wire))
    assert verify_manifest_signature(json.loads(wire), key.public_key()) == m
    # Exactly the bytes deltas/manifest.ts signs.
    key.public_key().verify(
        base64.urlsafe_b64decode(signed["signature"] + "=="), (SIGNING_CONTEXT + canonical_json(m)).encode()
    )


def test_altered_or_foreign_manifests_are_refused(key_file):
    _, key = key_file
    signed = sign_manifest(manifest_for(key), key)
    altered = {**signed, "manifest": {**signed["manifest"], "tokens": 11}}
    with pytest.raises(DeltaError, match="^ManifestSignatureInvalid"):
        verify_manifest_signature(altered, key.public_key())
    with pytest.raises(DeltaError, match="^ManifestKeyMismatch"):
        verify_manifest_signature(signed, Ed25519PrivateKey.generate().public_key())


@pytest.mark.parametrize(
    "changes",
    [{"run": "Run"}, {"tokens": 0}, {"inner_steps": True}, {"base_model": "sha256:xyz"}, {"encoding": "int4"},
     {"created_at": "2026-01-01 00:00:00"}, {"size": 7}],
)  # fmt: skip
def test_fields_the_hub_would_refuse_are_refused_before_signing(key_file, changes):
    with pytest.raises(DeltaError, match="^ManifestFieldInvalid"):
        manifest_for(key_file[1], **changes)


def test_canonical_json_sorts_keys_by_utf16_code_units():
    # U+E000 sorts after U+1F600 by code point but before it by UTF-16 code unit (0xD83D).
    assert (
        canonical_json({"\ue000": 1, "\U0001f600": 2, "a": [1, "\n\u0001"]})
        == '{"a":[1,"\\n\\u0001"],"\U0001f600":2,"\ue000":1}'
    )
    for bad in (1.5, True, None, 2**53, "\ud800"):
        with pytest.raises(DeltaError, match="^ManifestFieldInvalid"):
            canonical_json(bad)


def test_keys_that_are_not_ed25519_or_not_there_are_named(tmp_path):
    ec = tmp_path / "ec.pem"
    ec.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(
        SovereignConfigError,
        match="^KeyInvalid: .*holds a (EC|EllipticCurve) key; learners sign their manifests with Ed25519",
    ):
        load_private_key(str(ec))
    with pytest.raises(SovereignConfigError, match="^KeyInvalid: cannot read the learner key"):
        load_private_key(str(tmp_path / "absent.pem"))
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(SovereignConfigError, match="^KeyInvalid: .* is not an unencrypted PEM private key"):
        load_private_key(str(tmp_path / "junk.pem"))


def test_timing_fields_are_optional_whole_milliseconds(key_file):
    _, key = key_file
    plain = manifest_for(key)
    assert "trainMs" not in plain and "waitMs" not in plain
    timed = manifest_for(key, train_ms=1500, wait_ms=0)
    assert (timed["trainMs"], timed["waitMs"]) == (1500, 0)
    verify_manifest_signature(sign_manifest(timed, key), key.public_key())
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(DeltaError) as err:
            manifest_for(key, wait_ms=bad)
        assert err.value.reason == "ManifestFieldInvalid"
    with pytest.raises(DeltaError):
        check_manifest({**plain, "stallMs": 3})
