"""pandas objects in gilfree's codec (the REDUCED record, `gilfree._wire.reducers`): frames, series
and indexes backed by plain numpy arrays are taken apart and rebuilt exactly, everything else
goes to pickle as before, and the decoder refuses forged records."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.codec_tags import PICKLE, REDUCED

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")
hypothesis_numpy = pytest.importorskip("hypothesis.extra.numpy")

pytestmark = [pytest.mark.gilfree_only, pytest.mark.process_only]

NATIVE_FRAMES = pytest.importorskip("gilfree._wire.reducers")._frame_builder() is not None


@pytest.fixture(scope="module")
def codec():
    from gilfree import _core

    return _core


class FrameSubclass(pd.DataFrame):
    """A DataFrame subclass: the codec leaves those to pickle."""

    @property
    def _constructor(self):
        return FrameSubclass


def assert_same(sent, received):
    """Same type, values, dtypes, index and column types and names, attrs and flags."""
    assert type(received) is type(sent)
    if isinstance(sent, pd.DataFrame):
        pd.testing.assert_frame_equal(
            received,
            sent,
            check_exact=True,
            check_index_type=True,
            check_column_type=True,
            check_flags=True,
        )
        assert list(received.dtypes) == list(sent.dtypes)
    elif isinstance(sent, pd.Series):
        pd.testing.assert_series_equal(
            received, sent, check_exact=True, check_index_type=True, check_flags=True
        )
    else:
        pd.testing.assert_index_equal(received, sent, exact=True, check_exact=True)
    if not isinstance(sent, pd.Index):
        assert received.attrs == sent.attrs


def rng():
    return np.random.default_rng(7)


def numeric_frame(rows=6):
    generator = rng()
    return pd.DataFrame(
        {
            "i": generator.integers(-5, 5, rows),
            "f": generator.random(rows),
            "b": generator.random(rows) > 0.5,
            "u": generator.integers(0, 200, rows).astype(np.uint8),
            "c": generator.random(rows) + 1j,
            "f32": generator.random(rows).astype(np.float32),
        }
    )


def native_values():
    """Values sent as REDUCED records (a frame's index or columns may still be pickled)."""
    frame = numeric_frame()
    named = frame.set_index("i")
    named.columns.name = "fields"
    duplicated = pd.DataFrame(np.arange(12.0).reshape(3, 4), columns=["a", "b", "a", "b"])
    means = pd.DataFrame({"key": [1, 2, 1, 3], "x": [1.0, 2.0, 3.0, 4.0]}).groupby("key").mean()
    multi = pd.DataFrame(np.eye(2), columns=pd.MultiIndex.from_tuples([("a", 1), ("a", 2)]))
    return {
        "numeric frame": frame,
        "named index and columns": named,
        "duplicate column names": duplicated,
        "group-by result": means,
        "transposed (Fortran blocks)": pd.DataFrame(np.arange(12.0).reshape(3, 4)).T,
        "every other row (views)": frame.iloc[::2],
        "a range index with a step": frame.set_axis(pd.RangeIndex(5, 17, 2, name="r")),
        "integer column labels": pd.DataFrame(np.ones((2, 3)), columns=[10, 20, 30]),
        "object column": pd.DataFrame({"o": np.array([1, "two", None], dtype=object)}),
        "no rows": frame.iloc[:0],
        "no columns": pd.DataFrame(index=pd.RangeIndex(3)),
        "empty": pd.DataFrame(),
        "MultiIndex columns": multi,
        "float series": pd.Series([1.5, -0.0, np.nan], name="x"),
        "series with a string index": pd.Series(np.arange(3), index=["a", "b", "c"], name=("t", 1)),
        "object series of strings": pd.Series(["a", "b"], dtype=object),
        "long string index": pd.Index([f"label {index}" for index in range(200)]),
        "numeric index": pd.Index(np.linspace(0, 1, 5), name="t"),
        "bool index": pd.Index(np.array([True, False])),
        "object index of strings": pd.Index(["a", "b"], dtype=object),
        "string index named 1": pd.Index(["a", "b"], name=1),
        "string index named True": pd.Index(["a", "b"], name=True),
        "range index": pd.RangeIndex(-3, 30, 3, name="r"),
    }


def pickled_values():
    """Values the codec sends as pickle: not plainly numpy-backed, or carrying more."""
    frame = numeric_frame(3)
    with_attrs = frame.copy()
    with_attrs.attrs["unit"] = "m"
    return {
        "string column": pd.DataFrame({"s": ["a", "b", None]}, dtype="str"),
        "categorical column": pd.DataFrame({"c": pd.Categorical(["x", "y", "x"])}),
        "datetime column": pd.DataFrame({"t": pd.date_range("2026-01-01", periods=3)}),
        "tz-aware column": pd.DataFrame({"t": pd.date_range("2026-01-01", periods=3, tz="UTC")}),
        "nullable integers": pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64")}),
        "attrs": with_attrs,
        "no duplicate labels flag": frame.set_flags(allows_duplicate_labels=False),
        "subclass": FrameSubclass(frame),
        "datetime index": pd.date_range("2026-01-01", periods=3),
        "strings with a missing one": pd.Index(["a", None], dtype=object),
        "categorical series": pd.Series(pd.Categorical(["a", "b"])),
    }


@pytest.mark.parametrize("name", sorted(native_values()))
def test_plain_pandas_objects_are_rebuilt_exactly_without_pickle(codec, name):
    value = native_values()[name]
    if isinstance(value, pd.DataFrame) and not NATIVE_FRAMES:
        pytest.skip("frames are rebuilt natively from pandas 3 on")
    message = codec.encode(value)
    assert message[1] == REDUCED
    assert_same(value, codec.decode(message))


@pytest.mark.parametrize("name", sorted(pickled_values()))
def test_other_pandas_objects_still_go_to_pickle_and_arrive_equal(codec, name):
    value = pickled_values()[name]
    message = codec.encode(value)
    assert message[1] == PICKLE
    assert_same(value, codec.decode(message))


@pytest.mark.parametrize("name", ["numeric frame", "float series", "numeric index"])
def test_through_shared_memory_too(codec, name):
    value = native_values()[name]
    sink = []
    large = pd.concat([value] * 20_000) if not isinstance(value, pd.Index) else value.repeat(20_000)
    received = codec.decode(codec.encode(large, sink))
    assert sink, "a message this large goes through shared memory"
    assert_same(large, received)


def test_a_received_frame_is_writable_and_independent_of_the_sent_one(codec):
    frame = numeric_frame()
    received = codec.decode(codec.encode(frame))
    received.loc[0, "f"] = -1.0
    received.iloc[1, 0] = 99
    assert frame.loc[0, "f"] != -1.0 and frame.iloc[1, 0] != 99


def test_frames_decoded_from_one_message_share_no_index_object(codec):
    # Short string indexes are built once per process and handed out as views: renaming one
    # frame's columns must not rename another's.
    first, second = (codec.decode(codec.encode(numeric_frame())) for _ in range(2))
    assert first.columns is not second.columns
    first.columns.name = "renamed"
    assert second.columns.name is None
    assert codec.decode(codec.encode(numeric_frame())).columns.name is None


def test_objects_whose_comparisons_raise_stay_inside_pickle(codec):
    class Touchy:
        def __eq__(self, other):
            raise RuntimeError("== called")

        def __bool__(self):
            raise RuntimeError("bool called")

        __hash__ = None

    frame = pd.DataFrame({"o": np.array([Touchy(), 1], dtype=object), "x": [1.0, 2.0]})
    received = codec.decode(codec.encode(frame))
    assert type(received.loc[0, "o"]) is Touchy and list(received["x"]) == [1.0, 2.0]


PLAIN_DTYPES = (
    hypothesis_numpy.boolean_dtypes()
    | hypothesis_numpy.integer_dtypes(endianness="=")
    | hypothesis_numpy.unsigned_integer_dtypes(endianness="=")
    | hypothesis_numpy.floating_dtypes(endianness="=", sizes=(32, 64))
    | hypothesis_numpy.complex_number_dtypes(endianness="=")
)


@st.composite
def frames(draw):
    rows = draw(st.integers(0, 8))
    columns = draw(st.integers(0, 5))
    data = {
        f"c{index}": draw(hypothesis_numpy.arrays(draw(PLAIN_DTYPES), rows))
        for index in range(columns)
    }
    index = draw(
        st.sampled_from(
            [
                pd.RangeIndex(rows),
                pd.RangeIndex(10, 10 + 3 * rows, 3, name="r"),
                pd.Index(np.arange(rows, dtype=np.int64) * 7, name="k"),
                pd.Index([f"row {row}" for row in range(rows)]),
            ]
        )
    )
    frame = pd.DataFrame(data, index=index)
    return frame.T if draw(st.booleans()) and rows else frame


@pytest.mark.skipif(not NATIVE_FRAMES, reason="frames are rebuilt natively from pandas 3 on")
@settings(max_examples=150, deadline=None)
@given(frames())
def test_frames_of_any_plain_dtypes_round_trip_exactly(codec, frame):
    assert_same(frame, codec.decode(codec.encode(frame)))


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (bytes([0xC1, REDUCED, 99, 0x0B, 0]), "no object to rebuild of kind 99"),
        (bytes([0xC1, REDUCED, 0, 0x00]), "from NoneType"),
        (bytes([0xC1, REDUCED]), "input ends"),
    ],
)
def test_forged_reduced_records_are_refused(codec, message, why):
    with pytest.raises(codec.DecodeError, match=why):
        codec.decode(message)


