"""Localization decoding on synthetic similarity curves, IoU, metrics and the CrossTask DP."""

import numpy as np
import pytest

from mcnflow.evaluation.crosstask import (STEP_TASKS, CrossTaskVideo, aggregate, assign_steps, crosstask_metrics,
                                          read_annotation, read_steps, read_videos, step_recall, steps_per_query)
from mcnflow.evaluation.localization import decode_interval, localization_metrics, smooth, temporal_iou
from mcnflow.statistics import aggregate_value


def test_smoothing_is_a_centred_mean_that_does_not_pull_edges_down():
    curve = np.array([3.0, 3.0, 3.0, 0.0, 0.0])
    assert smooth(curve, 3).tolist() == pytest.approx([3.0, 3.0, 2.0, 1.0, 0.0])
    assert smooth(curve, 1).tolist() == curve.tolist()


def test_a_box_curve_is_found_exactly():
    curve = np.zeros(30)
    curve[10:18] = 1.0
    assert decode_interval(curve, smoothing=1, threshold=0.5) == (10.0, 18.0)


def test_a_noisy_bump_is_found_near_its_support():
    rng = np.random.default_rng(0)
    seconds = np.arange(120)
    curve = np.exp(-0.5 * ((seconds - 60) / 6.0) ** 2) + rng.normal(0, 0.05, size=len(seconds))
    start, end = decode_interval(curve, smoothing=5, threshold=0.5)
    # the bump's half maximum is at 60 +- 7 seconds
    assert 50 <= start <= 56 and 64 <= end <= 70
    assert temporal_iou((start, end), (53.0, 67.0)) > 0.7


def test_a_peak_at_the_edge_of_the_video_is_clipped_to_its_duration():
    curve = np.zeros(20)
    curve[-4:] = 1.0
    assert decode_interval(curve, smoothing=1, threshold=0.5) == (16.0, 20.0)
    assert decode_interval(curve, smoothing=1, threshold=0.5, duration=19.3) == (16.0, 19.3)
    curve = np.zeros(20)
    curve[:3] = 1.0
    assert decode_interval(curve, smoothing=3, threshold=0.5)[0] == 0.0


def test_only_the_run_with_the_maximum_is_kept():
    curve = np.zeros(30)
    curve[2:6] = 0.9
    curve[20:25] = 1.0
    assert decode_interval(curve, smoothing=1, threshold=0.5) == (20.0, 25.0)


def test_a_flat_curve_predicts_the_whole_video():
    assert decode_interval(np.ones(12), smoothing=3, threshold=0.5) == (0.0, 12.0)


def test_temporal_iou():
    assert temporal_iou((0, 10), (0, 10)) == 1.0
    assert temporal_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert temporal_iou((0, 4), (6, 9)) == 0.0
    assert temporal_iou((2, 3), (0, 10)) == pytest.approx(0.1)
    assert temporal_iou((3, 3), (3, 3)) == 0.0
    with pytest.raises(ValueError):
        temporal_iou((5, 1), (0, 2))


def test_localization_metrics_count_missing_as_zero_iou():
    metrics = localization_metrics([1.0, 0.6, 0.2], iou_thresholds=[0.3, 0.5, 0.7], n_missing=1)
    assert metrics["mean_iou"] == pytest.approx(100 * 1.8 / 4)
    assert metrics["recall_at_iou_0.3"] == pytest.approx(50.0)
    assert metrics["recall_at_iou_0.5"] == pytest.approx(50.0)
    assert metrics["recall_at_iou_0.7"] == pytest.approx(25.0)


# --- CrossTask -------------------------------------------------------------------------------------

def test_dp_places_each_step_once_in_order():
    # step 0 is strongest at second 4, step 1 at second 1: order forces a compromise.
    scores = np.array([[0.0, 0.0],
                       [0.5, 0.9],
                       [0.0, 0.0],
                       [0.0, 0.6],
                       [1.0, 0.0]])
    assignment = assign_steps(scores)
    assert assignment.sum(axis=0).tolist() == [1, 1]
    # best ordered total: step 0 at 1 (0.5) + step 1 at 3 (0.6) = 1.1 > step 0 at 4 alone (can't fit step 1)
    assert np.argmax(assignment[:, 0]) == 1 and np.argmax(assignment[:, 1]) == 3


def test_dp_matches_brute_force_on_random_scores():
    import itertools
    rng = np.random.default_rng(1)
    for _ in range(20):
        scores = rng.normal(size=(7, 3))
        best = max(itertools.combinations(range(7), 3), key=lambda ts: sum(scores[t, k] for k, t in enumerate(ts)))
        assignment = assign_steps(scores)
        assert [int(np.argmax(assignment[:, k])) for k in range(3)] == list(best)


