"""One-round overlap (sovereign_sdk.overlap): the carry-over onto the next global model and the
bound of H steps ahead, checked on a real training loop (least squares by gradient descent)
against the same steps taken without overlap."""

import numpy as np
import pytest

from sovereign_sdk import Overlap, SovereignConfigError


def sgd(w, x, y, steps, lr=0.05):
    """`steps` full-batch gradient steps on ½‖xw − y‖²/n from a copy of `w`."""
    w = {k: v.copy() for k, v in w.items()}
    for _ in range(steps):
        g = x.T @ (x @ w["w"] - y) / len(y)
        w["w"] = (w["w"] - lr * g).astype(np.float32)
    return w


def test_carry_over_is_new_global_plus_progress_since_publish():
    rng = np.random.default_rng(0)
    published = {"w": rng.standard_normal(4).astype(np.float32), "b": np.zeros(2, np.float32)}
    now = {"w": published["w"] + np.float32(0.5), "b": np.array([1.0, -1.0], np.float32)}
    new_global = {"w": np.arange(4, dtype=np.float32), "b": np.array([2.0, 3.0], np.float32)}
    o = Overlap(inner_steps=10)
    o.published(published)
    o.stepped(4)
    out = o.carry_over(new_global, now)
    np.testing.assert_allclose(out["w"], np.arange(4) + 0.5, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["b"], [3.0, 2.0], rtol=0, atol=1e-6)
    assert out["w"].dtype == np.float32
    # The 4 steps taken while the round closed count toward the new round's H.
    assert (o.carried, o.remaining, o.ahead) == (4, 6, 0)


def test_published_weights_are_a_snapshot():
    o = Overlap(inner_steps=5)
    w = {"w": np.zeros(3, np.float32)}
    o.published(w)
    w["w"] += 1.0  # training in place after the publish must not move the reference
    out = o.carry_over({"w": np.zeros(3, np.float32)}, w)
    np.testing.assert_array_equal(out["w"], np.ones(3, np.float32))


def test_at_most_h_steps_ahead_then_stall():
    o = Overlap(inner_steps=10)
    assert not o.may_step()  # nothing published yet: no base to run ahead of
    o.published({"w": np.zeros(1, np.float32)})
    assert o.allowed(7) == 7
    o.stepped(7)
    assert o.allowed(7) == 3
    o.stepped(3)
    assert not o.may_step() and o.allowed(1) == 0
    with pytest.raises(SovereignConfigError) as err:
        o.stepped(1)
    assert err.value.reason == "OverlapExceeded"


def test_smaller_bound_and_invalid_settings():
    o = Overlap(inner_steps=10, max_ahead=2)
    o.published({"w": np.zeros(1, np.float32)})
    assert o.allowed(5) == 2
    for bad in ({"inner_steps": 0}, {"inner_steps": 5, "max_ahead": 6}, {"inner_steps": 5, "max_ahead": -1}):
        with pytest.raises(SovereignConfigError) as err:
            Overlap(**bad)
        assert err.value.reason == "ConfigInvalid"


def test_carry_over_refuses_other_tensors_and_an_unpublished_state():
    o = Overlap(inner_steps=3)
    with pytest.raises(SovereignConfigError) as err:
        o.carry_over({"w": np.zeros(1, np.float32)}, {"w": np.zeros(1, np.float32)})
    assert err.value.reason == "OverlapNotPublished"
    o.published({"w": np.zeros(2, np.float32)})
    with pytest.raises(SovereignConfigError) as err:
        o.carry_over({"v": np.zeros(2, np.float32)}, {"w": np.zeros(2, np.float32)})
    assert err.value.reason == "OverlapShapeMismatch"
    with pytest.raises(SovereignConfigError) as err:
        o.carry_over({"w": np.zeros(3, np.float32)}, {"w": np.zeros(2, np.float32)})
    assert err.value.reason == "OverlapShapeMismatch"


def test_with_an_unchanged_global_overlap_equals_plain_training():
    """If the round's aggregate is the learner's own published weights (one learner, FedAvg),
    carrying over k steps and then taking H − k gives exactly H plain steps: nothing is lost or
    taken twice."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = (x @ rng.standard_normal(5)).astype(np.float32)
    w0 = {"w": np.zeros(5, np.float32)}
    H = 20
    plain = sgd(sgd(w0, x, y, H), x, y, H)

    o = Overlap(inner_steps=H)
    w = sgd(w0, x, y, o.remaining)
    o.published(w)
    global_1 = {k: v.copy() for k, v in w.items()}  # FedAvg of one learner: its own weights
    w = sgd(w, x, y, 7)  # steps taken while the round closes
    o.stepped(7)
    w = o.carry_over(global_1, w)
    assert o.remaining == H - 7
    w = sgd(w, x, y, o.remaining)
    np.testing.assert_allclose(w["w"], plain["w"], rtol=0, atol=1e-5)
    # and the loss went down: real training, not a copy
    assert np.mean((x @ w["w"] - y) ** 2) < 0.5 * np.mean(y**2)
