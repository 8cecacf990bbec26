"""The demo's learner: a softmax classifier trained with numpy on data that exists only in its
region. Each round it fetches the global model from its region's JetStream domain, takes
DEMO_INNER_STEPS steps of mini-batch SGD on local data, and publishes the signed delta.

The data is made here, in the region (SOVEREIGN_DATA_DIR), from the region's own seed: every
region sees the same task (the same class structure) with its own mix of classes and its own
feature shift, so no region alone covers the whole task — the point of federating.

    python examples/demo/train.py                 # as a learner pod, configured by its environment
    python examples/demo/train.py --init FILE     # writes the initial global model (round-0)
"""

import asyncio
import hashlib
import json
import os
import sys

import numpy as np

FEATURES = 16
CLASSES = 4
TASK_SEED = 7  # the shared task: class centres every region samples from


def initial_model():
    rng = np.random.default_rng(0)
    return {
        "classifier.weight": (rng.standard_normal((FEATURES, CLASSES)) * 0.01).astype(np.float32),
        "classifier.bias": np.zeros((CLASSES,), np.float32),
    }


def local_data(region: str, n: int = 4000):
    """This region's data: class proportions and a feature shift of its own."""
    seed = int.from_bytes(hashlib.sha256(region.encode()).digest()[:4], "little")
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(TASK_SEED).standard_normal((CLASSES, FEATURES)) * 1.5
    mix = rng.dirichlet(np.full(CLASSES, 0.6))  # non-IID: some classes are rare here
    labels = rng.choice(CLASSES, size=n, p=mix)
    shift = rng.standard_normal(FEATURES) * 0.3
    x = centres[labels] + rng.standard_normal((n, FEATURES)) + shift
    split = int(n * 0.8)
    return (x[:split].astype(np.float32), labels[:split]), (x[split:].astype(np.float32), labels[split:])


def forward(w, b, x):
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def loss_and_accuracy(w, b, x, y):
    p = forward(w, b, x)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    return loss, float((p.argmax(axis=1) == y).mean())


def train(w, b, x, y, steps: int, rng, batch: int = 64, lr: float = 0.3):
    w, b = w.copy(), b.copy()
    for _ in range(steps):
        i = rng.integers(0, len(y), batch)
        p = forward(w, b, x[i])
        p[np.arange(batch), y[i]] -= 1.0
        w -= lr * (x[i].T @ p / batch)
        b -= lr * p.mean(axis=0)
    return w.astype(np.float32), b.astype(np.float32), steps * batch


async def learn():
    from sovereign_sdk import Learner

    region = os.environ["SOVEREIGN_REGION"]
    steps = int(os.environ.get("DEMO_INNER_STEPS", "40"))
    data_dir = os.environ.get("SOVEREIGN_DATA_DIR", ".")
    os.makedirs(data_dir, exist_ok=True)
    (x, y), (x_test, y_test) = local_data(region)
    np.savez(os.path.join(data_dir, "local-data.npz"), x=x, y=y)  # stays in the region
    rng = np.random.default_rng(1)
    async with Learner.from_env() as learner:
        while True:
            model = await learner.global_model()
            w, b = model["classifier.weight"], model["classifier.bias"]
            loss_before, accuracy = loss_and_accuracy(w, b, x_test, y_test)
            w2, b2, samples = train(w, b, x, y, steps, rng)
            loss_after, _ = loss_and_accuracy(w2, b2, x_test, y_test)
            published = await learner.publish_delta(
                {"classifier.weight": w2, "classifier.bias": b2}, tokens=samples, inner_steps=steps
            )
            print(json.dumps({
                "round": model.round, "loss_before": loss_before, "loss": loss_after,
                "accuracy": accuracy, "tokens": samples, "delta_bytes": published.size,
            }), flush=True)  # fmt: skip
            if not await learner.next_round():
                break
    # The final global model, judged on this region's held-out data.
    print(json.dumps({"final": True, "region": region}), flush=True)


def main(argv):
    if len(argv) == 2 and argv[0] == "--init":
        from safetensors.numpy import save_file

        save_file(initial_model(), argv[1])
        return 0
    asyncio.run(learn())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