def test_dp_on_a_video_shorter_than_its_steps_still_places_every_step():
    assignment = assign_steps(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]]))
    assert assignment.sum(axis=0).tolist() == [1, 1, 1]


def test_recall_and_its_averaging_over_videos_then_tasks():
    truth = np.zeros((6, 3), dtype=np.uint8)
    truth[0:2, 0] = 1
    truth[3:5, 1] = 1      # step 2 not annotated in this video
    assignment = np.zeros_like(truth)
    assignment[1, 0] = assignment[2, 1] = assignment[5, 2] = 1
    assert step_recall(truth, assignment) == pytest.approx(0.5)
    assert step_recall(np.zeros((3, 2)), assignment[:3, :2]) is None
    metrics, per_task = crosstask_metrics({"a": [0.5, 1.0], "b": [0.0]})
    assert per_task == {"a": pytest.approx(75.0), "b": 0.0}
    assert metrics["crosstask_recall"] == pytest.approx(37.5)


@pytest.mark.parametrize("task", ["crosstask", "mining_youtube"])
@pytest.mark.parametrize("convention", ["present", "failures"])
def test_per_video_values_aggregate_to_the_benchmarks_recall(task, convention):
    """Each video's recall is stored (x100) for the statistics, and aggregating them as the record
    says gives the benchmark's metric: CrossTask a mean of task means, Mining YouTube a mean of videos."""
    records = [("0:v0", "a", 1.0), ("1:v1", "a", 0.5), ("2:v2", "a", 0.0), ("3:v3", "b", 0.25),
               ("4:v4", "b", None), ("5:v5", "c", None)]          # None: a video without features
    protocol = STEP_TASKS[task]
    per_query = steps_per_query(protocol, records, convention)
    kept = [r for r in records if r[2] is not None or convention == "failures"]
    assert per_query["keys"] == [key for key, _, _ in kept]
    assert per_query["values"][protocol.metric] == pytest.approx([100.0 * (r or 0.0) for _, _, r in kept])
    metrics, _ = aggregate(protocol, [(g, 0.0 if r is None else r) for _, g, r in kept])
    aggregated = aggregate_value(per_query["values"][protocol.metric], per_query["aggregate"][protocol.metric],
                                 per_query.get("groups"))
    assert aggregated == pytest.approx(metrics[protocol.metric])
    if task == "crosstask":
        assert per_query["groups"] == [g for _, g, _ in kept]
        # a plain mean over the videos would differ: task a has three videos, b one or two
        assert aggregated != pytest.approx(np.mean(per_query["values"][protocol.metric]))
    else:
        assert "groups" not in per_query


def test_crosstask_files_in_both_release_formats(tmp_path):
    (tmp_path / "videos.csv").write_text("16815,vidA,https://youtu.be/vidA\n23521,vidB,https://youtu.be/vidB\n")
    (tmp_path / "cvpr19_test.csv").write_text("task,video_id,path\n16815,vidA,vidA.mp4\n")
    (tmp_path / "tasks_primary.txt").write_text(
        "16815\nMake Pancakes\nhttps://en.wikihow.com/x\n3\nmix flour,pour batter,flip pancake\n\n"
        "23521\nJack Up a Car\nhttps://en.wikihow.com/y\n2\nloosen nuts,jack up\n\n")
    (tmp_path / "step.json").write_text('{"16815": ["mix flour", "pour batter", "flip pancake"]}')
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    (annotations / "16815_vidA.csv").write_text("1,0.5,2.2\n3,4.0,5.0\n")
    np.save(annotations / "23521_vidB.npy", np.array([[1, 0], [0, 0], [0, 1]], dtype=np.uint8))

    assert read_videos(tmp_path / "videos.csv") == [CrossTaskVideo("16815", "vidA"), CrossTaskVideo("23521", "vidB")]
    assert read_videos(tmp_path / "cvpr19_test.csv") == [CrossTaskVideo("16815", "vidA")]
    steps = read_steps(tmp_path / "tasks_primary.txt")
    assert steps == {"16815": ["mix flour", "pour batter", "flip pancake"], "23521": ["loosen nuts", "jack up"]}
    assert read_steps(tmp_path / "step.json")["16815"] == steps["16815"]

    matrix = read_annotation(annotations, CrossTaskVideo("16815", "vidA"), 3, n_seconds=6)
    # CrossTask rasterises [floor(start), ceil(end)) per step
    assert matrix[:, 0].tolist() == [1, 1, 1, 0, 0, 0]
    assert matrix[:, 2].tolist() == [0, 0, 0, 0, 1, 0]
    assert read_annotation(annotations, CrossTaskVideo("23521", "vidB"), 2, None).shape == (3, 2)
    with pytest.raises(ValueError, match="no annotation"):
        read_annotation(annotations, CrossTaskVideo("1", "zz"), 2, 5)
