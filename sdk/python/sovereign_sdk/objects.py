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
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import nats.errors
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


async def put_object(
    js: JetStreamContext,
    bucket: str,
    name: str,
    source: BinaryIO,
    metadata: dict[str, str],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    timeout: float = 30.0,
) -> dict:
    """Puts `source`'s bytes as object `name` with `metadata`; returns the meta written."""
    stream = stream_of(bucket)
    nuid = _nuid.next().decode("ascii")
    subject = chunk_subject(bucket, nuid)
    digest = hashlib.sha256()
    size = chunks = 0
    try:
        while True:
            data = await asyncio.to_thread(source.read, chunk_bytes)
            if not data:
                break
            digest.update(data)
            await js.publish(subject, data, timeout=timeout, stream=stream)
            size += len(data)
            chunks += 1
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
        ack = await js.publish(
            meta_subject(bucket, name),
            json.dumps(info, separators=(",", ":")).encode("utf-8"),
            timeout=timeout,
            stream=stream,
            headers={ROLLUP_HEADER: "sub"},
        )
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
        raise TransportError("PublishFailed", f"JetStream refused '{name}' in {bucket}: {err.description}") from None
    info["revision"] = ack.seq
    return info
