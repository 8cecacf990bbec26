"""Errors a user can act on, each from the Learner API with environment configuration.
Prints {case: reason} as JSON."""

import asyncio
import json
import os
import sys

from sovereign_sdk import Learner, SovereignError


async def reason_of(make):
    try:
        await make()
        return "ok"
    except SovereignError as err:
        return {"reason": err.reason, "text": str(err)}


async def main():
    base = dict(os.environ)
    results = {}

    async def missing():
        env = {k: v for k, v in base.items() if k not in ("SOVEREIGN_NATS_URL", "SOVEREIGN_LEARNER_KEY")}
        Learner.from_env(env)

    async def bad_round():
        Learner.from_env({**base, "SOVEREIGN_ROUND": "4", "SOVEREIGN_ROUNDS": "3"})

    async def bad_dtype():
        Learner.from_env({**base, "SOVEREIGN_DELTA_DTYPE": "int2"})

    async def bad_key():
        Learner.from_env({**base, "SOVEREIGN_LEARNER_KEY": sys.argv[1]})

    async def bad_password():
        async with Learner.from_env({**base, "SOVEREIGN_NATS_PASSWORD": "wrong"}, connect_attempts=1):
            pass

    async def no_mirror():
        async with Learner.from_env(base, poll_interval=0.2) as learner:
            await learner.global_model(timeout=1.5)

    async def not_fetched():
        async with Learner.from_env(base) as learner:
            await learner.publish_delta({}, tokens=1, inner_steps=1)

    for name, case in [
        ("missing", missing),
        ("badRound", bad_round),
        ("badDtype", bad_dtype),
        ("badKey", bad_key),
        ("badPassword", bad_password),
        ("noMirror", no_mirror),
        ("notFetched", not_fetched),
    ]:
        results[name] = await asyncio.wait_for(reason_of(case), 30)
    print(json.dumps(results))


asyncio.run(main())
