"""The Python SDK's put of one delta file into a region's delta bucket, as a learner pod does
it (sovereign_sdk.objects.put_object with the signed manifest in the metadata), for
bench/transport.ts. Connects first, then times only the put; prints JSON with wall-clock
start and end (time.time(), the caller's clock too)."""

import asyncio
import json
import sys
import time

import nats

from sovereign_sdk.learner import MANIFEST_METADATA
from sovereign_sdk.objects import DEFAULT_PUT_WINDOW, put_object


async def main():
    url, user, password, bucket, name, path, manifest_path = sys.argv[1:8]
    window = int(sys.argv[8]) if len(sys.argv) > 8 else DEFAULT_PUT_WINDOW
    with open(manifest_path, encoding="utf-8") as f:
        manifest = f.read()
    nc = await nats.connect(url, user=user, password=password)
    try:
        with open(path, "rb") as source:
            start = time.time()
            info = await put_object(nc, bucket, name, source, {MANIFEST_METADATA: manifest}, window=window)
            end = time.time()
    finally:
        await nc.close()
    print(json.dumps({"start": start, "end": end, "size": info["size"]}))


asyncio.run(main())
