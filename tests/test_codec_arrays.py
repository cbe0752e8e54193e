"""numpy arrays in gilfree's codec (the NDARRAY record): exact round trips over dtypes, shapes
and orders, what falls back to pickle, shared buffers for large arrays, and a decoder that
refuses forged array records."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.codec_tags import NDARRAY, PICKLE

np = pytest.importorskip("numpy")
hypothesis_numpy = pytest.importorskip("hypothesis.extra.numpy")

pytestmark = [pytest.mark.gilfree_only, pytest.mark.process_only]


@pytest.fixture(scope="module")
def codec():
    from gilfree import _core

    return _core


class Subclass(np.ndarray):
    """An ndarray subclass: the codec leaves those to pickle."""


def assert_identical(sent, received):
    """Same type, dtype (byte order included), shape, order, and bytes."""
    assert type(received) is np.ndarray
    assert received.dtype == sent.dtype and received.dtype.str == sent.dtype.str
    assert received.shape == sent.shape
    expected_fortran = sent.flags.f_contiguous and not sent.flags.c_contiguous
    assert received.flags.f_contiguous == (expected_fortran or received.flags.f_contiguous)
    if expected_fortran:
        assert not received.flags.c_contiguous
    else:
        assert received.flags.c_contiguous
    assert np.ascontiguousarray(received).tobytes() == np.ascontiguousarray(sent).tobytes()


plain_dtypes = (
    hypothesis_numpy.boolean_dtypes()
    | hypothesis_numpy.integer_dtypes(endianness="=")
    | hypothesis_numpy.integer_dtypes(endianness=">")
    | hypothesis_numpy.unsigned_integer_dtypes(endianness="<")
    | hypothesis_numpy.floating_dtypes(endianness="=")
    | hypothesis_numpy.floating_dtypes(endianness=">", sizes=(32, 64))
    | hypothesis_numpy.complex_number_dtypes(endianness="=")
    | hypothesis_numpy.byte_string_dtypes(min_len=1, max_len=6)
    | hypothesis_numpy.unicode_string_dtypes(min_len=1, max_len=6)
    | hypothesis_numpy.datetime64_dtypes()
    | hypothesis_numpy.timedelta64_dtypes()
)


@st.composite
def arrays(draw):
    dtype = draw(plain_dtypes)
    shape = draw(hypothesis_numpy.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    array = draw(hypothesis_numpy.arrays(dtype, shape))
    layout = draw(st.sampled_from(["C", "F", "view"]))
    if layout == "F":
        array = np.asfortranarray(array)
    elif layout == "view" and array.ndim >= 1:
        array = array[..., ::2]
    return array


@settings(max_examples=400, deadline=None)
@given(arrays())
def test_arrays_round_trip_exactly(codec, array):
    message = codec.encode(array)
    assert message[1] == NDARRAY
    assert_identical(array, codec.decode(message))


@pytest.mark.parametrize(
    "array",
    [
        np.array(3.5),
        np.zeros((0,)),
        np.zeros((3, 0, 2), order="F"),
        np.arange(24.0).reshape(2, 3, 4, order="F"),
        np.arange(24, dtype=">i4").reshape(4, 6)[:, ::2],
        np.array(["", "a", "ünï"]),
        np.ones((1, 5), order="F"),  # both C and F contiguous: sent as C
    ],
    ids=["0-d", "empty", "empty-fortran", "fortran-3d", "big-endian-view", "unicode", "row"],
)
def test_edge_arrays_round_trip(codec, array):
    assert_identical(array, codec.decode(codec.encode(array)))


def test_a_non_contiguous_view_arrives_as_a_contiguous_copy(codec):
    base = np.arange(100.0).reshape(10, 10)
    view = base[::2, 1::3]
    received = codec.decode(codec.encode(view))
    assert received.flags.c_contiguous and received.base is not base
    np.testing.assert_array_equal(received, view)


def test_received_arrays_are_writable_and_own_their_data(codec):
    sent = np.arange(10)
    received = codec.decode(codec.encode(sent))
    assert received.flags.writeable
    received[0] = 99
    assert sent[0] == 0


@pytest.mark.parametrize(
    "array",
    [
        np.array([1, "a", None], dtype=object),
        np.zeros(3, dtype=[("x", "<f8"), ("y", "<i4")]),
        np.zeros(2, dtype="V8"),
        np.ma.masked_array([1, 2], mask=[0, 1]),
        np.arange(3).view(Subclass),
        np.zeros(2, dtype=np.dtype("f8", metadata={"unit": "m"})),
    ],
    ids=["object", "structured", "void", "masked", "subclass", "metadata"],
)
def test_other_arrays_fall_back_to_pickle(codec, array):
    message = codec.encode(array)
    assert message[1] == PICKLE
    received = codec.decode(message)
    assert type(received) is type(array) and received.dtype == array.dtype
    assert received.dtype.metadata == array.dtype.metadata
    assert received.tolist() == array.tolist()


def test_a_dtype_equal_to_a_plain_one_but_for_its_metadata_still_goes_to_pickle(codec):
    # dtypes differing only in metadata compare and hash equal: the encoder's table of dtypes
    # it has seen must not take one for the other.
    tagged = np.dtype("f8", metadata={"unit": "m"})
    for dtype, tag in [(np.float64, NDARRAY), (tagged, PICKLE), (np.float64, NDARRAY)]:
        message = codec.encode(np.zeros(2, dtype=dtype))
        assert message[1] == tag
        assert codec.decode(message).dtype.metadata == np.dtype(dtype).metadata


def test_arrays_inside_containers(codec):
    value = {"a": [np.arange(3), (np.eye(2), np.float64(1.5))], "n": 7}
    received = codec.decode(codec.encode(value))
    np.testing.assert_array_equal(received["a"][0], np.arange(3))
    np.testing.assert_array_equal(received["a"][1][0], np.eye(2))
    assert received["a"][1][1] == 1.5 and received["n"] == 7


def test_many_arrays_stay_native_where_pickled_values_would_not(codec):
    # More values than the codec pickles one by one before pickling the whole message.
    arrays_list = [np.full((4, 4), index, dtype=np.float32) for index in range(200)]
    message = codec.encode(arrays_list)
    assert message[1] != PICKLE
    for index, array in enumerate(codec.decode(message)):
        np.testing.assert_array_equal(array, arrays_list[index])


def test_a_large_array_travels_in_shared_memory_with_a_sink(codec):
    large = np.random.default_rng(0).random((512, 300), dtype=np.float64).T  # Fortran, 1.2 MB
    sink = []
    message = codec.encode(large, sink)
    assert len(sink) == 1 and len(message) < 100
    received = codec.decode(message)
    assert_identical(large, received)
    received[0, 0] = -1.0  # a writable view of the shared copy, not of the original
    assert large[0, 0] != -1.0


def test_a_shared_ndarray_slice_is_sent_by_reference_whatever_its_size(codec):
    import gilfree

    shared = gilfree.shared_ndarray((1000,), dtype=np.int64)
    sink = []
    received = codec.decode(codec.encode(shared[10:20], sink))
    assert len(sink) == 1
    received[:] = 5
    assert (shared[10:20] == 5).all() and shared[9] == 0 and shared[20] == 0


def header(dtype: bytes, shape: list[int], order: int = 0) -> bytes:
    out = bytearray([0xC1, NDARRAY, order, len(dtype)]) + dtype + bytes([len(shape)])
    for size in shape:
        out += varint(size)
    return bytes(out)


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def inline(body: bytes, pad: int = 0) -> bytes:
    """An INLINE buffer: storage 0, length, pad byte, pad, the bytes."""
    return bytes([0]) + varint(len(body)) + bytes([pad]) + bytes(pad) + body


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (header(b"<f8", [2]) + inline(b"\0" * 15), "needs 16 bytes"),
        (header(b"<f8", [2]) + inline(b"\0" * 17), "needs 16 bytes"),
        (header(b"|O8", [1]) + inline(b"\0" * 8), "unsupported array dtype"),
        (header(b"|V8", [1]) + inline(b"\0" * 8), "unsupported array dtype"),
        (header(b"<f8", [1 << 40, 1 << 40]) + inline(b""), "larger than the address space"),
        (header(b"<f8", [1] * 65) + inline(b"\0" * 8), "dimensions"),
        (header(b"<f8", [1], order=2) + inline(b"\0" * 8), "unknown array order"),
        (header(b"<f8", [1]) + bytes([7]) + inline(b"\0" * 8)[1:], "unknown buffer storage"),
        (header(b"<f8", [1]) + inline(b"\0" * 8, pad=64), "padded by 64"),
        (header(b"<f8", [3]), "ends in the middle"),
    ],
    ids=[
        "short",
        "long",
        "object",
        "void",
        "overflow",
        "ndim",
        "order",
        "storage",
        "pad",
        "truncated",
    ],
)
def test_forged_array_records_are_refused(codec, message, why):
    with pytest.raises(codec.DecodeError, match=why):
        codec.decode(message, trusted=False)


def test_untrusted_input_may_carry_inline_arrays_but_not_shared_ones(codec):
    assert codec.decode(codec.encode(np.arange(3)), trusted=False).tolist() == [0, 1, 2]
    sink = []
    message = codec.encode(np.zeros(1 << 18), sink)
    with pytest.raises(codec.DecodeError, match="shared buffer"):
        codec.decode(message, trusted=False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_after_an_array_tag_never_crashes_the_decoder(codec, garbage):
    try:
        codec.decode(bytes([0xC1, NDARRAY]) + garbage, trusted=False)
    except (codec.DecodeError, ValueError, TypeError):
        pass


def test_without_numpy_nothing_changes():
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from gilfree import _core\n"
        "value = {'x': [1, 2.5, 'a'], 'b': b'z'}\n"
        "assert _core.decode(_core.encode(value)) == value\n"
        "class Thing: pass\n"
        "assert type(_core.decode(_core.encode(Thing()))) is Thing\n"
        "print('ok')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.stdout.strip() == "ok", completed.stderr


def test_a_memoryview_of_an_array_keeps_its_items_and_one_cast_cannot_rebuild_is_refused(codec):
    # memoryview.cast takes native formats of one character and no zero in a shape of several
    # dimensions: other views are refused, as pickle refuses every memoryview.
    array = np.arange(6.0).reshape(2, 3)
    decoded = codec.decode(codec.encode(memoryview(array)))
    assert (decoded.format, decoded.shape, decoded.tolist()) == ("d", (2, 3), array.tolist())
    assert np.array_equal(np.asarray(decoded), array)
    for foreign in (np.arange(3, dtype=">f8"), np.arange(3, dtype=complex), np.zeros((0, 3))):
        with pytest.raises(TypeError, match="send the array it views"):
            codec.encode(memoryview(foreign))
