import hashlib
import struct

import numpy as np
import pytest
from safetensors import safe_open

from sovereign_sdk import DeltaError, DeltaTensor, decode_values, encode_values, parse_encoding, read_delta, write_delta


def tensors():
    rng = np.random.default_rng(5)
    return [
        DeltaTensor("a.weight", (20, 30), rng.normal(0, 0.01, (20, 30)).astype(np.float32)),
        DeltaTensor("a.bias", (30,), lambda: rng.normal(0, 0.01, 30).astype(np.float32)),
        DeltaTensor("scalar", (), np.array(0.5, np.float32)),
    ]


@pytest.mark.parametrize("encoding", ["fp32", "bf16", "fp16", "int8-row", "int8-block16"])
def test_round_trip_and_manifest_entries(tmp_path, encoding):
    path = str(tmp_path / "d.safetensors")
    given = tensors()
    values = {t.name: (t.values() if callable(t.values) else t.values) for t in given}
    given = [DeltaTensor(t.name, t.shape, values[t.name]) for t in given]
    written = write_delta(path, given, encoding)
    with open(path, "rb") as f:
        data = f.read()
    assert written.size == len(data)
    (length,) = struct.unpack("<Q", data[:8])
    assert length % 8 == 0, "the header is padded to 8 bytes, as the reference writes it"
    contents = read_delta(path)
    assert contents.tensors == written.tensors
    enc = parse_encoding(encoding)
    names = [t["name"] for t in written.tensors]
    if enc.scaled:
        assert names == ["a.weight:scale", "a.weight", "a.bias:scale", "a.bias", "scalar:scale", "scalar"]
    else:
        assert names == ["a.weight", "a.bias", "scalar"]
    for t in given:
        e = encode_values(t.name, values[t.name], t.shape, enc)
        expected = decode_values(enc.payload_dtype, e.payload, t.shape, enc, e.scales)
        np.testing.assert_array_equal(contents.values[t.name], expected)


@pytest.mark.parametrize("encoding", ["fp32", "fp16", "int8-block128"])
def test_the_reference_safetensors_reads_the_same_bytes(tmp_path, encoding):
    path = str(tmp_path / "d.safetensors")
    written = write_delta(path, tensors(), encoding)
    with safe_open(path, framework="numpy") as f:
        assert f.metadata() == {"sovereign.format": "sovereign-delta/1", "sovereign.encoding": encoding}
        for entry in written.tensors:
            array = f.get_tensor(entry["name"])
            assert list(array.shape) == entry["shape"]
            assert hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() == entry["sha256"]


def test_reserved_and_duplicate_names_and_non_finite_values_are_refused(tmp_path):
    path = str(tmp_path / "d.safetensors")
    with pytest.raises(DeltaError, match="^DeltaNameInvalid: .*reserved ':scale'"):
        write_delta(path, [DeltaTensor("w:scale", (1,), np.zeros(1, np.float32))], "fp32")
    with pytest.raises(DeltaError, match="^DeltaNameInvalid: tensor 'w' is given twice"):
        write_delta(path, [DeltaTensor("w", (1,), np.zeros(1, np.float32))] * 2, "fp32")
    with pytest.raises(DeltaError, match="^EncodingNonFinite: tensor 'w' has nan at element 1"):
        write_delta(path, [DeltaTensor("w", (3,), np.array([0, np.nan, 1], np.float32))], "int8-row")
    with pytest.raises(DeltaError, match="^EncodingNonFinite: tensor 'w' has 70000.0, beyond the range of fp16"):
        write_delta(path, [DeltaTensor("w", (1,), np.array([7e4], np.float32))], "fp16")
    with pytest.raises(DeltaError, match="^DeltaShapeMismatch"):
        write_delta(path, [DeltaTensor("w", (2, 2), np.zeros(3, np.float32))], "fp32")
    with pytest.raises(DeltaError, match="^EncodingUnknown"):
        write_delta(path, [], "int8-block4")
