"""Retrieval ranks and metrics against hand-computed rankings, ties under each policy."""

import numpy as np
import pytest

from mcnflow.evaluation.metrics import chance_recall, retrieval_metrics, target_ranks


def test_ranks_without_ties_are_one_based_positions_of_the_target():
    similarity = np.array([[0.9, 0.1, 0.5],    # target 0 is best -> 1
                           [0.8, 0.2, 0.3],    # target 1 is worst -> 3
                           [0.1, 0.9, 0.5]])   # target 2 is second -> 2
    for policy in ("average", "optimistic", "pessimistic"):
        assert target_ranks(similarity, [0, 1, 2], policy).tolist() == [1.0, 3.0, 2.0]


def test_a_tie_is_ranked_by_the_policy():
    # row 0: the target ties with one other clip at the top; row 1: three-way tie for the top;
    # row 2: the target ties with one clip behind a better one.
    similarity = np.array([[0.7, 0.7, 0.1],
                           [0.4, 0.4, 0.4],
                           [0.3, 0.9, 0.3]])
    targets = [0, 1, 2]
    assert target_ranks(similarity, targets, "optimistic").tolist() == [1.0, 1.0, 2.0]
    assert target_ranks(similarity, targets, "pessimistic").tolist() == [2.0, 3.0, 3.0]
    assert target_ranks(similarity, targets, "average").tolist() == [1.5, 2.0, 2.5]


def test_targets_need_not_be_the_diagonal():
    similarity = np.array([[0.1, 0.2, 0.3, 0.4]])
    assert target_ranks(similarity, [0], "average").tolist() == [4.0]
    assert target_ranks(similarity, [3], "average").tolist() == [1.0]


def test_unknown_policy_and_nan_are_errors():
    with pytest.raises(ValueError, match="tie_policy"):
        target_ranks(np.eye(2), [0, 1], "random")
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(np.array([[np.nan, 0.0], [0.0, 1.0]]), [0, 1], "average")


def test_metrics_of_hand_computed_ranks():
    ranks = [1, 2, 6, 11]
    metrics = retrieval_metrics(ranks)
    assert metrics["recall_at_1"] == pytest.approx(25.0)
    assert metrics["recall_at_5"] == pytest.approx(50.0)
    assert metrics["recall_at_10"] == pytest.approx(75.0)
    assert metrics["median_rank"] == pytest.approx(4.0)     # median of 1, 2, 6, 11
    assert metrics["mean_rank"] == pytest.approx(5.0)


def test_missing_queries_count_as_failures_with_the_worst_rank():
    # 3 queries scored (all rank 1), 1 missing of a 4-query benchmark: it gets rank 4
    metrics = retrieval_metrics([1, 1, 1], n_missing=1)
    assert metrics["recall_at_1"] == pytest.approx(75.0)
    assert metrics["recall_at_10"] == pytest.approx(75.0)
    assert metrics["mean_rank"] == pytest.approx((1 + 1 + 1 + 4) / 4)
    # with many missing queries the median itself is the failure rank
    metrics = retrieval_metrics([1], n_missing=2, worst_rank=1000)
    assert metrics["median_rank"] == 1000
    assert metrics["recall_at_5"] == pytest.approx(100 / 3)


def test_everything_missing_scores_zero_and_nothing_gives_no_metrics():
    metrics = retrieval_metrics([], n_missing=5)
    assert metrics["recall_at_10"] == 0.0 and metrics["median_rank"] == 5.0
    assert retrieval_metrics([]) == {}


def test_chance_level_is_k_over_n():
    assert chance_recall(1, 1000) == pytest.approx(0.1)
    assert chance_recall(10, 5) == pytest.approx(100.0)