def test_a_numeric_index_must_be_one_dimensional(codec):
    message = bytearray(codec.encode(pd.Index(np.arange(4))))
    forged = codec.encode((np.arange(4).reshape(2, 2), None))
    state_at = message.index(0x0B)  # the state tuple follows the kind
    with pytest.raises(codec.DecodeError, match="2 dimensions"):
        codec.decode(bytes(message[:state_at]) + forged[1:])


def test_untrusted_input_may_not_carry_objects_to_rebuild(codec):
    with pytest.raises(codec.DecodeError, match="an object to rebuild"):
        codec.decode(codec.encode(pd.RangeIndex(3)), trusted=False)


def test_a_type_outside_pandas_gets_no_reducer():
    from gilfree._wire import reducers as _reducers

    assert _reducers.reducer_for(dict) is None
    assert _reducers.reducer_for(pd.Categorical) is None
    assert _reducers.reducer_for(pd.DataFrame) is not None or not NATIVE_FRAMES


def test_the_rebuilt_frame_pickles_like_the_original(codec):
    frame = numeric_frame()
    assert_same(frame, pickle.loads(pickle.dumps(codec.decode(codec.encode(frame)))))


STATE_PARTS = st.recursive(
    st.none()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=3)
    | hypothesis_numpy.arrays(PLAIN_DTYPES, hypothesis_numpy.array_shapes(min_dims=0, max_dims=3)),
    lambda parts: st.lists(parts, max_size=3).map(tuple),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6), st.lists(STATE_PARTS, max_size=4).map(tuple))
