"""The learner's side of a round:

async with Learner.from_env() as learner:
    while True:
        weights = await learner.global_model()
        new_weights = train(weights)                       # H inner steps on local data
        await learner.publish_delta(new_weights, tokens=..., inner_steps=...)
        if not await learner.next_round():
            break
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
from safetensors import safe_open

from .config import LearnerConfig
from .delta import as_state, check_weights, delta_of
from .deltafile import DeltaTensor, write_delta
from .errors import DeltaRefused, ModelError, Refusal, TransportError
from .manifest import build_manifest, load_private_key, manifest_digest, serialize_signed_manifest, sign_manifest
from .model import (
    MODEL_DIGEST_METADATA,
    BaseModel,
    GlobalModel,
    fetch_model,
    model_object_name,
    run_model_bucket,
    wait_for_model,
)
from .objects import DEFAULT_CHUNK_BYTES, object_info, put_object

log = logging.getLogger("sovereign_sdk")

MANIFEST_METADATA = "sovereign.manifest"


def region_delta_bucket(region: str) -> str:
    return f"deltas-{region}"


def delta_object_name(namespace: str, run: str, round_: int, learner: str) -> str:
    return f"{namespace}/{run}/round-{round_}/{learner}"


@dataclass(frozen=True)
class PublishedDelta:
    object: str
    """``<namespace>/<run>/round-<n>/<learner>`` in bucket ``deltas-<region>``."""
    round: int
    size: int
    encoding: str
    manifest_digest: str
    """``sha256:<hex>`` of the canonical manifest: the hub's identity of this delta."""
    signed_manifest: dict


