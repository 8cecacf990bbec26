"""A learner pod's training script, as a user would write it, plus the error cases the test
drives. Configuration comes from the environment only. Prints one JSON event per line."""

import asyncio
import json
import sys

import numpy as np

from sovereign_sdk import DeltaRefused, Learner, ModelError, ModelMismatchError


def emit(**event):
    print(json.dumps(event), flush=True)


def shapes(weights):
    return {name: list(w.shape) for name, w in weights.items()}


def train(weights):
    """A trivial 'inner step' on numpy: w ← 0.5·w + 0.25 (fp32)."""
    return {name: w * np.float32(0.5) + np.float32(0.25) for name, w in weights.items()}


async def main():
    async with Learner.from_env(poll_interval=0.2) as learner:
        weights = await learner.global_model(timeout=60)
        emit(event="model", round=weights.round, digest=weights.digest, shapes=shapes(weights))

        # The user's model does not match the global one: nothing is published.
        renamed = dict(weights)
        first = next(iter(renamed))
        renamed["not." + first] = renamed.pop(first)
        try:
            await learner.publish_delta(renamed, tokens=1, inner_steps=1)
            emit(event="mismatch", reason=None)
        except ModelMismatchError as err:
            emit(event="mismatch", reason=err.reason, missing=err.missing, unexpected=err.unexpected, text=str(err))
        reshaped = dict(weights)
        reshaped[first] = np.zeros((1,) + reshaped[first].shape, np.float32)
        try:
            await learner.publish_delta(reshaped, tokens=1, inner_steps=1)
            emit(event="mismatch", reason=None)
        except ModelMismatchError as err:
            emit(event="mismatch", reason=err.reason, different=err.different)

        published = await learner.publish_delta(train(weights), tokens=4096, inner_steps=8)
        emit(event="published", object=published.object, round=published.round, size=published.size)

        emit(event="next", advanced=await learner.next_round(timeout=60), round=learner.round)
        weights = await learner.global_model(timeout=60)
        emit(event="model", round=weights.round, digest=weights.digest, shapes=shapes(weights))
        published = await learner.publish_delta(train(weights), tokens=2048, inner_steps=8)
        emit(event="published", object=published.object, round=published.round, size=published.size)
        try:
            await learner.next_round(timeout=60)
            emit(event="refused", reason=None)
        except DeltaRefused as err:
            listing = learner.refusals()
            listed = await asyncio.wait_for(anext(listing), 5)
            await listing.aclose()
            emit(event="refused", reason=err.reason, hubReason=err.refusal.reason, object=err.refusal.object,
                 round=err.refusal.round, text=str(err), listed=[listed.object, listed.reason])  # fmt: skip

        emit(event="next", advanced=await learner.next_round(timeout=60), round=learner.round)
        try:
            await learner.global_model(timeout=30)
            emit(event="model-error", reason=None)
        except ModelError as err:
            emit(event="model-error", reason=err.reason, text=str(err))
        # The run has 3 rounds: after round 3 there is nothing to wait for.
        emit(event="end", advanced=await learner.next_round(timeout=1))


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
