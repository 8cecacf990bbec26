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
        DeltaTensor("odd", (3, 5), rng.normal(0, 1, (3, 5)).astype(np.float32)),
    ]


@pytest.mark.parametrize("encoding", ["fp32", "bf16", "fp16", "int8-row", "int8-block16", "int4-block16"])
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
        assert names == [
            "a.weight:scale", "a.weight", "a.bias:scale", "a.bias", "scalar:scale", "scalar", "odd:scale", "odd"
        ]  # fmt: skip
    else:
        assert names == ["a.weight", "a.bias", "scalar", "odd"]
    for t in given:
        e = encode_values(t.name, values[t.name], t.shape, enc)
        expected = decode_values(e.dtype, e.payload, t.shape, enc, e.scales)
        np.testing.assert_array_equal(contents.values[t.name], expected)
        assert contents.values[t.name].shape == t.shape


def test_int4_packs_an_even_last_dimension_and_stores_scalars_and_odd_last_dimensions_at_int8(tmp_path):
    path = str(tmp_path / "d.safetensors")
    written = write_delta(path, tensors(), "int4-block16")
    stored = {t["name"]: (t["dtype"], t["shape"]) for t in written.tensors}
    assert stored["a.weight"] == ("U8", [20, 15])
    assert stored["a.weight:scale"] == ("F32", [38])  # ceil(600 / 16)
    assert stored["a.bias"] == ("U8", [15])
    assert stored["scalar"] == ("I8", [])
    assert stored["odd"] == ("I8", [3, 5])
    enc = parse_encoding("int4-block16")
    w = tensors()[0].values
    e = encode_values("a.weight", w, (20, 30), enc)
    codes = np.empty(600, np.int64)
    codes[0::2] = e.payload & 0x0F
    codes[1::2] = e.payload >> 4
    codes = np.where(codes >= 8, codes - 16, codes)
    scales = np.repeat(e.scales.astype(np.float64), 16)[:600]
    # Every code is within ±7 and the reconstruction within half a step of the input.
    assert np.abs(codes).max() == 7
    assert np.all(np.abs(w.reshape(-1).astype(np.float64) - codes * scales) <= scales / 2 * (1 + 1e-6))
    odd = encode_values("odd", tensors()[3].values, (3, 5), enc)
    assert odd.dtype == "I8" and np.abs(odd.payload.astype(np.int64)).max() == 127


def test_int4_payloads_in_the_wrong_layout_are_refused(tmp_path):
    from sovereign_sdk.deltafile import encode_header

    def refused(entries, data_bytes):
        path = str(tmp_path / "bad.safetensors")
        head = encode_header({"sovereign.format": "sovereign-delta/1", "sovereign.encoding": "int4-block8"}, entries)
        with open(path, "wb") as f:
            f.write(head + bytes(data_bytes))
        with pytest.raises(DeltaError) as info:
            read_delta(path)
        return info.value.reason

    # I8 for an even last dimension (the writer packs it), U8 with a scalar shape, and a scale count
    # computed from the packed rather than the model shape.
    assert refused([("w:scale", "F32", (1,), 4), ("w", "I8", (8,), 8)], 12) == "DeltaLayoutInvalid"
    assert refused([("w:scale", "F32", (1,), 4), ("w", "U8", (), 1)], 5) == "DeltaLayoutInvalid"
    assert refused([("w:scale", "F32", (2,), 8), ("w", "U8", (2, 8), 16)], 24) == "DeltaLayoutInvalid"
    # The same U8 payload with the model shape's 4 scales is read, as [2, 16].
    path = str(tmp_path / "good.safetensors")
    head = encode_header(
        {"sovereign.format": "sovereign-delta/1", "sovereign.encoding": "int4-block8"},
        [("w:scale", "F32", (4,), 16), ("w", "U8", (2, 8), 16)],
    )
    with open(path, "wb") as f:
        f.write(head + np.ones(4, np.float32).tobytes() + bytes([0x8F] * 16))
    np.testing.assert_array_equal(read_delta(path).values["w"], np.tile(np.float32([-1, -8]), (2, 8)))


@pytest.mark.parametrize("encoding", ["fp32", "fp16", "int8-block128", "int4-block64"])
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