def test_a_forged_state_never_crashes_the_decoder(codec, kind, state):
    # A REDUCED record whose state is anything the codec can carry natively: the rebuilders
    # and pandas' own checks refuse it with an exception, or build something; never a crash.
    message = bytes([0xC1, REDUCED, kind]) + codec.encode(state)[1:]
    try:
        codec.decode(message)
    except Exception:
        pass


def test_an_array_or_frame_sent_twice_arrives_as_one_object(codec):
    for value in (np.zeros(3), numeric_frame(), pd.Series([1.0, 2.0])):
        decoded = codec.decode(codec.encode((value, {"again": value})))
        assert decoded[0] is decoded[1]["again"]


def test_objects_that_travel_by_name_or_inside_a_frame_may_repeat_without_pickling_all(codec):
    # Classes, functions and modules are found again by name; frames derived from one another
    # share arrays and indexes, which pandas copies before writing: none of these repeats sends
    # the whole value to pickle (a PICKLE record as the top value).
    frame = pd.DataFrame({"a": np.arange(3.0), "b": np.arange(3.0)})
    derived = [frame, frame.rename(columns={"a": "c"}), frame[["a"]], frame.copy(deep=False)]
    for value in ([len, len, np.float64, np.float64, np, np], derived):
        assert codec.encode(value)[1] != PICKLE
    assert [type(item) for item in codec.decode(codec.encode(derived))] == [pd.DataFrame] * 4
