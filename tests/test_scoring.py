"""Which similarity each experiment is scored with, and the evaluation pipeline on a tiny benchmark.

The pipeline tests use an "oracle" model whose embeddings are its inputs (a clip's max-pooled video
feature, a caption's max-pooled word vectors): on a benchmark built so that each caption's word vector
equals its segment's video feature, every query must rank its own clip first and every step must be
localized exactly. One test runs ``mcnflow evaluate`` with the real MCN at tiny sizes.
"""

import json
from pathlib import Path
import math

import numpy as np
import pytest
import torch
from torch import nn

from mcnflow.cli import main as cli_main
from mcnflow.corpora import open_corpus
from mcnflow.evaluation.localization import evaluate_localization
from mcnflow.evaluation.core import EvalFeatures, align_queries, evaluate_retrieval
from mcnflow.evaluation.scoring import NOT_TRAINED_NOTE, check_model, choose_scoring, embed_clips, embed_text, similarity
from mcnflow.features.store import ShardWriter
from mcnflow.features.text import encode_captions
from text_fixtures import write_text_shard, write_word2vec

# --- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pairs, space, label, terms", [
    (["tv"], "shared", "t.v", [("video", None)]),
    (["ta"], "shared", "t.a", [("audio", None)]),
    (["tv", "ta"], "shared", "t.(v+a)", [("video", None), ("audio", None)]),
    (["ta", "va", "tv"], "shared", "t.(v+a)", [("video", None), ("audio", None)]),
    (["tv", "va"], "shared", "t.v", [("video", None)]),
    (["tv", "ta", "va"], "per_pair", "t.v[tv]+t.a[ta]", [("video", "tv"), ("audio", "ta")]),
    (["ta", "va"], "per_pair", "t.a[ta]", [("audio", "ta")]),
])
def test_scoring_follows_the_trained_text_pairs(pairs, space, label, terms):
    scoring = choose_scoring(pairs, space)
    assert scoring.scored and scoring.label == label and scoring.note == ""
    assert [(t.modality, t.space) for t in scoring.terms] == terms


def test_an_experiment_without_text_is_not_scored():
    scoring = choose_scoring(["va"], "shared")
    assert not scoring.scored and scoring.note == NOT_TRAINED_NOTE and scoring.label == "none"
    with pytest.raises(ValueError, match="text branch not trained"):
        similarity(scoring, {}, {})


def test_bad_pairs_or_space_are_refused():
    with pytest.raises(ValueError, match="space"):
        choose_scoring(["tv"], "separate")
    with pytest.raises(ValueError, match="pair"):
        choose_scoring(["tx"], "shared")


class FixedModel(nn.Module):
    """Follows MCN's embed API; returns fixed random embeddings per (modality, space) and logs calls."""

    def __init__(self, spaces, modalities=("video", "audio", "text"), n=3, dim=5):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.spaces, self.modalities = list(spaces), list(modalities)
        self.table = {(m, s): torch.randn(n, dim, generator=generator) for m in self.modalities
                      for s in [None, *self.spaces]}
        self.calls = []

    def embed(self, modality, batch, space=None):
        self.calls.append((modality, space))
        return self.table[(modality, space)]


def test_shared_score_is_text_dot_video_plus_audio():
    model = FixedModel(["shared"])
    scoring = choose_scoring(["tv", "ta", "va"], "shared")
    check_model(model, scoring)
    scores = similarity(scoring, embed_text(model, scoring, {}), embed_clips(model, scoring, {"video": {}, "audio": {}}))
    t, v, a = model.table[("text", None)], model.table[("video", None)], model.table[("audio", None)]
    assert torch.allclose(scores, t @ (v + a).T, atol=1e-6)
    assert model.calls.count(("text", None)) == 1  # one text embedding serves both terms


