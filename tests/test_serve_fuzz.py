"""Generated request parts (hypothesis): any filter either fails with a rerankflow error when it is
built or checked, or evaluates on any document without raising; lone surrogates are found in
any JSON shape, and only where they are."""

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from rerankflow.errors import RerankflowError
from rerankflow.retrievers.filters import OPERATORS, FieldKinds, MetadataFilter
from rerankflow.serve.protocol import lone_surrogate
from rerankflow.types import Document

from .support.fuzz import examples

FIELDS = ["tags", "year", "source", "flag", "docid", "title", "nested", "absent"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2030, 1, 1)),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=3), scalars, max_size=2))
conditions = st.one_of(values, st.dictionaries(st.sampled_from([*OPERATORS, "near"]), values, min_size=1, max_size=3))
specs = st.dictionaries(st.sampled_from(FIELDS), conditions, max_size=3)
documents = st.builds(
    Document,
    st.text(min_size=1, max_size=4),
    st.just("text"),
    st.one_of(st.none(), st.text(max_size=4)),
    st.dictionaries(st.sampled_from([*FIELDS[:4], "nested"]), values, max_size=4),
)


@settings(max_examples=examples(300))
@given(specs, st.lists(documents, max_size=6))
def test_any_filter_fails_clearly_when_built_or_evaluates_without_raising(spec, docs):
    """Evaluation must never raise, even on fields whose kinds the request check would refuse
    (a job's own filters are not checked against the corpus)."""
    try:
        flt = MetadataFilter(spec, max_values=3, max_glob_chars=5)
    except RerankflowError:
        return
    for doc in docs:
        assert flt.matches(doc) in (True, False)
    try:
        FieldKinds(docs).check(spec)
    except RerankflowError as exc:
        assert "filter " in str(exc)


plain = st.one_of(st.booleans(), st.integers(-5, 5), st.text(max_size=4))
ordered = st.one_of(st.integers(-5, 5), st.text(max_size=4), st.dates())
well_formed = st.dictionaries(
    st.sampled_from(FIELDS),
    st.one_of(
        plain,
        st.lists(plain, max_size=3),
        st.fixed_dictionaries(
            {},
            optional={
                "eq": plain,
                "ne": plain,
                "in": st.lists(plain, max_size=3),
                "nin": st.lists(plain, max_size=3),
                "gt": ordered,
                "lte": ordered,
                "glob": st.text(max_size=5),
                "exists": st.booleans(),
            },
        ).filter(bool),
    ),
    max_size=3,
)


@settings(max_examples=examples(300))
@given(well_formed, st.lists(documents, max_size=6))
def test_well_formed_filters_always_build_and_evaluate(spec, docs):
    flt = MetadataFilter(spec, max_values=3, max_glob_chars=5)
    assert all(flt.matches(d) in (True, False) for d in docs)


texts = st.text(st.sampled_from(["a", "é", " ", "😀", "\ud83d", "\udc00", "\udfff"]), max_size=5)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), texts),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)


def _strings(data):
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield k
            yield from _strings(v)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v)


@settings(max_examples=examples(300))
@given(json_values)
def test_lone_surrogates_are_found_exactly_where_they_are(data):
    has = any(any(0xD800 <= ord(ch) <= 0xDFFF for ch in s) for s in _strings(data))
    assert (lone_surrogate(data) is not None) == has
