"""MCN's evaluation protocols (docs/fidelity.md, section Evaluation).

- YouCook2: validation clips of videos in HowTo100M left out (MCN's 3,350-clip set), both conventions
  (ranked among the clips present / missing clips as failures) in the result and the summary;
- CrossTask / Mining YouTube: per-second clips with an 8 s audio window, video features pooled to the
  annotation's length, 30-word steps, a dynamic program placing each step once, recall per task
  (CrossTask) or per video after a log-softmax over steps (Mining YouTube);
- MSR-VTT: its own 3,072 audio frames, R@K over every query;
- the YouCook2 IoU localization labelled as mcnflow's own protocol.

The end-to-end tests use an "oracle" model whose embeddings are its inputs (a clip's pooled video
feature, a sentence's max-pooled one-hot word vectors), on features built so that each protocol
choice changes the outcome.
"""

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mcnflow.cli import main as cli_main
from mcnflow.core.config import ConfigError, load_config
from mcnflow.core.plan import Plan, validate_stage_settings
from mcnflow.corpora import open_corpus
from mcnflow.evaluation.core import EvalFeatures, exclude_videos
from mcnflow.evaluation.crosstask import (MCN_SETTINGS, assign_steps, audio_window, evaluate_steps, log_softmax,
                                          pool_rows, second_items)
from mcnflow.evaluation.scoring import choose_scoring
from mcnflow.features.store import ShardWriter
from text_fixtures import write_text_shard, write_word2vec

REPO = Path(__file__).resolve().parents[1]
DIM = 8
CPU = torch.device("cpu")


# --- the dynamic program -------------------------------------------------------------------------

def _brute_force_best(scores):
    """The best summed score of placing step k at second t_k with t_0 < t_1 < ... (every placement tried)."""
    n_seconds, n_steps = scores.shape
    return max(sum(scores[t, k] for k, t in enumerate(times))
               for times in itertools.combinations(range(n_seconds), n_steps))


@pytest.mark.parametrize("n_seconds, n_steps", [(1, 1), (4, 1), (3, 3), (5, 2), (6, 3), (7, 4), (8, 3)])
def test_dp_matches_brute_force_on_small_random_score_matrices(n_seconds, n_steps):
    rng = np.random.default_rng(n_seconds * 10 + n_steps)
    for trial in range(25):
        scores = rng.normal(size=(n_seconds, n_steps))
        if trial % 5 == 0:   # ties too: a coarse grid of values
            scores = np.round(scores)
        assignment = assign_steps(scores)
        assert assignment.shape == scores.shape and set(np.unique(assignment)) <= {0, 1}
        assert assignment.sum(axis=0).tolist() == [1] * n_steps, "each step placed exactly once"
        times = [int(np.argmax(assignment[:, k])) for k in range(n_steps)]
        assert times == sorted(set(times)), "steps in their order, one second each"
        total = sum(scores[t, k] for k, t in enumerate(times))
        assert total == pytest.approx(_brute_force_best(scores), abs=1e-9)


def test_dp_on_fewer_seconds_than_steps_still_places_every_step_in_order():
    rng = np.random.default_rng(3)
    for _ in range(10):
        assignment = assign_steps(rng.normal(size=(2, 4)))
        times = [int(np.argmax(assignment[:, k])) for k in range(4)]
        assert assignment.sum(axis=0).tolist() == [1] * 4 and times == sorted(times)


# --- clips and scores, as cvpr19_dataloader.py / eval_cross.py -----------------------------------

@pytest.mark.parametrize("second, expected", [(0, (0, 8)), (3, (0, 8)), (4, (0, 8)), (10, (6, 14)),
                                              (16, (12, 20)), (17, (12, 20)), (19, (12, 20))])
def test_audio_window_is_mcns_8_seconds_centred_and_kept_inside_the_video(second, expected):
    assert audio_window(second, 20, 8.0) == expected


def test_audio_window_of_a_video_shorter_than_the_window():
    # MCN: the first half-window seconds take [0, 8]; later ones [T - 8, T] read from 0
    assert audio_window(0, 5, 8.0) == (0.0, 8.0)
    assert audio_window(4, 5, 8.0) == (0.0, 5.0)