class Learner:
    """One learner pod's connection to its region. Use ``async with``."""

    def __init__(self, config: LearnerConfig, *, poll_interval: float = 1.0, connect_attempts: int = 10) -> None:
        """`poll_interval`: seconds between looks for a model that is not there yet.
        `connect_attempts`: tries (2 s apart) of the first connection; once connected, the
        learner reconnects for as long as it runs."""
        self.config = config
        # The round being trained (1 … rounds); the pod may start before the first one opens.
        self.round = max(1, config.round)
        self.poll_interval = poll_interval
        self.connect_attempts = connect_attempts
        self._key = load_private_key(config.key_path)
        self._nc: Any = None
        self._js: Any = None
        self._work_dir = config.work_dir
        self._own_work_dir = False
        self._base: BaseModel | None = None
        self._published: set[str] = set()
        self._refusals: list[Refusal] = []
        self._raised: set[int] = set()
        self._refusal_arrived = asyncio.Event()
        # Timing since the previous delta (or the connection), signed into the next manifest
        # for the hub's goodput panel: seconds waiting for a model, and spent fetching it.
        self._interval_start: float | None = None
        self._waited = 0.0
        self._overhead = 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> Learner:
        """Configuration from the pod's environment (``ConfigMissing``/``ConfigInvalid``/``KeyInvalid``)."""
        return cls(LearnerConfig.from_env(env), **options)

    # -----------------------------------------------------------------------------------------
    # Connection

    async def connect(self) -> None:
        c = self.config
        options: dict[str, Any] = {
            "servers": list(c.nats_servers),
            "name": f"sovereign-learner-{c.learner}",
            "connect_timeout": 10,
            "reconnect_time_wait": 2,
            "max_reconnect_attempts": self.connect_attempts,
            "error_cb": self._on_error,
        }
        if c.nats_user is not None:
            options.update(user=c.nats_user, password=c.nats_password)
        if c.nats_creds is not None:
            options["user_credentials"] = c.nats_creds
        try:
            self._nc = await nats.connect(**options)
        except Exception as err:  # nats-py raises several unrelated types here
            raise TransportError(
                "NatsUnavailable",
                f"cannot connect to {', '.join(c.nats_servers)} as the learner ({type(err).__name__}: {err}); "
                "check SOVEREIGN_NATS_URL and the learner's NATS credential",
            ) from None
        # nats-py applies one attempt limit to the first connection and to reconnects: bounded
        # above so that a wrong URL or credential fails the pod, unbounded from now on so that a
        # restart of the region's server during hours of training is ridden out.
        self._nc.options["max_reconnect_attempts"] = -1
        self._js = self._nc.jetstream(domain=c.jetstream_domain) if c.jetstream_domain else self._nc.jetstream()
        if self._interval_start is None:
            self._interval_start = time.monotonic()
        await self._nc.subscribe(c.refusal_subject, cb=self._on_refusal)
        await self._nc.flush()
        if self._work_dir is None:
            self._work_dir = tempfile.mkdtemp(prefix="sovereign-")
            self._own_work_dir = True
        else:
            os.makedirs(self._work_dir, exist_ok=True)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except Exception as err:  # closing anyway: nothing of the learner's is in flight
                log.warning("closing the NATS connection: %s", err)
                await self._nc.close()
        self._nc = None
        if self._own_work_dir and self._work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    async def __aenter__(self) -> Learner:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_error(self, err: Exception) -> None:
        log.warning("NATS: %s", err)

    def _connected(self) -> Any:
        if self._nc is None:
            raise TransportError("NatsUnavailable", "the learner is not connected; use `async with Learner.from_env()`")
        return self._js

    # -----------------------------------------------------------------------------------------
    # The global model

    async def global_model(self, timeout: float | None = None) -> GlobalModel:
        """The current round's global model, once it is in the region's mirror (``ModelTimeout``
        after `timeout` seconds; ``None`` waits as long as it takes). Verified against the digest
        the hub recorded (``ModelDigestMismatch``). Fetched once per round; each call returns
        fresh copies of the arrays."""
        js = self._connected()
        c = self.config
        # Round n trains on the aggregate of round n − 1 (round-0: the initial model).
        base_index = self.round - 1
        if self._base is None or self._base.round != base_index:
            started = time.monotonic()
            info = await wait_for_model(js, c.namespace, c.run, base_index, timeout, self.poll_interval)
            fetching = time.monotonic()
            self._waited += fetching - started
            previous = self._base
            self._base = await fetch_model(js, c.namespace, c.run, base_index, info, self._work_dir)
            self._overhead += time.monotonic() - fetching
            if previous is not None and os.path.exists(previous.path):
                os.unlink(previous.path)
            log.info("round %d: global model %s (%d bytes)", self.round, self._base.digest, self._base.size)
        base = self._base
        tensors = await asyncio.to_thread(base.load)
        return GlobalModel(round=self.round, digest=base.digest, size=base.size, tensors=tensors)

    # -----------------------------------------------------------------------------------------
    # Publishing

    async def publish_delta(
        self,
        weights: Any,
        *,
        tokens: int,
        inner_steps: int,
        refusal_wait: float = 0.0,
        train_seconds: float | None = None,
        wait_seconds: float | None = None,
    ) -> PublishedDelta:
        """Computes ``weights − global model`` of this round, encodes it with the run's encoding,
        signs its manifest and puts it into the region's delta bucket.

        `weights`: a mapping of name → numpy array or torch tensor (a state dict), or a module.
        `tokens`, `inner_steps`: what the delta was trained on, for the hub's weighting.
        `refusal_wait`: seconds to wait for a refusal from the hub (``DeltaRefused``); the
        default 0 returns at once, and ``next_round`` raises a refusal that arrives later.
        `train_seconds`, `wait_seconds`: what this delta cost since the previous one, for the
        hub's goodput panel (signed into the manifest as ``trainMs``/``waitMs``). By default the
        wait is the time spent in ``next_round`` and waiting inside ``global_model`` (plus what
        ``waited`` was told), and training is the rest of the interval, less model fetches.
        """
        self._connected()
        c = self.config
        base = self._base
        if base is None or base.round != self.round - 1:
            raise ModelError(
                "ModelNotFetched",
                f"no global model of round {self.round} was fetched; call global_model() before training",
            )
        arrays = check_weights(as_state(weights), base.shapes)
        path = os.path.join(self._work_dir, f"delta-round-{self.round}.safetensors")
        try:
            written = await asyncio.to_thread(self._write_delta, path, base, arrays)
            manifest = build_manifest(
                namespace=c.namespace,
                run=c.run,
                round=self.round,
                region=c.region,
                learner=c.learner,
                key=self._key,
                base_model=base.digest,
                encoding=written.encoding,
                tokens=tokens,
                inner_steps=inner_steps,
                size=written.size,
                tensors=written.tensors,
                **self._timing(train_seconds, wait_seconds),
            )
            signed = sign_manifest(manifest, self._key)
            name = delta_object_name(c.namespace, c.run, self.round, c.learner)
            chunk = min(DEFAULT_CHUNK_BYTES, int(self._nc.max_payload) or DEFAULT_CHUNK_BYTES)
            with open(path, "rb") as source:
                info = await put_object(
                    self._nc,
                    region_delta_bucket(c.region),
                    name,
                    source,
                    {MANIFEST_METADATA: serialize_signed_manifest(signed)},
                    chunk_bytes=chunk,
                )
        finally:
            if os.path.exists(path):
                os.unlink(path)
        if info["size"] != manifest["size"]:
            raise TransportError("PublishFailed", f"put {info['size']} bytes but signed {manifest['size']}")
        self._published.add(name)
        log.info("round %d: published %s (%d bytes, %s)", self.round, name, written.size, written.encoding)
        published = PublishedDelta(
            object=name,
            round=self.round,
            size=written.size,
            encoding=written.encoding,
            manifest_digest=manifest_digest(manifest),
            signed_manifest=signed,
        )
        self._interval_start = time.monotonic()
        self._waited = self._overhead = 0.0
        if refusal_wait > 0:
            await self._wait(time.monotonic() + refusal_wait)
        return published

    def waited(self, seconds: float) -> None:
        """Counts `seconds` the learner's own code spent waiting rather than training (e.g.
        stalled ahead of the global model with ``Overlap``) into the next delta's ``waitMs``."""
        if not seconds >= 0:
            raise ValueError(f"waited({seconds!r}): seconds must be ≥ 0")
        self._waited += seconds

    def _timing(self, train_seconds: float | None, wait_seconds: float | None) -> dict:
        elapsed = time.monotonic() - (self._interval_start or time.monotonic())
        wait = self._waited if wait_seconds is None else wait_seconds
        train = max(0.0, elapsed - wait - self._overhead) if train_seconds is None else train_seconds
        if not (train >= 0 and wait >= 0):
            raise ValueError("train_seconds and wait_seconds must be ≥ 0")
        return {"train_ms": round(train * 1000), "wait_ms": round(wait * 1000)}

    def _write_delta(self, path: str, base: BaseModel, arrays: dict):
        with safe_open(base.path, framework="numpy") as f:
            tensors = [
                DeltaTensor(name, shape, lambda name=name: delta_of(arrays[name], f.get_tensor(name)))
                for name, shape in base.shapes.items()
            ]
            return write_delta(path, tensors, self.config.encoding)

    # -----------------------------------------------------------------------------------------
    # Rounds and refusals

    async def next_round(self, timeout: float | None = None) -> bool:
        """Waits for a newer round's global model and moves to it; ``False`` when the run has no
        more rounds. A learner that fell behind moves to the newest round the region holds.
        Raises ``DeltaRefused`` if the hub refuses a delta of this learner meanwhile (call again
        to keep waiting), ``ModelTimeout`` after `timeout` seconds."""
        c = self.config
        if self.round >= c.rounds:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.monotonic()
        try:
            return await self._next_round(deadline, timeout)
        finally:
            self._waited += time.monotonic() - started

    async def _next_round(self, deadline: float | None, timeout: float | None) -> bool:
        c = self.config
        while True:
            if await self.poll_next_round():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                raise ModelError(
                    "ModelTimeout",
                    f"no global model for round {self.round + 1} of {c.namespace}/{c.run} after {timeout:g}s; "
                    "the hub publishes it when the round's quorum is in — wait longer or check the run's status",
                )
            wake = time.monotonic() + self.poll_interval
            await self._wait(wake if deadline is None else min(deadline, wake))

    @property
    def last_round(self) -> bool:
        """True while training the run's last round: no next round will come."""
        return self.round >= self.config.rounds

    async def poll_next_round(self) -> bool:
        """One look, without waiting: moves to the newest round whose base model the region
        holds and returns True, or returns False (not there yet, or no next round). For a
        learner that keeps training while the hub closes the round (``Overlap``). Raises
        ``DeltaRefused`` like ``next_round``."""
        js = self._connected()
        c = self.config
        self._raise_refusal()
        if self.round >= c.rounds:
            return False
        bucket = run_model_bucket(c.namespace, c.run)
        # The newest round whose base (the previous round's aggregate) is published.
        found = None
        candidate = self.round + 1
        while candidate <= c.rounds:
            lookup = await object_info(js, bucket, model_object_name(candidate - 1))
            if lookup.state != "ok" or not ((lookup.info or {}).get("metadata") or {}).get(MODEL_DIGEST_METADATA):
                break
            found = candidate
            candidate += 1
        if found is None:
            return False
        if found > self.round + 1:
            log.warning("skipping to round %d: rounds %d–%d went by", found, self.round + 1, found - 1)
        self.round = found
        return True

    async def refusals(self) -> AsyncIterator[Refusal]:
        """Every refusal of this learner's deltas the hub sends while connected, as it arrives."""
        seen = 0
        while True:
            while seen < len(self._refusals):
                yield self._refusals[seen]
                seen += 1
            self._refusal_arrived.clear()
            await self._refusal_arrived.wait()

    async def _wait(self, until: float) -> None:
        """Sleeps until `until`, waking early to raise a refusal of one of this learner's deltas."""
        while True:
            self._raise_refusal()
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._refusal_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refusal_arrived.wait(), remaining)

    def _raise_refusal(self) -> None:
        for i, refusal in enumerate(self._refusals):
            if i not in self._raised and refusal.object in self._published:
                self._raised.add(i)
                raise DeltaRefused(refusal)

    async def _on_refusal(self, msg: Any) -> None:
        c = self.config
        try:
            body = json.loads(msg.data)
            obj, reason, message = body["object"], body["reason"], body.get("message", "")
            if not all(isinstance(v, str) for v in (obj, reason, message)):
                raise ValueError("fields are not strings")
        except (ValueError, KeyError, TypeError) as err:
            log.warning("ignoring a malformed refusal on %s: %s", msg.subject, err)
            return
        m = re.fullmatch(r"([^/]+)/([^/]+)/round-(\d{1,15})/([^/]+)", obj)
        if not m or (m.group(1), m.group(2), m.group(4)) != (c.namespace, c.run, c.learner):
            return  # another learner's delta
        refusal = Refusal(object=obj, reason=reason, message=message, round=int(m.group(3)))
        log.warning("the hub refused %s: %s: %s", obj, reason, message)
        self._refusals.append(refusal)
        self._refusal_arrived.set()
