"""The demo's learner: softmax regression on this region's share of the handwritten digits
(examples/demo/digits.py), in numpy. Each round it fetches the global model from its region's
JetStream domain, scores it on the region's held-out data, takes DEMO_INNER_STEPS steps of Adam
on the region's training data (the optimiser's state and its cosine schedule run across rounds,
as DiLoCo's workers keep theirs), and publishes the signed delta. The hub's outer step is the
run's algorithm: FedAvg (θ + mean Δ) or DiLoCo (Nesterov momentum on −mean Δ).

The data is the region's own: SOVEREIGN_DATA_DIR/digits.npz, written there by the region before
the run (`baselines.py prepare`); it never leaves the region, only deltas do.

Options (the pod's environment): DEMO_INNER_STEPS (H, default 100), DEMO_BATCH (mini-batch,
default digits.BATCH = 32), DEMO_OVERLAP=1 (one-round overlap, sovereign_sdk.Overlap: after
publishing, keep training from the local weights while the hub closes the round, carry that
progress onto the next global model and count it toward the next round's H; at most H steps
ahead, then stall). Besides one JSON line per round (its metrics), the learner prints timing
events as JSON lines with an "event" key (up, train, wait, published, end; wall-clock seconds),
from which the demo measures goodput (test/testbed/goodput.ts).

    python examples/demo/train.py                 # as a learner pod, configured by its environment
    python examples/demo/train.py --init FILE     # writes the initial global model (round-0)
"""

import time

UP = time.time()  # before the imports: they are part of the learner's start-up

import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits  # noqa: E402


def event(kind, **fields):
    """A timing event for the demo's goodput measurement (wall-clock seconds)."""
    print(json.dumps({"event": kind, **fields}), flush=True)


def stalled(learner, since):
    """Stalled ahead of the global model since `since`: a timing event, and told to the SDK so
    that the next delta's manifest (and the hub's goodput panel) counts it as waiting."""
    now = time.time()
    event("wait", t0=since, t1=now, why="ahead")
    learner.waited(now - since)


def timed_train(weights, opt, x, y, steps, rng, batch, for_round):
    """`steps` Adam steps, recorded as one training interval."""
    t0 = time.time()
    trained = digits.train(weights, opt, x, y, steps, rng, batch=batch)
    event("train", t0=t0, t1=time.time(), steps=steps, for_round=for_round)
    return trained


async def moved_on(call):
    """The learner's move to a next round. A delta the hub refused as too late (its round, and
    every round that could fold it in, closed before it was verified) is the run's late-delta
    policy at work, not the learner's fault: said, and the learner goes on."""
    from sovereign_sdk import DeltaRefused

    while True:
        try:
            return await call()
        except DeltaRefused as err:
            if err.refusal.reason != "DeltaTooLate":
                raise
            event("refused", t=time.time(), reason=err.refusal.reason, delta_round=err.refusal.round)


async def learn():
    from sovereign_sdk import Learner, Overlap

    region = os.environ["SOVEREIGN_REGION"]
    steps = int(os.environ.get("DEMO_INNER_STEPS", "100"))
    rounds = int(os.environ.get("SOVEREIGN_ROUNDS", "1"))
    batch = int(os.environ.get("DEMO_BATCH", str(digits.BATCH)))
    overlap = Overlap(steps) if os.environ.get("DEMO_OVERLAP") == "1" else None
    event("up", t=UP, learner=os.environ.get("SOVEREIGN_LEARNER_NAME", ""), pid=os.getpid(),
          region=region, overlap=overlap is not None, batch=batch, inner_steps=steps)  # fmt: skip
    x, y, x_test, y_test = digits.read_region(os.environ.get("SOVEREIGN_DATA_DIR", "."))
    opt = digits.Adam(total=rounds * steps)
    rng = np.random.default_rng(1)
    # Steps between two looks for the next round while running ahead: small against H, so the
    # carried progress is picked up soon after the model arrives.
    chunk = max(1, steps // 20)
    # A learner waiting for the round's model has nothing else to do, and a look is one request
    # to its own region's server: look often (the SDK's default second is for big fleets).
    async with Learner.from_env(poll_interval=0.1) as learner:
        t0 = time.time()
        # A learner that starts late (a region back from an outage: its pod was created at the
        # round its member saw, admitted minutes later) starts from the newest global model.
        await moved_on(learner.poll_next_round)
        model = await learner.global_model()
        event("wait", t0=t0, t1=time.time(), why="model")
        weights = dict(model.items())
        while True:
            loss_before, accuracy, correct = digits.evaluate(dict(model.items()), x_test, y_test)
            todo = overlap.remaining if overlap else steps
            trained = timed_train(weights, opt, x, y, todo, rng, batch, model.round)
            loss_after, _, _ = digits.evaluate(trained, x_test, y_test)
            published = await learner.publish_delta(trained, tokens=steps * batch, inner_steps=steps)
            event("published", t=time.time(), delta_round=model.round, steps=steps, carried=steps - todo)
            print(json.dumps({
                "round": model.round, "loss_before": loss_before, "loss": loss_after,
                "accuracy": accuracy, "correct": correct, "test": int(len(y_test)),
                "tokens": steps * batch, "inner_steps": steps,
                "model_bytes": model.size, "delta_bytes": published.size,
            }), flush=True)  # fmt: skip
            if overlap is None:
                t0 = time.time()
                more = await moved_on(learner.next_round)
                event("wait", t0=t0, t1=time.time(), why="round")
                if not more:
                    break
                t0 = time.time()
                model = await learner.global_model()
                event("wait", t0=t0, t1=time.time(), why="model")
                weights = dict(model.items())
                continue
            # One-round overlap: train ahead from the local weights until the next round's
            # global model is in the region (at most H steps, then stall), then carry over.
            overlap.published(trained)
            weights = trained
            if learner.last_round:
                break
            stall = None
            looked = 0.0
            while True:
                # A look costs a round trip to the region's server: a few per second at most.
                if time.time() - looked >= 0.2:
                    looked = time.time()
                    if await moved_on(learner.poll_next_round):
                        break
                n = overlap.allowed(chunk)
                if n > 0:
                    if stall is not None:
                        stalled(learner, stall)
                        stall = None
                    weights = timed_train(weights, opt, x, y, n, rng, batch, learner.round + 1)
                    overlap.stepped(n)
                else:
                    stall = stall or time.time()
                    await asyncio.sleep(learner.poll_interval)
                    looked = 0.0  # stalled: look at every poll interval, not every 0.2 s
            if stall is not None:
                stalled(learner, stall)
            t0 = time.time()
            model = await learner.global_model()
            event("wait", t0=t0, t1=time.time(), why="model")
            weights = overlap.carry_over(model, weights)
    event("end", t=time.time())
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
