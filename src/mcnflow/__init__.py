"""mcnflow: HowTo100M -> MCN pre-training -> retrieval and localization results.

The package root is the architecture; data flows one way, top to bottom, and no stage imports a
stage below it or beside it:

    manifest.py      corpus files -> sharded manifest            (corpora/: one reader per format)
    caption_split.py caption.json -> one caption file per shard  (read once: ~8 GB for 1.22M videos)
    download/        manifest -> videos + download ledger          (yt-dlp; retry policy; canary)
    media/           downloads -> one decode per video -> normalize ledger (+ kept 454x256 @ 30 fps mp4),
                     2D / 3D video and audio features         (normalize.py: the normalization itself)
    features/        the extractors (ResNet152, ResNeXt-101 3D, log-mel, text) and the one word2vec source
    model/           the MCN network, its losses and its inputs    (shared by training and evaluation)
    training/        features -> checkpoints, one per experiment
    evaluation/      checkpoints + benchmark features -> metrics   (evaluation/core.py: the shared core)
    report.py        metrics -> summary table, plots

    core/            what every stage uses: the config schema and the settings plan (core/plan.py),
                     frozen settings, atomic files, ledgers and the per-shard runner, status enums,
                     ids, shards, media probing, device choice
    demo/            the offline demo corpus and the local server yt-dlp downloads it from
    cli.py           ``mcnflow <stage>``: the only entry point the Snakemake rules call
"""

__version__ = "0.1.0"