def test_audio_items_hold_the_window_frames():
    spectrogram = np.tile(np.arange(2000, dtype=np.float16), (40, 1))   # frame f holds value f
    items = second_items("audio", spectrogram, 20, {"audio_window": 8}, pooled=True)
    assert len(items) == 20
    assert [int(item["nframes"]) for item in items] == [800] * 20
    assert items[0]["audio"].shape == (40, 1024)           # MCN pads each window to 1024 frames
    assert float(items[10]["audio"][0, 0]) == 600.0        # second 10 starts its window at 6 s
    assert float(items[19]["audio"][0, 799]) == 1999.0     # the last one ends at 20 s


def test_video_features_are_max_pooled_to_the_annotation_then_normalised():
    rows = np.array([[3, 0], [1, 0], [0, 4], [0, 1]], dtype=np.float32)
    pooled = pool_rows(rows, 2)
    assert pooled.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    same = pool_rows(np.array([[3, 4], [0, 2]], dtype=np.float32), 2)
    assert same.ravel().tolist() == pytest.approx([0.6, 0.8, 0.0, 1.0])


def test_log_softmax_is_over_the_steps_of_each_second():
    scores = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    normalised = log_softmax(scores)
    assert np.exp(normalised).sum(axis=1) == pytest.approx([1.0, 1.0])
    assert normalised[1] == pytest.approx([-np.log(3)] * 3)
    assert normalised[0] - scores[0] == pytest.approx([normalised[0, 0] - 1.0] * 3)


def test_mcn_settings_are_the_defaults():
    config = load_config([REPO / "config.yaml"])
    assert dict(config["evaluation"]["crosstask"]) == {"audio_window": 8, "max_words": 30, "pool": "features"}
    assert MCN_SETTINGS == {"audio_window": 8.0, "max_words": 30, "pool": "features"}


# --- step localization end to end ------------------------------------------------------------------

class OracleModel(nn.Module):
    """Embeddings = inputs: the clip's video feature, the sentence's max word vector."""

    modalities = ["video", "audio", "text"]
    spaces = ["shared"]

    def embed(self, modality, batch, space=None):
        if modality == "video":
            return batch["video"].float()
        if modality == "text":
            return (batch["words"] * batch["mask"].unsqueeze(-1)).amax(dim=1)
        return torch.zeros(len(batch["nframes"]), DIM)


def _onehot(*weights):
    row = np.zeros(DIM, dtype=np.float16)
    for index, value in weights:
        row[index] = value
    return row


@pytest.fixture
def step_benchmark(tmp_path):
    """One video shown both as CrossTask (raw scores) and as Mining YouTube (log-softmax) data.

    Steps 'w1' (annotated second 0) and 'w2' (annotated second 2), over 3 seconds whose features are
    chosen so that the raw scores place 'w2' at second 1 (recall 0.5) and the log-softmax over the two
    steps places it at second 2 (recall 1).
    """
    words = [f"w{i}" for i in range(DIM)]
    word2vec = write_word2vec(tmp_path / "word2vec.h5", words, np.eye(DIM, dtype=np.float32))
    vid = "stepvid0001"
    rows = np.stack([_onehot((1, 1.0)), _onehot((1, 0.9), (2, 0.85)), _onehot((2, 0.1), (3, 1.0))])
    with ShardWriter(tmp_path / "video.h5", "video", "steps", 0) as video:
        video.add(vid, rows)
    (tmp_path / "videos.csv").write_text(f"77001,{vid},https://youtu.be/{vid}\n")
    (tmp_path / "tasks_primary.txt").write_text("77001\nMake it\nhttps://x\n2\nw1,w2\n\n")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / f"77001_{vid}.csv").write_text("1,0.0,1.0\n2,2.0,3.0\n")
    (tmp_path / "mining").mkdir()
    (tmp_path / "mining" / "videos_test.txt").write_text(f"{vid}\n")
    (tmp_path / "mining" / f"{vid}.srt").write_text(
        "1\n00:00:00,000 --> 00:00:01,000\nw1\n\n2\n00:00:02,000 --> 00:00:03,000\nw2\n")
    features = EvalFeatures.open(shards={"video": [tmp_path / "video.h5"]}, word2vec=tmp_path / "word2vec.h5",
                                 max_words=20, audio_frames=300, word_dim=DIM, fingerprint=word2vec.fingerprint)
    files = {"crosstask": {"videos": str(tmp_path / "videos.csv"), "steps": str(tmp_path / "tasks_primary.txt"),
                           "annotations": str(tmp_path / "annotations")},
             "mining_youtube": {"videos": str(tmp_path / "mining" / "videos_test.txt"),
                                "annotations": str(tmp_path / "mining")}}
    yield {"dir": tmp_path, "features": features, "files": files, "video_id": vid, "word2vec": word2vec}
    features.close()


