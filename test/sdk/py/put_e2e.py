"""The SDK's pipelined object put against a region's real nats-server: one object written for
the caller to read back with nats.js, then each way a put can fail. Prints JSON."""

import asyncio
import hashlib
import io
import json
import random
import sys

import nats

from sovereign_sdk import SovereignError
from sovereign_sdk.objects import put_object


async def reason_of(put):
    try:
        await put
        return {"reason": "ok"}
    except SovereignError as err:
        return {"reason": err.reason, "text": str(err)}


async def main():
    url, member_user, member_password, learner_user, learner_password, bucket, small, forbidden = sys.argv[1:9]
    # A size and chunk size that do not divide: the last chunk is short.
    payload = random.Random(7).randbytes(9 * 1024 * 1024 + 12345)
    nc = await nats.connect(url, user=member_user, password=member_password)
    learner = await nats.connect(url, user=learner_user, password=learner_password, error_cb=_quiet)
    try:
        info = await put_object(
            nc, bucket, "model/round-1", io.BytesIO(payload), {"k": "v"}, chunk_bytes=1024 * 1024 - 7, window=8
        )
        results = {"info": info, "sha256": hashlib.sha256(payload).hexdigest()}
        results["missingBucket"] = await reason_of(
            put_object(nc, "no-such-bucket", "x", io.BytesIO(b"abc"), {}, timeout=5)
        )
        results["overLimit"] = await reason_of(
            put_object(nc, small, "big", io.BytesIO(payload), {}, chunk_bytes=256 * 1024, timeout=5)
        )
        results["forbidden"] = await reason_of(
            put_object(learner, forbidden, "x", io.BytesIO(payload[:3_000_000]), {}, timeout=2)
        )
        print(json.dumps(results))
    finally:
        await nc.close()
        await learner.close()


async def _quiet(err):
    # The permissions violation arrives here; the put reports it as PublishFailed.
    pass


asyncio.run(main())
