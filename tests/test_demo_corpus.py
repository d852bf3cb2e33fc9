import json
import subprocess
import urllib.error
import urllib.request

import pytest

from mcnflow.caption_split import split_captions
from mcnflow.core.config import load_config
from mcnflow.corpora import open_corpus
from mcnflow.demo.corpus import ACTION_MANNER, ACTIONS, INGREDIENTS, make_demo_corpus, planned_video_ids
from mcnflow.demo.server import make_server

from conftest import require_ffmpeg


@pytest.fixture(scope="module")
def demo_settings(repo_root):
    config = load_config([repo_root / "config.yaml", repo_root / "demo/config.yaml"])
    demo = dict(config["demo"], train_videos=4, eval_videos=2, msrvtt_videos=2, steps_per_video=2,
                step_seconds=2.0, gone=["demo0000001"], flaky=["demo0000002"], no_audio=["demo0000003"])
    return config, demo


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory, demo_settings):
    require_ffmpeg()
    out = tmp_path_factory.mktemp("demo")
    make_demo_corpus(demo_settings[1], out)
    return out


def _probe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height,r_frame_rate",
                          "-show_entries", "format=duration", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_corpus_is_readable_by_the_real_readers(corpus_dir, demo_settings, tmp_path):
    config, demo = demo_settings
    ids = planned_video_ids(demo)
    train = open_corpus("howto100m", dict(config["corpora"]["howto100m"],
                                          videos_csv=str(corpus_dir / "howto100m/HowTo100M_v1.csv"),
                                          captions=str(corpus_dir / "howto100m/caption.json")))
    assert train.video_ids() == ids["howto100m"]
    # caption.json is read per shard, as the workflow's split_captions job writes it
    manifest = tmp_path / "howto100m.tsv"
    manifest.write_text("video_id\tshard\tsource\n" + "".join(f"{v}\t00000\t-\n" for v in ids["howto100m"]))
    split_captions(train, str(manifest), tmp_path / "captions", buffer_bytes=1 << 20)
    train.open_caption_shard(tmp_path / "captions" / "shard-00000.jsonl")
    caption = train.captions("demo0000000")[0]
    # "<filler> <action> the <colour> <ingredient> <manner>", e.g. "now we chop the red tomato into cubes"
    assert any(caption.text.endswith(f" {action} the {colour} {ingredient} {ACTION_MANNER[action]}")
               for action in ACTIONS for ingredient, colour in INGREDIENTS.items()), caption.text
    youcook = open_corpus("youcook2", dict(config["corpora"]["youcook2"],
                                           annotations=str(corpus_dir / "youcook2/youcookii_annotations_trainval.json")))
    segments = youcook.segments()
    assert len(segments) == 4
    assert len({s.sentence for s in segments}) == 4, "evaluation steps must be unique combinations"
    msrvtt = open_corpus("msrvtt", dict(config["corpora"]["msrvtt"],
                                        csv=str(corpus_dir / "msrvtt/MSRVTT_JSFUSION_test.csv"),
                                        video_dir=str(corpus_dir / "msrvtt/videos")))
    assert msrvtt.video_ids() == ids["msrvtt"]


def test_videos_show_the_planned_steps(corpus_dir):
    assert not (corpus_dir / "howto100m/videos/demo0000001.mp4").exists()  # gone
    info = _probe(corpus_dir / "howto100m/videos/demo0000000.mp4")
    kinds = [s["codec_type"] for s in info["streams"]]
    assert kinds == ["video", "audio"] and float(info["format"]["duration"]) == pytest.approx(4.0, abs=0.1)
    assert [s["codec_type"] for s in _probe(corpus_dir / "howto100m/videos/demo0000003.mp4")["streams"]] == ["video"]
    ms = _probe(corpus_dir / "msrvtt/videos/video9000.mp4")["streams"][0]
    assert (ms["width"], ms["height"], ms["r_frame_rate"]) == (320, 240, "25/1")


def test_server_serves_404s_and_fails_flaky_ids_once(corpus_dir):
    import threading

    server = make_server(corpus_dir, 0, ["demo0000002"])
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}/howto100m"
        with urllib.request.urlopen(f"{base}/demo0000000.mp4") as response:
            body = response.read()
        assert body == (corpus_dir / "howto100m/videos/demo0000000.mp4").read_bytes()
        with pytest.raises(urllib.error.HTTPError) as gone:
            urllib.request.urlopen(f"{base}/demo0000001.mp4")
        assert gone.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as flaky:
            urllib.request.urlopen(f"{base}/demo0000002.mp4")
        assert flaky.value.code == 503
        with urllib.request.urlopen(f"{base}/demo0000002.mp4") as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as escape:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/../../etc/passwd")
        assert escape.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_mining_youtube_set_is_read_by_its_reader(corpus_dir, demo_settings):
    """The Mining-YouTube-format set: videos_test.txt and one .srt per video, read by the real reader."""
    config, demo = demo_settings
    ids = planned_video_ids(demo)["mining_youtube"]
    assert len(ids) == demo["mining_youtube_videos"] > 0
    corpus = open_corpus("mining_youtube", dict(config["corpora"]["mining_youtube"],
                                                videos=str(corpus_dir / "mining_youtube/videos_test.txt"),
                                                annotations=str(corpus_dir / "mining_youtube/annotations")))
    assert corpus.video_ids() == ids
    step = demo["step_seconds"]
    for vid in ids:
        steps = corpus.steps(vid)
        assert [(s.start, s.end) for s in steps] == [(k * step, (k + 1) * step) for k in range(demo["steps_per_video"])]
        action, ingredient = steps[0].sentence.split()
        assert action in ACTIONS and ingredient in INGREDIENTS
        assert len({s.label for s in steps}) == len(steps)
        info = _probe(corpus_dir / "mining_youtube/videos" / f"{vid}.mp4")
        assert float(info["format"]["duration"]) == pytest.approx(len(steps) * step, abs=0.1)


def test_demo_captions_give_each_ingredient_and_action_its_own_word_vector(demo_settings):
    """word2vec on the demo's own captions (features.text.word2vec.source: train) tells the words that
    name a step apart: the colour and manner words give each ingredient and action its own context.
    With the old "<filler> <action> the <ingredient>" captions these cosines were 0.97 (text at chance)."""
    import random

    import numpy as np

    from mcnflow.demo.corpus import Step, _caption
    from mcnflow.features.captions import words_of
    from mcnflow.features.word2vec import trained_vectors

    config, demo = demo_settings
    rng = random.Random(demo["seed"])
    steps = [Step(a, i) for a in ACTIONS for i in INGREDIENTS]
    captions = [_caption(rng.choice(steps), rng) for _ in range(64)]   # the demo's 16 videos x 4 steps
    assert all(INGREDIENTS[s.ingredient] in c and ACTION_MANNER[s.action] in c
               for s, c in zip(steps, [_caption(s, rng) for s in steps]))
    words = trained_vectors(config["features"]["text"]["word2vec"], [words_of(c) for c in captions], "demo")
    vectors = dict(zip(words.words, words.vectors))

    def mean_cosine(names):
        rows = np.stack([vectors[n] / np.linalg.norm(vectors[n]) for n in names])
        return float((rows @ rows.T)[~np.eye(len(names), dtype=bool)].mean())

    assert mean_cosine(list(INGREDIENTS)) < 0.5
    assert mean_cosine(list(ACTIONS)) < 0.5