def test_per_pair_scores_each_pair_in_its_own_space_and_sums():
    model = FixedModel(["tv", "ta", "va"])
    scoring = choose_scoring(["tv", "ta", "va"], "per_pair")
    check_model(model, scoring)
    scores = similarity(scoring, embed_text(model, scoring, {}), embed_clips(model, scoring, {"video": {}, "audio": {}}))
    table = model.table
    expected = table[("text", "tv")] @ table[("video", "tv")].T + table[("text", "ta")] @ table[("audio", "ta")].T
    assert torch.allclose(scores, expected, atol=1e-6)
    assert set(model.calls) == {("text", "tv"), ("text", "ta"), ("video", "tv"), ("audio", "ta")}


def test_a_model_without_the_needed_branch_is_refused():
    with pytest.raises(ValueError, match="needs"):
        check_model(FixedModel(["shared"], modalities=("video", "text")), choose_scoring(["tv", "ta"], "shared"))
    with pytest.raises(ValueError, match="spaces"):
        check_model(FixedModel(["shared"]), choose_scoring(["tv"], "per_pair"))


# --- a tiny YouCook2-format benchmark ------------------------------------------------------------

VIDEOS = {  # video id -> [(start, end, sentence)]; each sentence's word marks its segment's video rows
    "vidAAAAAAA1": [(2.0, 6.0, "w0"), (10.0, 15.0, "w1 unknownword")],
    "vidAAAAAAA2": [(0.0, 4.0, "w2"), (12.0, 18.0, "w3")],
    "vidAAAAAAA3": [(5.0, 9.0, "w4"), (14.0, 19.0, "w5")],
}
NO_AUDIO = "vidAAAAAAA3"
SECONDS, DIM = 20, 8


def _annotations(path, videos):
    database = {vid: {"duration": SECONDS, "subset": "validation",
                      "annotations": [{"segment": [s, e], "id": i, "sentence": text}
                                      for i, (s, e, text) in enumerate(segs)]}
                for vid, segs in videos.items()}
    path.write_text(json.dumps({"database": database}))
    return {"reader": "youcook2", "annotations": str(path), "subset": "validation", "source": "url",
            "url_template": "https://www.youtube.com/watch?v={video_id}", "id_kind": "youtube"}


@pytest.fixture
def benchmark(tmp_path):
    words = [f"w{i}" for i in range(DIM)]
    word2vec = write_word2vec(tmp_path / "word2vec.h5", words, np.eye(DIM, dtype=np.float32))
    spec = _annotations(tmp_path / "youcook2.json", VIDEOS)
    corpus = open_corpus("youcook2", spec)
    rng = np.random.default_rng(0)
    shards = {m: tmp_path / f"{m}.h5" for m in ("video", "audio", "text")}
    with ShardWriter(shards["video"], "video", "youcook2", 0) as video, \
            ShardWriter(shards["audio"], "audio", "youcook2", 0) as audio:
        for vid, segments in VIDEOS.items():
            features = np.zeros((SECONDS, DIM), dtype=np.float16)
            for start, end, sentence in segments:
                features[int(start):int(end), int(sentence.split()[0][1:])] = 1.0
            video.add(vid, features)
            if vid == NO_AUDIO:
                audio.mark(vid, "no_audio")
            else:
                audio.add(vid, rng.normal(size=(40, SECONDS * 100)).astype(np.float16))
    write_text_shard(shards["text"], "youcook2", {vid: corpus.captions(vid) for vid in VIDEOS}, word2vec)
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("video_id\tshard\tsource\n" + "".join(f"{v}\t00000\tx\n" for v in VIDEOS))
    return {"dir": tmp_path, "spec": spec, "shards": shards, "manifest": manifest,
            "word2vec": tmp_path / "word2vec.h5", "fingerprint": word2vec.fingerprint, "segments": corpus.segments()}


class OracleModel(nn.Module):
    """Embeddings = inputs: video's pooled feature, text's max word vector, audio all zeros."""

    modalities = ["video", "audio", "text"]
    spaces = ["shared"]

    def embed(self, modality, batch, space=None):
        if modality == "video":
            return batch["video"].float()
        if modality == "text":
            return (batch["words"] * batch["mask"].unsqueeze(-1)).amax(dim=1)
        return torch.zeros(len(batch["nframes"]), DIM)


