"""The fast indented JSON writer gives the bytes of ``json.dump(doc, fh, indent=2)``.

Results files keep their exact bytes (benchmarks compare them byte for byte); the writer
only routes plain containers through the C encoder. Checked on random documents with
every kind of value JSON meets in a results file and the odd ones it may meet.
"""

from __future__ import annotations

import enum
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.core.outfiles import indented_json, write_json


class Kind(enum.IntEnum):
    A = 1


class Ratio(float):
    pass


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.just(Kind.A),
    st.builds(Ratio, st.floats(-1e6, 1e6)),
)
keys = st.one_of(st.text(max_size=6), st.integers(-5, 5))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(doc=documents)
def test_same_bytes_as_the_indented_encoder(doc):
    assert "".join(indented_json(doc)) == json.dumps(doc, indent=2)


def test_a_streamed_list_is_read_once(tmp_path):
    class Once(list):
        """A list whose items can be iterated once (the results' requests)."""

        def __iter__(self):
            assert not getattr(self, "used", False), "iterated twice"
            self.used = True
            return super().__iter__()

    records = Once([{"id": i, "ttft_ms": i / 3} for i in range(3)])
    path = tmp_path / "r.json"
    write_json(path, {"summary": {"n": 3}, "requests": records})
    expected = {"summary": {"n": 3}, "requests": [{"id": i, "ttft_ms": i / 3} for i in range(3)]}
    assert path.read_text() == json.dumps(expected, indent=2)
