"""Evaluation of trained checkpoints, with MCN's protocols (docs/fidelity.md, section Evaluation).

- :mod:`.metrics`: ranks with an explicit tie policy, R@K / median / mean rank, and the two
  conventions for queries without features (ranked among the clips present / counted as failures);
- :mod:`.scoring`: which similarity an experiment is scored with (t.v, t.a, t.(v+a), per-pair sums);
- :mod:`.core`: text-to-clip retrieval (YouCook2 without HowTo100M's videos, MSR-VTT);
- :mod:`.crosstask`: step localization recall on CrossTask and Mining YouTube, as MCN's eval_cross.py;
- :mod:`.localization`: mcnflow's own YouCook2 IoU localization (not an MCN protocol);
- :mod:`.cli`: ``mcnflow evaluate``.
"""
