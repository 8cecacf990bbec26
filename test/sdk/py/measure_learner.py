"""Times one round of a learner on a model of any size: fetch, a trivial step, publish."""

import asyncio
import json
import resource
import time

import numpy as np

from sovereign_sdk import Learner


async def main():
    async with Learner.from_env(poll_interval=0.2) as learner:
        t0 = time.perf_counter()
        weights = await learner.global_model(timeout=300)
        t1 = time.perf_counter()
        new = {name: w + np.float32(1e-3) for name, w in weights.items()}
        t2 = time.perf_counter()
        published = await learner.publish_delta(new, tokens=1, inner_steps=1)
        t3 = time.perf_counter()
        print(
            json.dumps(
                {
                    "object": published.object,
                    "modelBytes": weights.size,
                    "deltaBytes": published.size,
                    "encoding": published.encoding,
                    "fetchSeconds": round(t1 - t0, 3),
                    "stepSeconds": round(t2 - t1, 3),
                    "publishSeconds": round(t3 - t2, 3),
                    "maxRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                }
            )
        )


asyncio.run(main())
