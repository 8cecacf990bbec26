"""The demo's task, shared by the learner (train.py) and the baselines (baselines.py): the UCI
handwritten digits that scikit-learn ships inside its wheel (sklearn.datasets.load_digits: 1797
8×8 images, 10 classes, no download at run time), split non-IID across the regions, and a small
numpy model trained with Adam on mini-batches of BATCH: softmax regression (64 → 10, 650
parameters), or with HIDDEN > 0 a 1-hidden-layer ReLU MLP. The MLP reached ~97% centrally but
DiLoCo stayed ~2.5 points below it on this split in the simulation (baselines.py simulate); the
convex model keeps the federated runs within ~1 point of centralized (docs/demo.md).

The split: for every class, its samples are dealt to the regions in proportions drawn from a
Dirichlet(ALPHA) with a fixed seed (Hsu et al., arXiv 1909.06335), so each region sees a skewed
mix of digits; each region then keeps HELD_OUT of its own samples aside for evaluation. The
union of the regions' held-out sets is the demo's global test set.
"""

import os

import numpy as np

CLASSES = 10
FEATURES = 64
HIDDEN = 0  # 0: softmax regression (the demo's model); > 0: a 1-hidden-layer ReLU MLP
ALPHA = 0.3  # Dirichlet concentration of each class over the regions: small = very skewed
SPLIT_SEED = 2024
HELD_OUT = 0.25
BATCH = 32
FLOOR = 0.05
LR = 5e-3  # Adam, the inner optimiser of every learner and of every baseline
INIT_SEED = 0
DATA_FILE = "digits.npz"

# ---------------------------------------------------------------------------------------------
# Data


def split_regions(regions, alpha=ALPHA, seed=SPLIT_SEED):
    """{region: (x_train, y_train, x_test, y_test)}: the packaged digits dealt non-IID."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    shares = {r: [] for r in regions}
    for c in range(CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        p = rng.dirichlet(np.full(len(regions), alpha))
        cuts = (np.cumsum(p)[:-1] * len(idx)).round().astype(int)
        for r, part in zip(regions, np.split(idx, cuts), strict=True):
            shares[r].append(part)
    out = {}
    for r in regions:
        idx = rng.permutation(np.concatenate(shares[r]))
        n_test = int(round(len(idx) * HELD_OUT))
        test, train = idx[:n_test], idx[n_test:]
        out[r] = (x[train], y[train], x[test], y[test])
    return out


def write_region(path, x, y, x_test, y_test):
    np.savez(path, x_train=x, y_train=y, x_test=x_test, y_test=y_test)


def read_region(data_dir):
    """The region's own data, from its data directory (written there by the region, never sent)."""
    d = np.load(os.path.join(data_dir, DATA_FILE))
    return d["x_train"], d["y_train"], d["x_test"], d["y_test"]


# ---------------------------------------------------------------------------------------------
# Model


def initial_model(seed=INIT_SEED):
    rng = np.random.default_rng(seed)
    if HIDDEN == 0:  # softmax regression
        return {
            "out.weight": (rng.standard_normal((FEATURES, CLASSES)) * 0.01).astype(np.float32),
            "out.bias": np.zeros((CLASSES,), np.float32),
        }
    return {
        "hidden.weight": (rng.standard_normal((FEATURES, HIDDEN)) * np.sqrt(2.0 / FEATURES)).astype(np.float32),
        "hidden.bias": np.zeros((HIDDEN,), np.float32),
        "out.weight": (rng.standard_normal((HIDDEN, CLASSES)) * np.sqrt(1.0 / HIDDEN)).astype(np.float32),
        "out.bias": np.zeros((CLASSES,), np.float32),
    }


def parameters(model):
    return sum(int(v.size) for v in model.values())


def _forward(m, x):
    if "hidden.weight" in m:
        h = x @ m["hidden.weight"] + m["hidden.bias"]
        a = np.maximum(h, 0)
    else:
        h = a = x
    logits = a @ m["out.weight"] + m["out.bias"]
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return h, a, p


def evaluate(m, x, y):
    """(loss, accuracy, correct) of the model on (x, y)."""
    _, _, p = _forward(m, x)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    correct = int((p.argmax(axis=1) == y).sum())
    return loss, correct / max(1, len(y)), correct


def _gradients(m, x, y):
    h, a, p = _forward(m, x)
    n = len(y)
    p[np.arange(n), y] -= 1.0
    p /= n
    g_out_w = a.T @ p
    g_out_b = p.sum(axis=0)
    if "hidden.weight" not in m:
        return {"out.weight": g_out_w, "out.bias": g_out_b}
    da = p @ m["out.weight"].T
    da[h <= 0] = 0
    return {
        "hidden.weight": x.T @ da,
        "hidden.bias": da.sum(axis=0),
        "out.weight": g_out_w,
        "out.bias": g_out_b,
    }


class Adam:
    """Adam (β 0.9/0.999) with the learning rate decayed along a cosine from `lr` to `lr`·FLOOR
    over `total` steps (constant without `total`). A learner keeps its state across rounds, as
    DiLoCo's workers do, so its schedule runs over all its steps of the run."""

    def __init__(self, lr=LR, total=None, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.total, self.b1, self.b2, self.eps = lr, total, b1, b2, eps
        self.t = 0
        self.m = {}
        self.v = {}

    def step(self, model, grads):
        self.t += 1
        lr = self.lr
        if self.total:
            done = min(1.0, (self.t - 1) / self.total)
            lr = self.lr * (FLOOR + (1 - FLOOR) * 0.5 * (1 + np.cos(np.pi * done)))
        for k, g in grads.items():
            m = self.m.setdefault(k, np.zeros_like(g))
            v = self.v.setdefault(k, np.zeros_like(g))
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            mh = m / (1 - self.b1**self.t)
            vh = v / (1 - self.b2**self.t)
            model[k] = (model[k] - lr * mh / (np.sqrt(vh) + self.eps)).astype(np.float32)


def train(model, opt, x, y, steps, rng, batch=BATCH):
    """`steps` mini-batch steps from `model` (copied); returns the trained copy."""
    m = {k: v.copy() for k, v in model.items()}
    for _ in range(steps):
        i = rng.integers(0, len(y), batch)
        opt.step(m, _gradients(m, x[i], y[i]))
    return m
