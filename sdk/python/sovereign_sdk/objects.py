"""The part of the JetStream object-store protocol a learner needs, written against the
plain JetStream API of nats-py.

Why not nats-py's ``ObjectStore``: its ``ObjectMeta``/``ObjectInfo`` (nats-py 2.16) have no
``metadata`` field, so ``put`` cannot attach the signed manifest (``sovereign.manifest``) and
``get_info`` drops the model digest (``sovereign.model-digest``) on reading; its ``get`` also
collects the whole object in memory by repeated ``bytes +=``. The layout written here is the
one nats.js (``@nats-io/obj``, what the hub uses) reads and writes:

- chunks are published to ``$O.<bucket>.C.<nuid>``, a fresh NUID per put;
- then one JSON meta message on ``$O.<bucket>.M.<base64url(name), padded>`` with the header
  ``Nats-Rollup: sub`` (it replaces the previous meta of that name), holding name,
  description, options.max_chunk_size, metadata, bucket, nuid, size, chunks, mtime,
  ``digest = "SHA-256=" + base64url(sha256(all bytes)), padded`` and deleted=false.

Learners may not purge streams, so the chunks of an object they replace (a re-published
delta) stay until the bucket's age limit removes them; nats.js tries and ignores the same
failure.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError
from nats.nuid import NUID

from .errors import SovereignError, TransportError

STREAM_NOT_FOUND = 10059
ROLLUP_HEADER = "Nats-Rollup"
DEFAULT_CHUNK_BYTES = 1024 * 1024

_nuid = NUID()


def stream_of(bucket: str) -> str:
    return f"OBJ_{bucket}"


def meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode('utf-8')).decode('ascii')}"


def chunk_subject(bucket: str, nuid: str) -> str:
    return f"$O.{bucket}.C.{nuid}"


@dataclass
class ObjectLookup:
    """The meta of an object, or why there is none: ``bucket-missing`` or ``object-missing``."""

    state: str
    info: dict | None = None


async def object_info(js: JetStreamContext, bucket: str, name: str) -> ObjectLookup:
    try:
        msg = await js.get_last_msg(stream_of(bucket), meta_subject(bucket, name))
    except NotFoundError as err:
        return ObjectLookup("bucket-missing" if err.err_code == STREAM_NOT_FOUND else "object-missing")
    try:
        info = json.loads(msg.data)
    except ValueError:
        return ObjectLookup("object-missing")
    if not isinstance(info, dict) or info.get("deleted"):
        return ObjectLookup("object-missing")
    return ObjectLookup("ok", info)


async def read_object(js: JetStreamContext, bucket: str, info: dict, out: BinaryIO, idle_timeout: float = 30.0) -> str:
    """Streams an object's chunks into `out` (an ordered consumer; nothing held in memory) and
    returns the lower-case hex SHA-256 of its bytes."""
    size, nuid = info.get("size"), info.get("nuid")
    if not isinstance(size, int) or size < 0 or not isinstance(nuid, str) or not nuid:
        raise TransportError("ModelFetchFailed", f"object '{info.get('name')}' in {bucket} has malformed meta")
    digest = hashlib.sha256()
    if size == 0:
        return digest.hexdigest()
    sub = await js.subscribe(chunk_subject(bucket, nuid), stream=stream_of(bucket), ordered_consumer=True)
    received = 0
    try:
        while received < size:
            try:
                msg = await sub.next_msg(timeout=idle_timeout)
            except nats.errors.TimeoutError:
                raise TransportError(
                    "ModelFetchFailed",
                    f"no chunk of '{info.get('name')}' for {idle_timeout:.0f}s after {received} of {size} bytes; "
                    "the region's NATS server is overloaded or the object was replaced — fetch again",
                ) from None
            data = msg.data
            if received + len(data) > size:
                raise TransportError(
                    "ModelFetchFailed", f"object '{info.get('name')}' has more bytes than its meta says"
                )
            digest.update(data)
            await asyncio.to_thread(out.write, data)
            received += len(data)
    finally:
        await sub.unsubscribe()
    return digest.hexdigest()


DEFAULT_PUT_WINDOW = 8
"""Chunks a put keeps unacknowledged, as the operator's own put (transport/objects.ts): one
chunk at a time waits a round trip per chunk, about half the throughput (docs/deltas.md)."""


class _PutAcks:
    """JetStream acks of a put's chunks, on one inbox, matched to chunks by a token in the
    reply subject. The chunks themselves are published in order by the caller: a chunk's
    position in the stream is its position in the object."""

    def __init__(self, nc: NATS, stream: str):
        self._nc = nc
        self._stream = stream
        self._inbox = nc.new_inbox()
        self._waiting: dict[str, asyncio.Future] = {}
        self._next = 0
        self._sub = None

    async def __aenter__(self):
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        return self

    async def __aexit__(self, *exc):
        for fut in self._waiting.values():
            fut.cancel()
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on_ack(self, msg) -> None:
        fut = self._waiting.pop(msg.subject.rsplit(".", 1)[-1], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def publish(self, subject: str, data: bytes, headers: dict | None = None) -> asyncio.Future:
        """Publishes one message to the stream; returns the future of its ack."""
        token = str(self._next)
        self._next += 1
        fut = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        await self._nc.publish(
            subject,
            data,
            reply=f"{self._inbox}.{token}",
            headers={"Nats-Expected-Stream": self._stream, **(headers or {})},
        )
        return fut

    @staticmethod
    async def acked(fut: asyncio.Future, timeout: float) -> int:
        """Waits for one ack; returns the stream sequence or raises what nats-py's publish would."""
        try:
            msg = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise nats.errors.TimeoutError from None
        if msg.headers and msg.headers.get("Status") == "503":
            raise NoStreamResponseError
        try:
            ack = json.loads(msg.data)
        except ValueError:
            raise TransportError("PublishFailed", f"JetStream answered a chunk with {msg.data[:80]!r}") from None
        if not isinstance(ack, dict):
            raise TransportError("PublishFailed", f"JetStream answered a chunk with {msg.data[:80]!r}")
        if "error" in ack:
            raise APIError.from_error(ack["error"])
        return int(ack.get("seq", 0))


