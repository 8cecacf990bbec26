"""The demo's learner: softmax regression on this region's share of the handwritten digits
(examples/demo/digits.py), in numpy. Each round it fetches the global model from its region's
JetStream domain, scores it on the region's held-out data, takes DEMO_INNER_STEPS steps of Adam
on the region's training data (the optimiser's state and its cosine schedule run across rounds,
as DiLoCo's workers keep theirs), and publishes the signed delta. The hub's outer step is the
run's algorithm: FedAvg (θ + mean Δ) or DiLoCo (Nesterov momentum on −mean Δ).

The data is the region's own: SOVEREIGN_DATA_DIR/digits.npz, written there by the region before
the run (`baselines.py prepare`); it never leaves the region, only deltas do.

    python examples/demo/train.py                 # as a learner pod, configured by its environment
    python examples/demo/train.py --init FILE     # writes the initial global model (round-0)
"""

import asyncio
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits  # noqa: E402


async def learn():
    from sovereign_sdk import Learner

    region = os.environ["SOVEREIGN_REGION"]
    steps = int(os.environ.get("DEMO_INNER_STEPS", "100"))
    rounds = int(os.environ.get("SOVEREIGN_ROUNDS", "1"))
    x, y, x_test, y_test = digits.read_region(os.environ.get("SOVEREIGN_DATA_DIR", "."))
    opt = digits.Adam(total=rounds * steps)
    rng = np.random.default_rng(1)
    async with Learner.from_env() as learner:
        while True:
            model = await learner.global_model()
            weights = dict(model.items())
            loss_before, accuracy, correct = digits.evaluate(weights, x_test, y_test)
            trained = digits.train(weights, opt, x, y, steps, rng)
            loss_after, _, _ = digits.evaluate(trained, x_test, y_test)
            published = await learner.publish_delta(trained, tokens=steps * digits.BATCH, inner_steps=steps)
            print(json.dumps({
                "round": model.round, "loss_before": loss_before, "loss": loss_after,
                "accuracy": accuracy, "correct": correct, "test": int(len(y_test)),
                "tokens": steps * digits.BATCH, "inner_steps": steps,
                "model_bytes": model.size, "delta_bytes": published.size,
            }), flush=True)  # fmt: skip
            if not await learner.next_round():
                break
    print(json.dumps({"final": True, "region": region}), flush=True)


def main(argv):
    if len(argv) == 2 and argv[0] == "--init":
        from safetensors.numpy import save_file

        save_file(digits.initial_model(), argv[1])
        return 0
    asyncio.run(learn())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