def test_crosstask_decodes_raw_scores_and_mining_youtube_their_log_softmax(step_benchmark):
    b, scoring = step_benchmark, choose_scoring(["tv"], "shared")
    crosstask = evaluate_steps(OracleModel(), scoring, "crosstask", b["files"]["crosstask"], b["features"], 4, CPU)
    assert crosstask.metrics == {"crosstask_recall": pytest.approx(50.0)}
    assert crosstask.extra["per_task"] == {"77001": pytest.approx(50.0)} and crosstask.extra["protocol"] == "mcn"
    mining = evaluate_steps(OracleModel(), scoring, "mining_youtube", b["files"]["mining_youtube"], b["features"],
                            4, CPU)
    assert mining.metrics == {"mining_youtube_recall": pytest.approx(100.0)}
    assert (mining.n_queries, mining.n_missing) == (1, 0)


def test_step_sentences_keep_30_words(step_benchmark):
    """A step whose telling word is its 22nd: found with MCN's 30 words, lost with 20."""
    b, scoring = step_benchmark, choose_scoring(["tv"], "shared")
    vid = b["video_id"]
    # second 0 shows only the filler word w4, second 2 shows w5 (and some w4): the step "w4 x21 w5"
    # is at second 2 only when its w5 is read
    with ShardWriter(b["dir"] / "video30.h5", "video", "steps", 0) as video:
        video.add(vid, np.stack([_onehot((4, 1.0)), _onehot((6, 1.0)), _onehot((5, 1.0), (4, 0.5)),
                                 _onehot((7, 1.0))]))
    long_step = " ".join(["w4"] * 21 + ["w5"])
    (b["dir"] / "tasks30.txt").write_text(f"77001\nMake it\nhttps://x\n2\n{long_step},w7\n\n")
    (b["dir"] / "annotations" / f"77001_{vid}.csv").write_text("1,2.0,3.0\n2,3.0,4.0\n")
    files = {**b["files"]["crosstask"], "steps": str(b["dir"] / "tasks30.txt")}
    features = EvalFeatures.open(shards={"video": [b["dir"] / "video30.h5"]}, word2vec=b["dir"] / "word2vec.h5",
                                 max_words=20, audio_frames=300, word_dim=DIM, fingerprint=b["word2vec"].fingerprint)
    try:
        mcn = evaluate_steps(OracleModel(), scoring, "crosstask", files, features, 4, CPU)
        twenty = evaluate_steps(OracleModel(), scoring, "crosstask", files, features, 4, CPU,
                                settings={"max_words": 20})
    finally:
        features.close()
    assert mcn.metrics["crosstask_recall"] == pytest.approx(100.0)
    assert twenty.metrics["crosstask_recall"] == pytest.approx(50.0)


def test_missing_and_excluded_step_videos(step_benchmark):
    b, scoring = step_benchmark, choose_scoring(["tv"], "shared")
    listed = Path(b["files"]["mining_youtube"]["videos"])
    listed.write_text(f"{b['video_id']}\nnofeature01\n")
    (listed.parent / "nofeature01.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nw1\n")
    mining = evaluate_steps(OracleModel(), scoring, "mining_youtube", b["files"]["mining_youtube"], b["features"],
                            4, CPU)
    assert (mining.n_queries, mining.n_missing) == (2, 1)
    assert mining.missing_reasons == {"video: not extracted": 1}
    assert mining.by_convention == {"present": {"mining_youtube_recall": pytest.approx(100.0)},
                                    "failures": {"mining_youtube_recall": pytest.approx(50.0)}}
    # per video, as the statistics resample them: present, the scored video only
    assert mining.extra["per_query"] == {"keys": ["0:stepvid0001"],
                                         "values": {"mining_youtube_recall": [pytest.approx(100.0)]},
                                         "aggregate": {"mining_youtube_recall": "mean"}}
    excluded = evaluate_steps(OracleModel(), scoring, "mining_youtube", b["files"]["mining_youtube"],
                              b["features"], 4, CPU, convention="failures", excluded={"nofeature01"})
    assert (excluded.n_queries, excluded.n_missing, excluded.extra["n_excluded"]) == (1, 0, 1)
    assert excluded.metrics == {"mining_youtube_recall": pytest.approx(100.0)}
    # failures: the video without features is a query with recall 0 (the excluded one is none)
    failures = evaluate_steps(OracleModel(), scoring, "mining_youtube", b["files"]["mining_youtube"], b["features"],
                              4, CPU, convention="failures")
    assert failures.extra["per_query"]["keys"] == ["0:stepvid0001", "1:nofeature01"]
    assert failures.extra["per_query"]["values"] == {"mining_youtube_recall": [pytest.approx(100.0), 0.0]}


