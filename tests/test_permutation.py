import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerankflow.rerankers.permutation import parse_permutation, read_label, sliding_windows


@pytest.mark.parametrize(
    "text,n,order,dups,oor,missing",
    [
        ("[3] > [1] > [2]", 3, (2, 0, 1), 0, 0, 0),
        ("[2] > [2] > [1] > [3]", 3, (1, 0, 2), 1, 0, 0),
        ("[4] > [9] > [0] > [1]", 4, (3, 0, 1, 2), 0, 2, 2),
        ("I think [2] is best.", 3, (1, 0, 2), 0, 0, 2),
        ("", 3, (0, 1, 2), 0, 0, 3),
        ("no brackets: 3 > 1 > 2", 3, (2, 0, 1), 0, 0, 0),  # read as bare numbers, counted
        ("[1]", 1, (0,), 0, 0, 0),
        ("[1] > [2]", 0, (), 0, 2, 0),
    ],
)
def test_parse_examples(text, n, order, dups, oor, missing):
    p = parse_permutation(text, n)
    assert p.order == order
    assert (p.duplicates, p.out_of_range, p.missing) == (dups, oor, missing)
    assert p.unbracketed == int(text.startswith("no brackets"))
    assert p.clean == (dups == oor == missing == p.unbracketed == 0)


def test_bare_numbers_when_asked():
    assert parse_permutation("3 > 1 > 2", 3, bracketed_only=False).order == (2, 0, 1)
    assert parse_permutation("[B] > [A]", 2).order == (0, 1)  # letters are not ids: all missing


def test_bare_numbers_are_the_fallback_and_reasoning_is_dropped():
    bare = parse_permutation("2 > 1 > 3", 3)
    assert bare.order == (1, 0, 2) and bare.problems()["unbracketed"] == 1 and not bare.clean
    # numbers in a reasoning section are not the answer; the bracketed answer after it is
    think = parse_permutation("<think>maybe [3] first, 2 is weak</think>\n[2] > [3] > [1]", 3)
    assert think.order == (1, 2, 0) and think.clean
    # a reasoning section cut off by the token budget leaves no answer: all missing, counted
    cut = parse_permutation("<think>[3] looks best, then [1]", 3)
    assert cut.order == (0, 1, 2) and cut.missing == 3
    # bare numbers inside prose next to bracketed ids stay prose
    assert parse_permutation("The top 3: [2] > [1] > [3]", 3).order == (1, 0, 2)


SETWISE = r"\[([A-Z])\]|\b([A-Z])\b"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("B", 1),
        ("[C]", 2),
        ("A good passage is B.", 1),
        ("I think C answers it.", 2),
        ("A is the best passage.", 0),
        ("Answer: A", 0),
        ("<think>A or B? A seems off.</think> C", 2),
        ("A passage about (B) fits.", 1),
        ("none of them", None),
        ("a b c", None),
    ],
)
def test_setwise_label_reading_skips_articles_and_reasoning(text, expected):
    assert read_label(text, SETWISE, ["A", "B", "C", "D"]) == expected


@given(st.text(), st.sampled_from(["", "<think>", "</think>", "<think>[1] 2 3</think>"]), st.integers(0, 12))
def test_any_text_with_reasoning_markers_gives_a_permutation(text, marker, n):
    p = parse_permutation(marker + text, n)
    assert sorted(p.order) == list(range(n))


@given(st.text(), st.integers(min_value=0, max_value=30))
def test_any_text_gives_a_permutation(text, n):
    p = parse_permutation(text, n)
    assert sorted(p.order) == list(range(n))


@given(st.permutations(list(range(12))))
def test_clean_answers_round_trip(perm):
    text = " > ".join(f"[{i + 1}]" for i in perm)
    p = parse_permutation(text, 12)
    assert p.order == tuple(perm) and p.clean


@pytest.mark.parametrize(
    "n,window,stride,expected",
    [
        (0, 20, 10, []),
        (1, 20, 10, []),
        (2, 20, 10, [(0, 2)]),
        (20, 20, 10, [(0, 20)]),
        (21, 20, 10, [(1, 21), (0, 20)]),
        (100, 20, 10, [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40), (10, 30), (0, 20)]),
        (35, 20, 10, [(15, 35), (5, 25), (0, 20)]),
        (5, 4, 4, [(1, 5), (0, 4)]),
    ],
)
def test_sliding_windows(n, window, stride, expected):
    assert sliding_windows(n, window, stride) == expected


@pytest.mark.parametrize("n,window,stride", list(itertools.product(range(0, 60, 7), [2, 5, 20], [1, 2, 5])))
def test_windows_cover_every_position_and_reach_the_top(n, window, stride):
    if stride > window:
        with pytest.raises(ValueError):
            sliding_windows(n, window, stride)
        return
    wins = sliding_windows(n, window, stride)
    covered = {i for s, e in wins for i in range(s, e)}
    assert covered == (set(range(n)) if n >= 2 else set())
    if wins:
        assert wins[0][1] == n and wins[-1][0] == 0
        assert all(e - s <= window for s, e in wins)


def test_dl_reference_call_count():
    assert len(sliding_windows(100, 20, 10)) == 9  # the reference: 9 calls for n=100
