import numpy as np
import pytest

from sovereign_sdk import ModelMismatchError, check_weights, delta_of, to_numpy

BASE = {"w": (3, 4), "b": (4,)}


class FakeTensor:
    """Duck-typed like a torch tensor: detach().cpu().numpy(); bf16 refuses numpy() until float()."""

    def __init__(self, array, bf16=False):
        self.array, self.bf16, self.calls = array, bf16, []

    def detach(self):
        self.calls.append("detach")
        return self

    def cpu(self):
        self.calls.append("cpu")
        return self

    def numpy(self):
        if self.bf16:
            raise TypeError("Got unsupported ScalarType BFloat16")
        return self.array

    def float(self):
        return FakeTensor(self.array.astype(np.float32))


class FakeModule:
    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return self.state


def test_numpy_and_torch_like_weights_in_the_global_models_order():
    w = np.ones((3, 4), np.float64)
    t = FakeTensor(np.zeros(4, np.float16))
    arrays = check_weights({"b": t, "w": w}, BASE)
    assert list(arrays) == ["w", "b"]
    assert t.calls == ["detach", "cpu"]
    assert arrays["b"].dtype == np.float16
    assert to_numpy(FakeTensor(np.ones(2, np.float32), bf16=True)).dtype == np.float32


def test_every_difference_is_reported():
    with pytest.raises(ModelMismatchError) as info:
        check_weights({"w": np.zeros((4, 3), np.float32), "bias": np.zeros(4, np.float32)}, BASE)
    err = info.value
    assert err.reason == "ModelMismatch"
    assert err.missing == ["b"] and err.unexpected == ["bias"]
    assert err.different == ["'w' has shape [4, 3], the global model's is [3, 4]"]
    assert str(err).startswith("ModelMismatch: the trained weights do not match the global model: missing 1 tensor(s)")


def test_integer_tensors_are_not_weights():
    with pytest.raises(ModelMismatchError, match="'b' is int64, not a float type"):
        check_weights({"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.int64)}, BASE)


def test_delta_is_new_minus_base_in_fp32():
    base = np.array([1.0, 2.0, 3.0], np.float32)
    new = np.array([1.5, 1.0, 3.0], np.float64)
    d = delta_of(new, base)
    assert d.dtype == np.float32
    assert d.tolist() == [0.5, -1.0, 0.0]


def test_a_module_is_read_through_its_state_dict():
    from sovereign_sdk.delta import as_state

    state = {"w": np.zeros((3, 4), np.float32)}
    assert as_state(FakeModule(state)) is state
    with pytest.raises(TypeError):
        as_state([1, 2])