def test_pooling_scores_instead_of_features_is_the_departure_switch(step_benchmark):
    """An annotation half as long as the features: MCN pools the features (the max of each pair of
    seconds, renormalised), the switch scores each second and max-pools the scores. Second 1's pair
    holds 'w2' beside a strong other feature: pooled with it, 'w2' scores 0.1 there and is placed at
    second 2, where it is annotated (recall 100); scored alone, it scores 1 at second 1 (recall 50)."""
    b, scoring = step_benchmark, choose_scoring(["tv"], "shared")
    vid = b["video_id"]
    with ShardWriter(b["dir"] / "video_long.h5", "video", "steps", 0) as video:
        video.add(vid, np.stack([_onehot((1, 1.0)), _onehot((1, 1.0)),             # second 0: w1
                                 _onehot((2, 1.0)), _onehot((3, 10.0)),            # second 1: w2 | other
                                 _onehot((2, 0.6), (4, 0.8)), _onehot((2, 0.6), (4, 0.8))]))  # second 2
    truth = np.array([[1, 0], [0, 0], [0, 1]], dtype=np.uint8)
    np.save(b["dir"] / "annotations" / f"77001_{vid}.npy", truth)   # .npy: 3 seconds, as MCN's anno/
    features = EvalFeatures.open(shards={"video": [b["dir"] / "video_long.h5"]}, word2vec=b["dir"] / "word2vec.h5",
                                 max_words=20, audio_frames=300, word_dim=DIM, fingerprint=b["word2vec"].fingerprint)
    try:
        recall = {pool: evaluate_steps(OracleModel(), scoring, "crosstask", b["files"]["crosstask"], features, 4,
                                       CPU, settings={"pool": pool}).metrics["crosstask_recall"]
                  for pool in ("features", "scores")}
        assert recall == {"features": pytest.approx(100.0), "scores": pytest.approx(50.0)}
        with pytest.raises(ValueError, match="allowed values: features, scores"):
            evaluate_steps(OracleModel(), scoring, "crosstask", b["files"]["crosstask"], features, 4, CPU,
                           settings={"pool": "mean"})
    finally:
        features.close()


# --- YouCook2: the HowTo100M exclusion and both conventions, through the CLI -----------------------

YC2 = {  # video id -> [(start, end, sentence)]; each sentence's word marks its segment's video rows
    "ycvidAAAAA1": [(2.0, 6.0, "w0"), (10.0, 15.0, "w1")],
    "ycvidAAAAA2": [(0.0, 4.0, "w2"), (12.0, 18.0, "w3")],   # also a HowTo100M video: excluded
    "ycvidAAAAA3": [(5.0, 9.0, "w4"), (14.0, 19.0, "w5")],   # no features: a missing clip
}
SECONDS = 20