async def put_object(
    nc: NATS,
    bucket: str,
    name: str,
    source: BinaryIO,
    metadata: dict[str, str],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    timeout: float = 30.0,
    window: int = DEFAULT_PUT_WINDOW,
) -> dict:
    """Puts `source`'s bytes as object `name` with `metadata`; returns the meta written.

    Up to `window` chunks are in flight, each a JetStream publish whose ack is checked; the
    meta is written only after every chunk is acknowledged, so a put that fails leaves no
    visible object."""
    stream = stream_of(bucket)
    nuid = _nuid.next().decode("ascii")
    subject = chunk_subject(bucket, nuid)
    digest = hashlib.sha256()
    size = chunks = 0
    inflight: collections.deque[asyncio.Future] = collections.deque()
    try:
        async with _PutAcks(nc, stream) as acks:
            while True:
                data = await asyncio.to_thread(source.read, chunk_bytes)
                if not data:
                    break
                digest.update(data)
                inflight.append(await acks.publish(subject, data))
                size += len(data)
                chunks += 1
                while len(inflight) >= max(1, window):
                    await acks.acked(inflight.popleft(), timeout)
            while inflight:
                await acks.acked(inflight.popleft(), timeout)
            info = {
                "name": name,
                "description": "",
                "options": {"max_chunk_size": chunk_bytes},
                "metadata": metadata,
                "bucket": bucket,
                "nuid": nuid,
                "size": size,
                "chunks": chunks,
                "mtime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "digest": "SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode("ascii"),
                "deleted": False,
            }
            meta = await acks.publish(
                meta_subject(bucket, name),
                json.dumps(info, separators=(",", ":")).encode("utf-8"),
                headers={ROLLUP_HEADER: "sub"},
            )
            revision = await acks.acked(meta, timeout)
    except NoStreamResponseError:
        raise TransportError(
            "DeltaBucketMissing",
            f"no stream {stream} answers in this region; the member operator creates bucket {bucket} when the "
            "region is placed in a run — check the member is running and the pod's SOVEREIGN_NATS_URL",
        ) from None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError) as err:
        raise TransportError(
            "PublishFailed",
            f"putting '{name}' into {bucket} failed after {size} bytes ({type(err).__name__}); a permissions "
            "violation shows as a timeout: check the learner's NATS user may publish $O." + bucket + ".>",
        ) from None
    except SovereignError:
        raise
    except APIError as err:
        raise TransportError(
            "PublishFailed", f"JetStream refused '{name}' in {bucket} after {size} bytes: {err.description}"
        ) from None
    info["revision"] = revision
    return info
