import math

import pytest

from rerankflow import ConfigError, Identity
from rerankflow.eval.experiment import Experiment, paired_tests
from rerankflow.eval.measures import evaluate, parse_measures, per_query
from rerankflow.retrievers.bm25 import BM25Retriever


def test_measure_parsing_and_errors():
    assert [str(m) for m in parse_measures(["nDCG@10", "R(rel=2)@100", "AP"])] == ["nDCG@10", "R(rel=2)@100", "AP"]
    with pytest.raises(ConfigError, match="unknown measure 'nDCGG' in 'nDCGG@10'; did you mean 'nDCG'.*: AP, .*nDCG"):
        parse_measures(["nDCGG@10"])


def test_per_query_counts_missing_queries_as_zero():
    qrels = {"1": {"a": 2, "b": 0}, "2": {"c": 1}}
    run = {"1": {"b": 2.0, "a": 1.0}, "3": {"x": 1.0}}
    pq = per_query(parse_measures(["RR@10"]), qrels, run)
    assert pq == {"RR@10": {"1": 0.5, "2": 0.0}}
    assert evaluate(["RR@10"], qrels, run) == {"RR@10": 0.25}
    ideal = {"1": {"a": 2.0, "b": 1.0}, "2": {"c": 1.0}}
    assert evaluate(["nDCG@10"], qrels, ideal)["nDCG@10"] == pytest.approx(1.0)


def test_paired_tests():
    a = {str(i): v for i, v in enumerate([0.5, 0.6, 0.7, 0.9, 0.8, 0.75])}
    b = {str(i): v for i, v in enumerate([0.4, 0.5, 0.7, 0.6, 0.6, 0.7])}
    t = paired_tests(a, b)
    assert t["improved"] == 5 and t["degraded"] == 0
    assert 0 < t["p_ttest"] < 0.05
    same = paired_tests(a, a)
    assert same["p_ttest"] == 1.0 and same["improved"] == 0
    assert math.isnan(paired_tests({"1": 1.0}, {"1": 0.0})["p_ttest"])


def test_experiment_side_by_side(demo, tmp_path):
    corpus, queries, qrels = demo
    from rerankflow import Ranking

    topics = [Ranking(q) for q in queries]
    bm25 = BM25Retriever(corpus)
    exp = Experiment(
        {"bm25": bm25, "bm25-top3": bm25 % 3, "bm25-copy": bm25 >> Identity()},
        topics,
        qrels,
        ["nDCG@10", "R@10"],
        baseline="bm25",
    )
    res = exp.run()
    by = {s.name: s for s in res.systems}
    assert by["bm25-copy"].means == by["bm25"].means
    assert by["bm25-top3"].means["R@10"] < by["bm25"].means["R@10"]
    assert by["bm25-top3"].tests["R@10"]["degraded"] > 0
    assert by["bm25"].tests == {}
    table = res.table()
    assert "bm25-top3" in table and "p(t) nDCG@10" in table
    files = res.write(tmp_path)
    assert {f.name for f in files} == {"results.json", "results.csv", "perquery.csv", "details.json"}
    rows = (tmp_path / "perquery.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2 * len(qrels)


def test_experiment_rejects_unknown_baseline(demo):
    with pytest.raises(ConfigError, match="baseline"):
        Experiment({"a": Identity()}, [], demo[2], ["nDCG@10"], baseline="b")