@pytest.fixture
def youcook2(tmp_path):
    words = [f"w{i}" for i in range(DIM)]
    word2vec = write_word2vec(tmp_path / "word2vec.h5", words, np.eye(DIM, dtype=np.float32))
    database = {vid: {"duration": SECONDS, "subset": "validation",
                      "annotations": [{"segment": [s, e], "id": i, "sentence": text}
                                      for i, (s, e, text) in enumerate(segs)]}
                for vid, segs in YC2.items()}
    (tmp_path / "yc2.json").write_text(json.dumps({"database": database}))
    spec = {"reader": "youcook2", "annotations": str(tmp_path / "yc2.json"), "subset": "validation",
            "source": "url", "url_template": "https://www.youtube.com/watch?v={video_id}", "id_kind": "youtube"}
    corpus = open_corpus("youcook2", spec)
    with ShardWriter(tmp_path / "video.h5", "video", "youcook2", 0) as video:
        for vid, segments in YC2.items():
            if vid == "ycvidAAAAA3":
                continue
            features = np.zeros((SECONDS, DIM), dtype=np.float16)
            for start, end, sentence in segments:
                features[int(start):int(end), int(sentence[1:])] = 1.0
            video.add(vid, features)
    write_text_shard(tmp_path / "text.h5", "youcook2", {vid: corpus.captions(vid) for vid in YC2}, word2vec)
    (tmp_path / "HowTo100M_v1.csv").write_text("video_id,category_1,category_2,rank,task_id\n"
                                               "ycvidAAAAA2,Food,Recipes,1,1\nzzzzzzzzzzz,Food,Recipes,2,2\n")
    howto = {"reader": "howto100m", "videos_csv": str(tmp_path / "HowTo100M_v1.csv"),
             "captions": str(tmp_path / "none.json"), "source": "url", "url_template": "x/{video_id}",
             "id_kind": "youtube", "limit": None}
    return {"dir": tmp_path, "spec": spec, "howto": howto, "fingerprint": word2vec.fingerprint,
            "segments": corpus.segments()}


def _checkpoint(path, fingerprint):
    from mcnflow.model.mcn import MCN
    torch.manual_seed(0)
    model = MCN(["tv"], "shared", embd_dim=16, video_dim=DIM, word_dim=DIM, recon_size=8,
                audio_widths=(4, 4, 4, 4, 8))
    meta = {"pairs": ["tv"], "space": "shared", "model": dict(model.config), "word2vec": {"fingerprint": fingerprint}}
    torch.save({"model": model.state_dict(), "meta": meta}, path)
    return path


def _plan_settings(benchmark="youcook2_retrieval"):
    config = load_config([REPO / "config.yaml"])
    return json.loads(json.dumps(Plan(config).settings("evaluate", experiment="tv", seed=1, benchmark=benchmark)))


def _run_cli(b, task, exclude, convention, name):
    settings = _plan_settings()
    settings.update(benchmark="bench", task=task, corpus="youcook2", spec=b["spec"], batch_size=8,
                    convention=convention, exclude=exclude,
                    localization={"smoothing": 1, "threshold": 0.5, "iou_thresholds": [0.5]})
    settings["experiment"]["training"].update(max_words=20, audio_frames=300, device="cpu", word_dim=DIM,
                                              video_features=["2d"])
    output = b["dir"] / f"{name}.json"
    code = cli_main(["evaluate", "--experiment", "tv", "--seed", "1", "--benchmark", "bench",
                     "--settings", json.dumps(settings), "--checkpoint", str(_checkpoint(b["dir"] / "m.pt", b["fingerprint"])),
                     "--video", str(b["dir"] / "video.h5"), "--text", str(b["dir"] / "text.h5"),
                     "--word2vec", str(b["dir"] / "word2vec.h5"), "--output", str(output)])
    assert code == 0
    return json.loads(output.read_text())


def test_youcook2_leaves_out_the_videos_of_howto100m_and_reports_both_conventions(youcook2, capsys):
    b = youcook2
    result = _run_cli(b, "retrieval", {"corpus": "howto100m", "spec": b["howto"]}, "present", "excluded")
    assert result["n_excluded"] == 2 and result["excluded_by"] == "howto100m"
    assert (result["n_queries"], result["n_missing"]) == (4, 2)    # 6 clips - 2 excluded; 2 without features
    assert result["protocol"] == "mcn" and result["convention"] == "present"
    by_convention = result["metrics_by_convention"]
    assert set(by_convention) == {"present", "failures"} and result["metrics"] == by_convention["present"]
    assert list(result["metrics"]) == ["recall_at_1", "recall_at_5", "recall_at_10", "median_rank", "mean_rank"]
    # ranked among the 2 clips present: every R@K counts 2 queries; as failures, 4
    assert by_convention["failures"]["recall_at_5"] == pytest.approx(by_convention["present"]["recall_at_5"] / 2)
    assert "2 clips of videos in howto100m excluded" in result["note"]
    assert "present" in capsys.readouterr().out

    kept = _run_cli(b, "retrieval", None, "failures", "kept")
    assert (kept["n_excluded"], kept["excluded_by"], kept["n_queries"], kept["n_missing"]) == (0, None, 6, 2)
    assert kept["metrics"] == kept["metrics_by_convention"]["failures"]


