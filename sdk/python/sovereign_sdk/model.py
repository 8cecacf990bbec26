"""Global models, as the hub publishes them (transport/models.ts): bucket
``model-<namespace>_<run with . → _>`` in the hub's domain, mirrored into each placed region's
domain by its member; object ``round-<n>``, a plain safetensors file of the fp32 weights; object
metadata ``sovereign.model-digest`` = ``sha256:<hex>`` of its bytes, written just after them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from nats.js import JetStreamContext
from safetensors import safe_open

from .deltafile import read_header
from .errors import DeltaError, ModelError
from .objects import ObjectLookup, object_info, read_object

MODEL_DIGEST_METADATA = "sovereign.model-digest"


def run_model_bucket(namespace: str, run: str) -> str:
    return f"model-{namespace}_{run.replace('.', '_')}"


def model_object_name(round_: int) -> str:
    return f"round-{round_}"


@dataclass(frozen=True)
class GlobalModel(Mapping[str, np.ndarray]):
    """A round's global model: a mapping of tensor name → fp32 numpy array (in file order),
    plus where it came from. The arrays are the caller's own copies."""

    round: int
    digest: str
    """``sha256:<hex>`` of the model file, verified: the delta's ``baseModel``."""
    size: int
    tensors: dict[str, np.ndarray] = field(repr=False)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


@dataclass
class BaseModel:
    """The verified model file a round's delta is computed against."""

    round: int
    digest: str
    path: str
    size: int
    shapes: dict[str, tuple[int, ...]]
    """In file order."""

    def load(self) -> dict[str, np.ndarray]:
        with safe_open(self.path, framework="numpy") as f:
            return {name: f.get_tensor(name) for name in self.shapes}


async def wait_for_model(
    js: JetStreamContext, namespace: str, run: str, round_: int, timeout: float | None, poll: float
) -> dict:
    """The meta of round `round_`'s model once it and its digest are in the region's mirror."""
    bucket = run_model_bucket(namespace, run)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        lookup = await object_info(js, bucket, model_object_name(round_))
        if lookup.state == "ok" and _digest_of(lookup) is not None:
            return lookup.info  # type: ignore[return-value]
        if deadline is not None and time.monotonic() >= deadline:
            raise ModelError("ModelTimeout", _waiting_for(lookup, namespace, run, round_, timeout or 0))
        await asyncio.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))


def _digest_of(lookup: ObjectLookup) -> str | None:
    metadata = (lookup.info or {}).get("metadata") or {}
    digest = metadata.get(MODEL_DIGEST_METADATA) if isinstance(metadata, dict) else None
    return digest if isinstance(digest, str) else None


def _waiting_for(lookup: ObjectLookup, namespace: str, run: str, round_: int, timeout: float) -> str:
    if lookup.state == "bucket-missing":
        stream = f"OBJ_{run_model_bucket(namespace, run)}"
        why = (
            f"this region holds no mirror of {namespace}/{run}'s models (stream {stream}); "
            "the member operator creates it once the region is placed in the run — check the run's placement"
        )
    elif lookup.state == "object-missing":
        why = "the hub has not published it yet (or the mirror lags): wait longer, or check the run's status at the hub"
    else:
        why = "it is there but its digest is not recorded yet: the hub writes it just after the bytes"
    return f"no global model for round {round_} of {namespace}/{run} after {timeout:g}s: {why}"


async def fetch_model(
    js: JetStreamContext, namespace: str, run: str, round_: int, info: dict, directory: str
) -> BaseModel:
    """Downloads the model into `directory`, verifying its bytes against the recorded digest."""
    digest = ((info.get("metadata") or {}).get(MODEL_DIGEST_METADATA)) or ""
    path = os.path.join(directory, f"model-round-{round_}.safetensors")
    partial = path + ".part"
    with open(partial, "wb") as out:
        actual = await read_object(js, run_model_bucket(namespace, run), info, out)
    if f"sha256:{actual}" != digest:
        os.unlink(partial)
        raise ModelError(
            "ModelDigestMismatch",
            f"the global model of round {round_} hashes to sha256:{actual}, not the recorded {digest}; it was "
            "altered in storage or transit — do not train on it; report it to the run's operators",
        )
    os.replace(partial, path)
    try:
        with open(path, "rb") as f:
            header = read_header(f)
    except DeltaError as err:
        raise ModelError(
            "ModelInvalid", f"the global model of round {round_} is not safetensors: {err.message}"
        ) from None
    not_fp32 = [t.name for t in header.tensors if t.dtype != "F32"]
    if not_fp32:
        raise ModelError(
            "ModelInvalid",
            f"the global model of round {round_} has non-fp32 tensors ({', '.join(not_fp32[:5])}); the hub publishes "
            "fp32 weights — report it to the run's operators",
        )
    return BaseModel(round_, digest, path, header.total_bytes, {t.name: t.shape for t in header.tensors})
