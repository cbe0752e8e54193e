"""gilfree's value codec (``gilfree._core.encode`` / ``decode``), alone: exact round trips,
fallback to pickle, and a decoder that refuses garbage instead of crashing."""

from __future__ import annotations

import collections
import fractions
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.codec_tags import REDUCED
from support.values import Holder

pytestmark = [pytest.mark.gilfree_only, pytest.mark.process_only]


@pytest.fixture(scope="module")
def codec():
    from gilfree import _core

    return _core


def same(left, right):
    """Equal values of identical types, all the way down (NaN equals NaN, -0.0 is not 0.0)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return (math.isnan(left) and math.isnan(right)) or (
            left == right and math.copysign(1, left) == math.copysign(1, right)
        )
    if isinstance(left, complex):
        return same(left.real, right.real) and same(left.imag, right.imag)
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[key], right[key]) for key in left)
    return left == right


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.complex_numbers(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary()
    | st.binary().map(bytearray)
)
hashables = st.none() | st.booleans() | st.integers() | st.text() | st.binary()
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children)
        | st.lists(children).map(tuple)
        | st.dictionaries(hashables, children)
        | st.sets(hashables)
        | st.frozensets(hashables)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_builtin_values_round_trip_exactly(codec, value):
    assert same(codec.decode(codec.encode(value)), value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_crashes_the_decoder(codec, garbage):
    for data in (garbage, bytes([0xC1]) + garbage):
        try:
            codec.decode(data, trusted=False)
        except codec.DecodeError:
            pass
        except (TypeError, OverflowError):
            pass  # e.g. an unhashable key or a float count: refused, never a crash


@pytest.mark.parametrize(
    "value",
    [-0.0, float("nan"), 2**63, -(2**63) - 1, 2**1000, -(2**1000), "\ud800", [1, "a", 2.5]],
    ids=repr,
)
def test_edge_values_keep_type_and_value(codec, value):
    assert same(codec.decode(codec.encode(value)), value)


def test_dict_order_is_kept(codec):
    value = {key: index for index, key in enumerate("zyxwvu")}
    assert list(codec.decode(codec.encode(value))) == list("zyxwvu")


def test_homogeneous_lists_round_trip(codec):
    for value in ([1, 2, 3], [2**70, 1], [1, True], [0.5, -0.0, float("inf")], [0.5, 1]):
        assert same(codec.decode(codec.encode(value)), value)


def test_other_types_travel_as_pickle_inside_the_message(codec):
    value = [
        1,
        fractions.Fraction(1, 3),
        collections.OrderedDict(a=1),
        {"k": collections.Counter("ab")},
    ]
    decoded = codec.decode(codec.encode(value))
    assert decoded == value
    assert type(decoded[2]) is collections.OrderedDict


def test_shared_references_and_cycles_are_preserved(codec):
    inner = [1, 2]
    shared = codec.decode(codec.encode([inner, inner]))
    assert shared[0] is shared[1]
    fraction = fractions.Fraction(1, 3)  # pickled one value at a time
    decoded = codec.decode(codec.encode((fraction, {"again": fraction})))
    assert decoded[0] is decoded[1]["again"]
    cycle = []
    cycle.append(cycle)
    decoded = codec.decode(codec.encode(cycle))
    assert decoded[0] is decoded


@pytest.mark.parametrize(
    "repeated", ["s" * 2048, b"b" * 2048, tuple(range(100))], ids=["str", "bytes", "tuple"]
)
def test_a_large_immutable_reached_twice_is_sent_once(codec, repeated):
    # Copied at each reference, 200 references to one 1 MB string made a 200 MB message.
    message = codec.encode([repeated] * 200)
    assert len(message) < 10 * len(codec.encode(repeated))  # not 200 copies
    decoded = codec.decode(message)
    assert decoded == [repeated] * 200
    assert decoded[0] is decoded[199]


def test_tuples_reusing_tuples_stay_small(codec):
    # Each level refers to the one below twice: copied, the message doubles at every level.
    value: tuple = ()
    for _ in range(40):
        value = (value, value)
    decoded = codec.decode(codec.encode(value))
    assert len(codec.encode(value)) < 1000
    assert decoded[0] is decoded[1]


def test_objects_sharing_a_member_keep_sharing_it(codec):
    # Pickled one at a time, each object would carry its own copy of the list.
    shared = [1, 2]
    decoded = codec.decode(codec.encode((Holder(shared), Holder(shared))))
    assert decoded[0].data is decoded[1].data
    decoded = codec.decode(codec.encode([shared, Holder(shared)]))
    assert decoded[1].data is decoded[0]


def test_an_array_beside_an_object_that_goes_to_pickle_is_copied_once(codec):
    # The value goes to pickle whole once the object is met, after the array was copied to
    # shared memory: pickle's out-of-band copy of it reuses that one.
    numpy = pytest.importorskip("numpy")
    array = numpy.ones(1 << 20)  # 8 MiB
    before = codec.copied_to_shared()
    sink: list = []
    decoded = codec.decode(codec.encode((array, Holder([1])), sink))
    assert codec.copied_to_shared() - before == array.nbytes
    assert numpy.array_equal(decoded[0], array)
    assert decoded[1] == Holder([1])


def test_nesting_deeper_than_the_codec_goes_is_handed_to_pickle(codec):
    value = []
    for _ in range(300):  # deeper than the codec's own limit (256), within pickle's
        value = [value]
    decoded = codec.decode(codec.encode(value))
    for _ in range(300):
        decoded = decoded[0]
    assert decoded == []


def test_truncated_and_trailing_input_is_refused(codec):
    data = codec.encode([1, 2, 3, "abc"])
    for end in range(len(data)):
        with pytest.raises(codec.DecodeError):
            codec.decode(data[:end])
    with pytest.raises(codec.DecodeError, match="after the value"):
        codec.decode(data + b"\x00")


def test_a_forged_count_does_not_allocate(codec):
    # LIST with a count of 2**62 items and nothing after it.
    forged = bytes([0xC1, 0x0A]) + bytes([0xFF] * 8) + bytes([0x3F])
    with pytest.raises(codec.DecodeError, match="needs more than"):
        codec.decode(forged)


def test_pickles_can_be_refused(codec):
    data = codec.encode(fractions.Fraction(1, 2))
    with pytest.raises(codec.DecodeError, match="pickle"):
        codec.decode(data, trusted=False)
    assert codec.decode(data) == fractions.Fraction(1, 2)


def test_values_no_pickler_accepts_raise_pickles_error(codec):
    import threading

    with pytest.raises(TypeError, match="cannot pickle"):
        codec.encode([1, threading.Lock()])


def test_lambdas_fall_back_to_cloudpickle(codec):
    double = codec.decode(codec.encode([1, lambda value: value * 2]))[1]
    assert double(21) == 42


def test_a_large_message_moves_to_shared_memory_when_a_sink_is_given(codec):
    value = list(range(1_000_000))  # encodes to about 3 MB
    sink = []
    data = codec.encode(value, sink)
    assert len(data) < 100 and len(sink) == 1
    assert codec.decode(data) == value
    with pytest.raises(codec.DecodeError, match="shared buffer"):
        codec.decode(data, trusted=False)
    assert len(codec.encode(value)) > codec.SHARE_THRESHOLD  # no sink: all inline


def test_large_buffers_are_shared_and_small_ones_inline(codec):
    big, small = bytes(codec.SHARE_THRESHOLD), b"x" * 100
    sink = []
    decoded = codec.decode(codec.encode([big, small, bytearray(big)], sink))
    assert len(sink) == 2
    assert decoded == [big, small, bytearray(big)]
    assert [type(item) for item in decoded] == [bytes, bytes, bytearray]


@pytest.mark.parametrize("kind", ["float", "complex"])
def test_a_large_float_or_complex_list_is_written_straight_to_shared_memory(codec, kind):
    edges = [-0.0, math.nan, math.inf, 5e-324]
    values = edges + [index / 7 for index in range(codec.SHARE_THRESHOLD // 8)]
    if kind == "complex":
        values = [complex(value, -value) for value in values]
    sink = []
    data = codec.encode([values, "tail"], sink)
    assert len(data) < 100 and len(sink) == 1  # only the list's body went to the buffer
    width = 16 if kind == "complex" else 8
    assert len(memoryview(sink[0])) == len(values) * width
    assert same(codec.decode(data), [values, "tail"])
    small = values[:10]
    assert same(codec.decode(codec.encode(small, [])), small)  # small lists stay inline


def test_a_shared_list_body_that_is_not_whole_items_is_refused(codec):
    buffer = codec.SharedBuffer.allocate(20)  # 20 bytes: not a whole number of complexes
    message = bytes([0xC1, 0x13, 4]) + b"".join(leb128(number) for number in buffer.handle)
    with pytest.raises(codec.DecodeError, match="not a whole number of items"):
        codec.decode(message)


def leb128(number):
    """``number`` as an unsigned LEB128 varint (the codec's integer encoding)."""
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


#: memoryview formats of one native character (what ``memoryview.cast`` rebuilds), with
#: the size of an item.
VIEW_FORMATS = {
    "b": 1,
    "B": 1,
    "h": 2,
    "H": 2,
    "i": 4,
    "I": 4,
    "q": 8,
    "Q": 8,
    "f": 4,
    "d": 8,
    "?": 1,
}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(VIEW_FORMATS)),
    st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple),
    st.booleans(),
)
def test_a_memoryview_keeps_its_format_and_shape(codec, format, shape, large):
    # A view of floats used to arrive as a view of bytes: view[0] gave a byte, not a float.
    size = VIEW_FORMATS[format] * math.prod(shape) * (4096 if large else 1)
    shape = (*shape[:-1], shape[-1] * 4096) if large and shape else shape
    if large and not shape:
        shape = (size // VIEW_FORMATS[format],)
    data = bytes(index % 2 if format == "?" else index % 251 for index in range(size))
    view = memoryview(bytearray(data)).cast(format, shape)
    sink: list = []
    decoded = codec.decode(codec.encode(view, sink))
    assert type(decoded) is memoryview
    assert (decoded.format, decoded.shape, decoded.tolist()) == (format, shape, view.tolist())
    assert decoded.readonly  # small (a view of bytes) or large (of a shared buffer) alike


def test_a_memoryview_of_one_dimension_may_be_empty_or_strided(codec):
    empty = memoryview(bytearray()).cast("d")
    decoded = codec.decode(codec.encode(empty))
    assert (decoded.format, decoded.shape) == ("d", (0,))
    strided = memoryview(bytearray(range(48))).cast("i")[::2]
    decoded = codec.decode(codec.encode(strided))
    assert (decoded.format, decoded.tolist()) == ("i", strided.tolist())


@pytest.mark.parametrize(
    ("state", "why"),
    [
        ((b"abcd", "i", (1,)), "other than bytes, format and shape"),
        ((memoryview(b"abc"), "i", (1,)), "cannot be rebuilt"),
        ((memoryview(b"abcd"), "<i", (1,)), "cannot be rebuilt"),
    ],
)
def test_a_forged_memoryview_record_is_refused(codec, state, why):
    from gilfree._wire.reducers import MEMORYVIEW

    message = bytes([0xC1, REDUCED, MEMORYVIEW]) + codec.encode(state)[1:]
    with pytest.raises(codec.DecodeError, match=why):
        codec.decode(message)
