"""Test helper: runs one SDK operation described by JSON on stdin, prints JSON on stdout.
Arrays travel as base64 of their little-endian bytes."""

import base64
import json
import sys

import numpy as np

import sovereign_sdk as sdk
from sovereign_sdk import encodings
from sovereign_sdk.errors import SovereignError
from sovereign_sdk.manifest import build_manifest


def b64(data) -> str:
    return base64.b64encode(bytes(data)).decode()


def unb64(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype).copy()


def op_encode(req):
    out = []
    for case in req["cases"]:
        values = unb64(case["values"], "<f4")
        shape = tuple(case["shape"])
        try:
            enc = sdk.encode_values(case["name"], values.reshape(shape), shape, sdk.parse_encoding(case["encoding"]))
        except SovereignError as err:
            out.append({"error": err.reason})
            continue
        item = {"dtype": enc.dtype, "payload": b64(enc.payload.tobytes())}
        if enc.scales is not None:
            item["scales"] = b64(enc.scales.tobytes())
        out.append(item)
    return out


def op_bits(req):
    bits = unb64(req["bits"], "<u4")
    return {
        "bf16": b64(encodings.f32_to_bf16_bits(bits).tobytes()),
        "f16": b64(encodings.f32_to_f16_bits(bits).tobytes()),
    }


def op_write_signed(req):
    if "jobs" in req:
        return [op_write_signed(job) for job in req["jobs"]]
    tensors = [
        sdk.DeltaTensor(t["name"], tuple(t["shape"]), unb64(t["values"], "<f4").reshape(tuple(t["shape"])))
        for t in req["tensors"]
    ]
    written = sdk.write_delta(req["out"], tensors, req["encoding"])
    key = sdk.load_private_key(req["key"])
    m = req["manifest"]
    manifest = build_manifest(
        namespace=m["namespace"],
        run=m["run"],
        round=m["round"],
        region=m["region"],
        learner=m["learner"],
        key=key,
        base_model=m["baseModel"],
        encoding=written.encoding,
        tokens=m["tokens"],
        inner_steps=m["innerSteps"],
        size=written.size,
        tensors=written.tensors,
        created_at=m.get("createdAt"),
    )
    signed = sdk.sign_manifest(manifest, key)
    digest = sdk.manifest_digest(manifest)
    return {"signed": sdk.serialize_signed_manifest(signed), "size": written.size, "digest": digest}


def op_read(req):
    from cryptography.hazmat.primitives import serialization

    contents = sdk.read_delta(req["path"])
    result = {
        "encoding": contents.encoding,
        "size": contents.size,
        "values": {name: b64(v.astype("<f4").tobytes()) for name, v in contents.values.items()},
        "tensors": contents.tensors,
    }
    if "signed" in req:
        public = serialization.load_pem_public_key(req["publicKey"].encode())
        signed = json.loads(req["signed"])
        manifest = sdk.verify_manifest_signature(signed, public)
        result["verified"] = manifest["tensors"] == contents.tensors and manifest["size"] == contents.size
        result["canonical"] = sdk.serialize_signed_manifest(signed)
    return result


def op_canonical(req):
    out = []
    for value in req["values"]:
        try:
            out.append(sdk.canonical_json(value))
        except SovereignError as err:
            out.append({"error": err.reason})
    return out


OPS = {
    "encode": op_encode,
    "bits": op_bits,
    "write-signed": op_write_signed,
    "read": op_read,
    "canonical": op_canonical,
}

if __name__ == "__main__":
    request = json.load(sys.stdin)
    json.dump(OPS[request["op"]](request), sys.stdout)