def _features(b):
    return EvalFeatures.open(shards={name: [b["shards"][name]] for name in ("text", "video", "audio")},
                             word2vec=b["word2vec"], max_words=20, audio_frames=500, word_dim=DIM,
                             fingerprint=b["fingerprint"])


def test_oracle_ranks_every_query_first(benchmark):
    features = _features(benchmark)
    scoring = choose_scoring(["tv"], "shared")
    queries = align_queries(benchmark["segments"], features, scoring.clip_modalities)
    outcome = evaluate_retrieval(OracleModel(), scoring, queries, features, "average", 4, torch.device("cpu"))
    assert (outcome.n_queries, outcome.n_missing) == (6, 0)
    assert outcome.metrics["recall_at_1"] == 100.0 and outcome.metrics["median_rank"] == 1.0


def test_a_clip_without_a_needed_modality_is_a_failed_query(benchmark):
    features = _features(benchmark)
    scoring = choose_scoring(["tv", "ta"], "shared")   # t.(v+a) needs audio; one video has none
    queries = align_queries(benchmark["segments"], features, scoring.clip_modalities)
    outcome = evaluate_retrieval(OracleModel(), scoring, queries, features, "average", 4, torch.device("cpu"))
    assert (outcome.n_queries, outcome.n_missing) == (6, 2)
    assert outcome.missing_reasons == {"audio: no_audio": 2}
    # MCN's YouCook2 convention (the default): ranked among the 4 clips present, over those 4 queries
    assert outcome.convention == "present" and outcome.metrics == outcome.by_convention["present"]
    assert outcome.metrics["recall_at_1"] == 100.0 and outcome.metrics["mean_rank"] == 1.0
    # missing queries as failures (MCN's MSR-VTT): never a hit, and the worst rank
    failures = outcome.by_convention["failures"]
    assert failures["recall_at_1"] == pytest.approx(100 * 4 / 6)
    assert failures["mean_rank"] == pytest.approx((4 * 1 + 2 * 6) / 6)   # failures get rank 6
    again = evaluate_retrieval(OracleModel(), scoring, queries, features, "average", 4, torch.device("cpu"),
                               convention="failures")
    assert again.metrics == failures and again.by_convention == outcome.by_convention


def test_queries_outside_the_manifest_or_misaligned_with_the_text_are_missing(benchmark):
    features = _features(benchmark)
    videos = {**VIDEOS, "vidAAAAAAA2": VIDEOS["vidAAAAAAA2"] + [(18.0, 19.0, "w6")]}   # one more segment
    segments = open_corpus("youcook2", _annotations(benchmark["dir"] / "more.json", videos)).segments()
    queries = align_queries(segments, features, ["video"], known_videos={"vidAAAAAAA2", "vidAAAAAAA3"})
    reasons = [q.missing for q in queries]
    assert reasons[:2] == ["not in manifest"] * 2
    assert reasons[2:5] == ["text: 2 captions for 3 segments"] * 3
    assert reasons[5:] == [None, None]


def test_oracle_localizes_every_step_exactly(benchmark):
    features = _features(benchmark)
    scoring = choose_scoring(["tv"], "shared")
    queries = align_queries(benchmark["segments"], features, scoring.clip_modalities)
    settings = {"smoothing": 1, "threshold": 0.5, "iou_thresholds": [0.5, 0.9]}
    outcome = evaluate_localization(OracleModel(), scoring, queries, features, settings, 8, torch.device("cpu"))
    assert outcome.metrics == {"mean_iou": pytest.approx(100.0), "recall_at_iou_0.5": 100.0,
                               "recall_at_iou_0.9": 100.0}