def test_youcook2_iou_localization_is_labelled_mcnflows_own(youcook2):
    result = _run_cli(youcook2, "localization", None, "present", "localization")
    assert result["protocol"] == "mcnflow" and result["task"] == "localization"
    assert set(result["metrics_by_convention"]) == {"present", "failures"}
    present, failures = result["metrics_by_convention"]["present"], result["metrics_by_convention"]["failures"]
    assert failures["mean_iou"] == pytest.approx(present["mean_iou"] * 4 / 6)   # 2 of 6 queries have IoU 0


def test_exclude_videos_counts_what_it_leaves_out(youcook2):
    kept, n = exclude_videos(youcook2["segments"], {"ycvidAAAAA2", "notthere123"})
    assert n == 2 and [s.video_id for s in kept] == ["ycvidAAAAA1"] * 2 + ["ycvidAAAAA3"] * 2


def test_summary_shows_both_conventions_and_the_protocol(youcook2, tmp_path):
    b = youcook2
    paths = [b["dir"] / "excluded.json", b["dir"] / "localization.json"]
    _run_cli(b, "retrieval", {"corpus": "howto100m", "spec": b["howto"]}, "present", "excluded")
    record = json.loads(paths[0].read_text())
    _run_cli(b, "localization", None, "present", "localization")
    out = tmp_path / "summary"
    from mcnflow.report import summarize
    summarize(paths, [], [], out)
    rows = {r["task"]: r for r in csv.DictReader(open(out / "summary.csv", newline=""))}
    retrieval = rows["retrieval"]
    assert (retrieval["protocol"], retrieval["convention"], retrieval["n_excluded"]) == ("mcn", "present", "2")
    assert float(retrieval["recall_at_1_failures"]) == pytest.approx(record["metrics_by_convention"]["failures"]["recall_at_1"])
    assert float(retrieval["recall_at_1"]) == pytest.approx(record["metrics"]["recall_at_1"])
    assert rows["localization"]["protocol"] == "mcnflow" and rows["localization"]["mean_iou_failures"] != ""
    report = (out / "summary.md").read_text()
    assert "R@1 (failures)" in report and "mIoU (failures)" in report
    assert "mcnflow's own protocol, not an MCN one" in report
    assert "Left out: 2 queries of videos in howto100m." in report


# --- the plan: defaults, per-benchmark settings and errors -------------------------------------------

def test_plan_defaults_are_mcns_protocols():
    config = load_config([REPO / "config.yaml"])
    plan = Plan(config)
    youcook2, msrvtt = _plan_settings("youcook2_retrieval"), _plan_settings("msrvtt_retrieval")
    assert youcook2["exclude"]["corpus"] == "howto100m" and youcook2["exclude"]["spec"]["limit"] is None
    assert plan.excluded_id_file("youcook2_retrieval") == config["corpora"]["howto100m"]["videos_csv"]
    assert (youcook2["audio_frames"], youcook2["convention"]) == (5120, "present")
    assert (msrvtt["audio_frames"], msrvtt["convention"], msrvtt["exclude"]) == (3072, "failures", None)
    assert plan.excluded_id_file("msrvtt_retrieval") is None
    assert _plan_settings("youcook2_localization")["exclude"]["corpus"] == "howto100m"


def _config(**benchmarks):
    config = load_config([REPO / "config.yaml"])
    config["corpora"]["ct"] = {"reader": "crosstask", "videos": "v.csv", "steps": "s.txt", "annotations": "a",
                               "source": "url", "url_template": "x/{video_id}"}
    config["evaluation"]["benchmarks"].update(benchmarks)
    return config


def test_exclusion_defaults_by_task_and_its_switches():
    plan = Plan(_config(bare={"task": "retrieval", "corpus": "youcook2", "convention": "present"},
                        off={"task": "retrieval", "corpus": "youcook2", "exclude_videos_of": None},
                        steps={"task": "crosstask", "corpus": "ct"},
                        bad={"task": "retrieval", "corpus": "youcook2", "exclude_videos_of": "nope"}))
    assert plan.excluded_corpus("bare") == "howto100m"      # absent: the train corpus (MCN's YouCook2)
    assert plan.excluded_corpus("off") is None               # null: keep every clip
    assert plan.excluded_corpus("steps") is None             # step localization: every test video
    with pytest.raises(ConfigError, match="evaluation.benchmarks.bad.exclude_videos_of.*allowed values"):
        plan.excluded_corpus("bad")


