"""Decode each video once: one ffmpeg process per download feeds every consumer.

    decode.py     the ffmpeg filter graph with several outputs (normalized .mp4 or a counted null
                  output, RGB pipes per frame rate, a 16 kHz audio pipe) and the threads that read them
    consumers.py  what is made of the streams: 2D ResNet-152 frames, log-mel audio, 3D ResNeXt clips
    stage.py      ``mcnflow media``: one resumable job per shard writing the normalize ledger, the
                  feature files and ledgers, and (normalize.keep) the normalized videos
    gpu.py        ``media.decode: cuda``: the 2D frames decoded with torchcodec on the GPU (opt-in)
"""