def _tiny_checkpoint(path, pairs, space, fingerprint):
    from mcnflow.model.mcn import MCN
    torch.manual_seed(0)
    model = MCN(pairs, space, embd_dim=16, video_dim=DIM, word_dim=DIM, recon_size=8, audio_widths=(4, 4, 4, 4, 8))
    meta = {"pairs": pairs, "space": space, "model": dict(model.config),
            "word2vec": {"fingerprint": fingerprint}}
    torch.save({"model": model.state_dict(), "meta": meta}, path)
    return path


def _settings(b, task, pairs, space):
    """The evaluate stage's settings as the plan makes them (validated by the CLI against the schema)."""
    from mcnflow.core.config import load_config
    from mcnflow.core.plan import Plan

    config = load_config([Path(__file__).resolve().parents[1] / "config.yaml"])
    settings = json.loads(json.dumps(Plan(config).settings("evaluate", experiment="tv", seed=1,
                                                           benchmark="youcook2_retrieval")))
    settings.update(benchmark="bench", task=task, corpus="youcook2", spec=b["spec"], batch_size=32,
                    localization={"smoothing": 3, "threshold": 0.5, "iou_thresholds": [0.3, 0.5]},
                    exclude=None)   # tests/test_eval_protocols.py runs the HowTo100M exclusion
    settings["experiment"].update(pairs=pairs, space=space)
    settings["experiment"]["training"].update(max_words=20, audio_frames=300, device="cpu", word_dim=DIM,
                                              video_features=["2d"])
    return settings


@pytest.mark.parametrize("pairs, space, task, scoring, n_missing", [
    (["tv", "ta", "va"], "shared", "retrieval", "t.(v+a)", 2),
    (["tv", "ta", "va"], "per_pair", "localization", "t.v[tv]+t.a[ta]", 2),
    (["tv"], "shared", "retrieval", "t.v", 0),
    (["va"], "shared", "retrieval", "none", None),
])
def test_evaluate_cli_with_the_real_mcn(benchmark, pairs, space, task, scoring, n_missing, capsys):
    b = benchmark
    checkpoint = _tiny_checkpoint(b["dir"] / "model.pt", pairs, space, b["fingerprint"])
    settings = _settings(b, task, pairs, space)
    output = b["dir"] / "eval" / "exp" / "bench.json"
    code = cli_main(["evaluate", "--experiment", "exp", "--seed", "1", "--benchmark", "bench", "--settings", json.dumps(settings),
                     "--checkpoint", str(checkpoint), "--manifest", str(b["manifest"]), "--video", str(b["shards"]["video"]),
                     "--audio", str(b["shards"]["audio"]), "--text", str(b["shards"]["text"]),
                     "--word2vec", str(b["word2vec"]), "--output", str(output)])
    assert code == 0
    result = json.loads(output.read_text())
    assert {k: result[k] for k in ("experiment", "pairs", "space", "benchmark", "task", "scoring", "tie_policy")} == {
        "experiment": "exp", "pairs": pairs, "space": space, "benchmark": "bench", "task": task,
        "scoring": scoring, "tie_policy": "average"}
    assert result["n_missing"] == n_missing
    if scoring == "none":
        assert result["metrics"] == {} and result["note"] == NOT_TRAINED_NOTE
        return
    assert result["n_queries"] == 6
    keys = (["recall_at_1", "recall_at_5", "recall_at_10", "median_rank", "mean_rank"] if task == "retrieval"
            else ["mean_iou", "recall_at_iou_0.3", "recall_at_iou_0.5"])
    assert list(result["metrics"]) == keys
    assert all(math.isfinite(v) for v in result["metrics"].values())
    assert str(output) in capsys.readouterr().out