def test_a_step_benchmark_needs_its_tasks_reader():
    plan = Plan(_config(wrong={"task": "mining_youtube", "corpus": "ct"}))
    with pytest.raises(ConfigError, match="needs a corpus with reader mining_youtube"):
        plan.settings("evaluate", experiment="tv", seed=1, benchmark="wrong")


def test_benchmark_audio_frames_override_and_the_demo_keeps_training_clips():
    demo = Plan(load_config([REPO / "config.yaml", REPO / "demo/config.yaml"]))
    for benchmark in ("msrvtt_retrieval", "youcook2_retrieval"):
        assert demo.settings("evaluate", experiment="tv", seed=1, benchmark=benchmark)["audio_frames"] is None
    settings = demo.settings("evaluate", experiment="tv", seed=1, benchmark="mining_youtube")
    assert settings["task"] == "mining_youtube" and settings["exclude"] is None
    assert settings["crosstask"]["audio_window"] == 2 and settings["crosstask"]["max_words"] == 30


@pytest.mark.parametrize("key, value, message", [
    ("convention", "all", "allowed values: 'present', 'failures'"),
    ("crosstask", {"audio_window": 0, "max_words": 30, "pool": "features"}, "crosstask.audio_window"),
    ("crosstask", {"audio_window": 8, "max_words": 30, "pool": "mean"}, "allowed values: 'features', 'scores'"),
    ("task", "alignment", "mining_youtube"),
])
def test_hand_written_settings_are_checked(key, value, message):
    settings = _plan_settings()
    settings[key] = value
    with pytest.raises(ConfigError, match=message):
        validate_stage_settings("evaluate", settings)


def test_config_errors_name_the_benchmark_key():
    config = load_config([REPO / "config.yaml"])
    raw = json.loads(json.dumps(config))
    raw["evaluation"]["benchmarks"]["youcook2_retrieval"]["convention"] = "everything"
    from mcnflow.core.config import validate_config
    with pytest.raises(ConfigError, match="evaluation.benchmarks.youcook2_retrieval.convention.*'present', 'failures'"):
        validate_config(raw)


def test_evaluate_cli_runs_mining_youtube_with_the_real_mcn(step_benchmark, capsys):
    b = step_benchmark
    spec = {"reader": "mining_youtube", "videos": b["files"]["mining_youtube"]["videos"],
            "annotations": b["files"]["mining_youtube"]["annotations"], "source": "url",
            "url_template": "https://www.youtube.com/watch?v={video_id}", "id_kind": "youtube", "limit": None}
    settings = _plan_settings()
    settings.update(benchmark="myt", task="mining_youtube", corpus="mining_youtube", spec=spec, batch_size=8,
                    exclude=None, convention="present")
    settings["experiment"]["training"].update(max_words=20, audio_frames=300, device="cpu", word_dim=DIM,
                                              video_features=["2d"])
    output = b["dir"] / "myt.json"
    argv = ["evaluate", "--experiment", "tv", "--seed", "1", "--benchmark", "myt", "--settings", json.dumps(settings),
            "--checkpoint", str(_checkpoint(b["dir"] / "m.pt", b["word2vec"].fingerprint)),
            "--video", str(b["dir"] / "video.h5"), "--word2vec", str(b["dir"] / "word2vec.h5"), "--output", str(output)]
    assert cli_main(argv) == 0
    result = json.loads(output.read_text())
    assert result["task"] == "mining_youtube" and result["protocol"] == "mcn"
    assert list(result["metrics"]) == ["mining_youtube_recall"] and 0.0 <= result["metrics"]["mining_youtube_recall"] <= 100.0
    assert (result["n_queries"], result["n_missing"], result["n_excluded"]) == (1, 0, 0)
    # the per-video values reach the result file (results/statistics.csv reads them from there)
    assert result["per_query"]["keys"] == ["0:stepvid0001"]
    assert result["per_query"]["values"]["mining_youtube_recall"] == [result["metrics"]["mining_youtube_recall"]]
    # a Mining YouTube benchmark on a corpus of another reader is refused, naming both
    settings.update(spec={**spec, "reader": "crosstask", "steps": "s.txt"})
    assert cli_main([*argv[:8], json.dumps(settings), *argv[9:]]) == 2
    assert "task mining_youtube needs a corpus with reader mining_youtube" in capsys.readouterr().err
