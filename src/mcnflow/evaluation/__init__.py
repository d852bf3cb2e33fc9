"""Evaluation of trained checkpoints: text-to-clip retrieval, temporal localization, CrossTask.

- :mod:`.metrics`: ranks with an explicit tie policy, R@K / median / mean rank;
- :mod:`.scoring`: which similarity an experiment is scored with (t.v, t.a, t.(v+a), per-pair sums);
- :mod:`.retrieval`, :mod:`.localization`, :mod:`.crosstask`: the three benchmarks;
- :mod:`.cli`: ``mcnflow evaluate``.
"""