def test_a_checkpoint_of_another_experiment_is_refused(benchmark, capsys):
    b = benchmark
    checkpoint = _tiny_checkpoint(b["dir"] / "model.pt", ["tv"], "shared", b["fingerprint"])
    settings = _settings(b, "retrieval", ["ta"], "shared")
    code = cli_main(["evaluate", "--experiment", "exp", "--seed", "1", "--benchmark", "bench", "--settings", json.dumps(settings),
                     "--checkpoint", str(checkpoint), "--text", str(b["shards"]["text"]), "--audio", str(b["shards"]["audio"]),
                     "--word2vec", str(b["word2vec"]), "--output", str(b["dir"] / "out.json")])
    assert code == 2 and "trained with pairs ['tv']" in capsys.readouterr().err
    assert not (b["dir"] / "out.json").exists()


def test_oracle_recalls_every_crosstask_step(benchmark):
    from mcnflow.evaluation.crosstask import evaluate_steps
    from mcnflow.statistics import aggregate_value
    d = benchmark["dir"]
    (d / "videos.csv").write_text("101,vidAAAAAAA1,https://youtu.be/x\n101,vidAAAAAAA2,https://youtu.be/y\n"
                                  "202,vidAAAAAAA3,https://youtu.be/z\n202,vidMISSING01,https://youtu.be/w\n")
    (d / "tasks_primary.txt").write_text("101\nTask one\nhttps://x\n2\nw0,w1\n\n202\nTask two\nhttps://y\n2\nw4,w5\n\n")
    annotations = d / "annotations"
    annotations.mkdir()
    (annotations / "101_vidAAAAAAA1.csv").write_text("1,2.0,6.0\n2,10.0,15.0\n")
    # video 2 shows neither step of task 101 where they are annotated: its steps are w2/w3 rows
    (annotations / "101_vidAAAAAAA2.csv").write_text("1,5.0,8.0\n")
    truth = np.zeros((SECONDS, 2), dtype=np.uint8)
    truth[5:9, 0] = truth[14:19, 1] = 1
    np.save(annotations / "202_vidAAAAAAA3.npy", truth)
    files = {"videos": str(d / "videos.csv"), "steps": str(d / "tasks_primary.txt"), "annotations": str(annotations)}
    outcome = evaluate_steps(OracleModel(), choose_scoring(["tv"], "shared"), "crosstask", files, _features(benchmark),
                             8, torch.device("cpu"))
    assert (outcome.n_queries, outcome.n_missing) == (4, 1)
    # task 101: video 1 recall 1, video 2 recall 0 -> 50; task 202: video 3 recall 1 -> 100 over the
    # videos present (MCN's loader lists only videos with features), 50 with the missing one as recall 0
    assert outcome.extra["per_task"] == {"101": pytest.approx(50.0), "202": pytest.approx(100.0)}
    assert outcome.metrics == {"crosstask_recall": pytest.approx(75.0)}
    assert outcome.by_convention["failures"] == {"crosstask_recall": pytest.approx(50.0)}
    # each scored video's recall, with its task: the statistics' per-query values (a mean of task
    # means, 75; the plain mean over videos would be 66.7)
    per_query = outcome.extra["per_query"]
    assert per_query == {"keys": ["0:vidAAAAAAA1", "1:vidAAAAAAA2", "2:vidAAAAAAA3"],
                         "values": {"crosstask_recall": [pytest.approx(100.0), 0.0, pytest.approx(100.0)]},
                         "aggregate": {"crosstask_recall": "group_mean"}, "groups": ["101", "101", "202"]}
    assert aggregate_value(per_query["values"]["crosstask_recall"], "group_mean",
                           per_query["groups"]) == pytest.approx(outcome.metrics["crosstask_recall"])
    failures = evaluate_steps(OracleModel(), choose_scoring(["tv"], "shared"), "crosstask", files, _features(benchmark),
                              8, torch.device("cpu"), convention="failures")
    assert failures.extra["per_task"] == {"101": pytest.approx(50.0), "202": pytest.approx(50.0)}
    # failures: the missing video is a query too, with recall 0
    per_query = failures.extra["per_query"]
    assert per_query["keys"][-1] == "3:vidMISSING01" and per_query["groups"][-1] == "202"
    assert per_query["values"]["crosstask_recall"][-1] == 0.0
    assert aggregate_value(per_query["values"]["crosstask_recall"], "group_mean",
                           per_query["groups"]) == pytest.approx(failures.metrics["crosstask_recall"])


