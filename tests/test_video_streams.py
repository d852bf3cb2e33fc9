"""MCN's video input: 2D (1 row/s) and 3D (1.5 rows/s) features, each max-pooled over the clip and
L2-normalised on its own, then concatenated; the dataset reads both streams."""

import numpy as np
import pytest

from mcnflow.features.store import ShardWriter
from mcnflow.features.video_index import VideoIndex
from mcnflow.model import inputs as clips


def test_each_stream_is_cut_at_its_own_rate_pooled_normalised_then_concatenated():
    two_d = np.zeros((10, 3), dtype=np.float16)
    two_d[2, 0], two_d[3, 1] = 3.0, 4.0        # seconds 2 and 3
    three_d = np.zeros((15, 2), dtype=np.float16)
    three_d[3, 0] = 1.0                         # row 3 = [2.0, 2.67) s
    three_d[5, 1] = 7.0                         # row 5 = [3.33, 4.0) s: inside int(1.5*3)..int(1.5*3.5) = 4..5
    three_d[6, 1] = 100.0                       # row 6 starts at 4.0 s: outside the window
    item = clips.video_item({"2d": two_d, "3d": three_d}, 2.0, 3.5)["video"]
    assert item.shape == (5,)
    np.testing.assert_allclose(item[:3], [0.6, 0.8, 0.0], rtol=1e-6)                  # 2D, unit length
    np.testing.assert_allclose(item[3:], np.array([1.0, 7.0]) / np.hypot(1, 7), rtol=1e-3)  # 3D, unit length
    assert np.linalg.norm(item) == pytest.approx(np.sqrt(2), rel=1e-5)              # two unit vectors
    # the order is always 2D then 3D, whatever order the mapping has
    assert np.array_equal(clips.video_item({"3d": three_d, "2d": two_d}, 2.0, 3.5)["video"], item)
    # one stream alone is that stream's pooled feature
    np.testing.assert_allclose(clips.video_item({"2d": two_d}, 2.0, 3.5)["video"], item[:3])


def _shard(path, rows_attr, videos):
    with ShardWriter(path, "video", "tiny", 0, attrs=rows_attr) as writer:
        for video_id, data in videos.items():
            if data is None:
                writer.mark(video_id, "no_media")
            else:
                writer.add(video_id, data)
    return path


def test_video_index_needs_every_stream_and_checks_rates(tmp_path):
    two = _shard(tmp_path / "2d.h5", {"fps": 1}, {"a": np.ones((4, 3), np.float16), "b": np.ones((4, 3), np.float16),
                                                  "c": None})
    three = _shard(tmp_path / "3d.h5", {"rows_per_second": 1.5}, {"a": np.ones((6, 2), np.float16), "b": None})
    index = VideoIndex({"2d": [two], "3d": [three]}, "test")
    assert "a" in index and "b" not in index and "c" not in index
    assert index.status["a"] == "ok" and index.status["b"] == "3d: no_media" and index.status["c"] == "2d: no_media"
    assert {k: v.shape for k, v in index.read("a").items()} == {"2d": (4, 3), "3d": (6, 2)}
    assert index.video_ids() == ["a"]
    wrong = _shard(tmp_path / "wrong.h5", {"rows_per_second": 1.0}, {"a": np.ones((4, 2), np.float16)})
    with pytest.raises(ValueError, match="rows_per_second=1.0"):
        VideoIndex({"2d": [two], "3d": [wrong]}, "test")
    with pytest.raises(ValueError, match="no 3d shards"):
        VideoIndex({"2d": [two], "3d": []}, "test")


def test_training_reads_2d_and_3d_and_the_video_width_follows(tmp_path, one_torch_thread):
    from test_training import VIDEO_DIM, tiny_settings, write_corpus
    from mcnflow.features.store import ShardReader
    from mcnflow.model import load_model
    from mcnflow.training.trainer import train

    paths, _ = write_corpus(tmp_path / "corpus", shards=1)
    # a 3D stream at 1.5 rows/s made from the 2D rows (each second's row for the rows inside it)
    reader = ShardReader(paths["video"][0])
    three_d = {}
    for video_id in reader.video_ids():
        rows = reader.read(video_id)
        index = (np.arange(int(len(rows) * 1.5)) / 1.5).astype(int)
        three_d[video_id] = rows[index][:, : VIDEO_DIM // 2]
    reader.close()
    shard3d = _shard(tmp_path / "3d.h5", {"rows_per_second": 1.5}, three_d)
    settings = tiny_settings(pairs=("tv",), epochs=1, video_features=["2d", "3d"], video_dim=VIDEO_DIM + VIDEO_DIM // 2)
    out = train(settings, shards={"text": paths["text"], "video": paths["video"], "video3d": [shard3d]},
                out_dir=tmp_path / "out", experiment="tv")
    model, meta = load_model(out)
    assert meta["training"]["video_features"] == ["2d", "3d"] and model.config["video_dim"] == VIDEO_DIM * 3 // 2
    # the width must follow the streams: 2D alone with the 2D+3D width is refused
    with pytest.raises(Exception, match="video_dim"):
        train({**settings, "training": {**settings["training"], "video_features": ["2d"]}}, shards={name: paths[name] for name in ("text", "video")}, out_dir=tmp_path / "bad", experiment="tv")
