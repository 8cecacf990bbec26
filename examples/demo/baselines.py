"""The demo's data provisioning, baselines and evaluation (examples/demo/digits.py is the task).

    python examples/demo/baselines.py prepare ROOT REGION...
        writes each region's share of the digits into ROOT/REGION/digits.npz (the region's own
        storage: in the demo, the directory its learners get as SOVEREIGN_DATA_DIR) and prints
        per region the samples, the class mix and the file's size in bytes.
    python examples/demo/baselines.py baselines ROOT STEPS REGION...
        the same model and optimiser trained for STEPS steps centrally on the union of the
        regions' training data, and on each region's data alone; every model evaluated on the
        union of the held-out sets and on each region's. One JSON document.
    python examples/demo/baselines.py evaluate ROOT MODEL.safetensors REGION...
        a model (e.g. a run's final global model) evaluated the same way. One JSON document.
    python examples/demo/baselines.py simulate ROOT ROUNDS INNER_STEPS fedavg|diloco REGION...
        the federated algorithm in one process, without the testbed (int8-block128 deltas, the
        hub's outer step): for tuning, and to compare with what the testbed run reaches.

The evaluator reads every region's held-out data: it stands for the consortium's agreed
evaluation, not for the federation, whose hub never reads any region's data.
"""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits  # noqa: E402


def prepare(root, regions):
    out = {}
    for r, (x, y, xt, yt) in digits.split_regions(regions).items():
        d = os.path.join(root, r)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, digits.DATA_FILE)
        digits.write_region(path, x, y, xt, yt)
        out[r] = {
            "train": int(len(y)),
            "test": int(len(yt)),
            "classes": np.bincount(np.concatenate([y, yt]), minlength=digits.CLASSES).tolist(),
            "bytes": os.path.getsize(path),
        }
    return out


def load(root, regions):
    return {r: digits.read_region(os.path.join(root, r)) for r in regions}


def judge(model, data):
    """Accuracy on the union of the held-out sets and on each region's."""
    per, correct, total = {}, 0, 0
    for r, (_, _, xt, yt) in data.items():
        _, acc, c = digits.evaluate(model, xt, yt)
        per[r] = acc
        correct += c
        total += len(yt)
    loss, _, _ = digits.evaluate(
        model, np.concatenate([d[2] for d in data.values()]), np.concatenate([d[3] for d in data.values()])
    )
    return {"accuracy": correct / total, "loss": loss, "regions": per, "test_samples": total}


def baselines(root, steps, regions):
    data = load(root, regions)
    out = {"steps": steps, "batch": digits.BATCH}
    t = time.time()
    x = np.concatenate([d[0] for d in data.values()])
    y = np.concatenate([d[1] for d in data.values()])
    central = digits.train(digits.initial_model(), digits.Adam(total=steps), x, y, steps, np.random.default_rng(1))
    out["centralized"] = judge(central, data)
    out["alone"] = {}
    for r, (xr, yr, _, _) in data.items():
        m = digits.train(digits.initial_model(), digits.Adam(total=steps), xr, yr, steps, np.random.default_rng(1))
        out["alone"][r] = judge(m, data)
    out["seconds"] = round(time.time() - t, 2)
    return out


def evaluate(root, path, regions):
    from safetensors.numpy import load_file

    return judge(load_file(path), load(root, regions))


def int8_block128(v):
    """What the int8-block128 encoding does to a delta (deltas/encodings.ts), for the simulation."""
    flat = v.astype(np.float64).ravel()
    out = np.empty_like(flat)
    for s in range(0, len(flat), 128):
        b = flat[s : s + 128]
        scale = np.float32(np.abs(b).max() / 127.0)
        if scale == 0:
            out[s : s + 128] = 0
            continue
        q = np.clip(np.sign(b) * np.floor(np.abs(b) / scale + 0.5), -127, 127)
        out[s : s + 128] = q * float(scale)
    return out.reshape(v.shape).astype(np.float32)


def simulate(root, rounds, inner, algorithm, regions, lr=0.7, momentum=0.9):
    data = load(root, regions)
    theta = digits.initial_model()
    mom = {k: np.zeros_like(v) for k, v in theta.items()}
    opts = {r: digits.Adam(total=rounds * inner) for r in regions}
    rngs = {r: np.random.default_rng(1) for r in regions}
    history = []
    for _ in range(rounds):
        deltas = []
        for r, (x, y, _, _) in data.items():
            new = digits.train(theta, opts[r], x, y, inner, rngs[r])
            deltas.append({k: int8_block128(new[k] - theta[k]) for k in theta})
        mean = {k: np.mean([d[k] for d in deltas], axis=0) for k in theta}
        for k in theta:
            if algorithm == "diloco":
                g = -mean[k]
                mom[k] = momentum * mom[k] + g
                theta[k] = (theta[k] - lr * (g + momentum * mom[k])).astype(np.float32)
            else:
                theta[k] = (theta[k] + mean[k]).astype(np.float32)
        history.append(round(judge(theta, data)["accuracy"], 4))
    return {"algorithm": algorithm, "rounds": rounds, "inner_steps": inner, "history": history, **judge(theta, data)}


def main(argv):
    cmd, rest = argv[0], argv[1:]
    if cmd == "prepare":
        result = prepare(rest[0], rest[1:])
    elif cmd == "baselines":
        result = baselines(rest[0], int(rest[1]), rest[2:])
    elif cmd == "evaluate":
        result = evaluate(rest[0], rest[1], rest[2:])
    elif cmd == "simulate":
        result = simulate(rest[0], int(rest[1]), int(rest[2]), rest[3], rest[4:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