def test_msrvtt_whole_clip_queries(tmp_path):
    """MSR-VTT: one sentence per video, the clip is the whole video (end = inf); a video never
    extracted is a failed query, and R@K is still divided by every query (MCN's 1000)."""
    words = [f"w{i}" for i in range(DIM)]
    word2vec = write_word2vec(tmp_path / "word2vec.h5", words, np.eye(DIM, dtype=np.float32))
    (tmp_path / "test.csv").write_text("key;vid_key;video_id;sentence\n"
                                       + "".join(f"ret{i};msr{i};video{i};w{i}\n" for i in range(4)))
    spec = {"reader": "msrvtt", "csv": str(tmp_path / "test.csv"), "source": "local", "video_dir": str(tmp_path),
            "id_kind": "local"}
    corpus = open_corpus("msrvtt", spec)
    with ShardWriter(tmp_path / "video.h5", "video", "msrvtt", 0) as video:
        for i, vid in enumerate(corpus.video_ids()):
            if i < 3:  # video3 was never extracted
                features = np.zeros((7 + i, DIM), dtype=np.float16)
                features[-1, i] = 1.0   # only the last second shows it: the whole clip must be read
                video.add(vid, features)
    write_text_shard(tmp_path / "text.h5", "msrvtt", {vid: corpus.captions(vid) for vid in corpus.video_ids()}, word2vec)
    features = EvalFeatures.open(shards={"text": [tmp_path / "text.h5"], "video": [tmp_path / "video.h5"]},
                                 word2vec=tmp_path / "word2vec.h5", max_words=20, audio_frames=500, word_dim=DIM,
                                 fingerprint=word2vec.fingerprint)
    scoring = choose_scoring(["tv"], "shared")
    queries = align_queries(corpus.segments(), features, scoring.clip_modalities)
    outcome = evaluate_retrieval(OracleModel(), scoring, queries, features, "average", 2, torch.device("cpu"),
                                 convention="failures")
    assert (outcome.n_queries, outcome.n_missing) == (4, 1)
    assert outcome.missing_reasons == {"video: not extracted": 1}
    assert outcome.metrics["recall_at_1"] == pytest.approx(75.0)
    assert outcome.by_convention["present"]["recall_at_1"] == 100.0


@pytest.mark.parametrize("convention", ["present", "failures"])
def test_per_query_values_aggregate_to_the_metrics(benchmark, convention):
    """The per-query values the statistics resample are exactly the metrics' parts, in both conventions."""
    features = _features(benchmark)
    scoring = choose_scoring(["tv", "ta"], "shared")   # one video lacks audio: 2 missing queries
    queries = align_queries(benchmark["segments"], features, scoring.clip_modalities)

    class Noisy(OracleModel):  # imperfect ranks, so R@1 and the ranks are not all trivial
        def embed(self, modality, batch, space=None):
            out = super().embed(modality, batch, space)
            return out + 0.9 * torch.sin(torch.arange(out.numel(), dtype=torch.float32)).reshape(out.shape)

    for outcome in (evaluate_retrieval(Noisy(), scoring, queries, features, "average", 4, torch.device("cpu"),
                                       convention=convention),
                    evaluate_localization(Noisy(), scoring, queries, features,
                                          {"smoothing": 1, "threshold": 0.5, "iou_thresholds": [0.3, 0.5]}, 8,
                                          torch.device("cpu"), convention=convention)):
        per_query = outcome.extra["per_query"]
        assert len(per_query["keys"]) == (6 if convention == "failures" else 4)
        for metric, value in outcome.metrics.items():
            values = np.asarray(per_query["values"][metric])
            aggregate = np.median if per_query["aggregate"][metric] == "median" else np.mean
            assert aggregate(values) == pytest.approx(value), (metric, convention)
