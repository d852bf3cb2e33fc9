# Decode each download once (mcnflow media): the same decode gives the normalize ledger, the 2D video
# and audio features, the 3D video features (when an experiment reads them) and, with normalize.keep, the normalized
# 454x256 @ 30 fps videos. One job per shard.


# Optional outputs: the 3D features (training.video_features 3d). The normalized videos (normalize.keep) are no
# output: Snakemake deletes a failed job's outputs, and they are hours of encoding. They go to params.videos_dir,
# the normalize ledger's path column points at them, and a rerun trusts one only through its journal row.
rule media_shard:
    input:
        "results/download/{corpus}/shard-{shard}.tsv",
    output:
        **(
            {
                "video3d": "results/features/{corpus}/video3d/shard-{shard}.h5",
                "video3d_ledger": "results/features/{corpus}/video3d/shard-{shard}.tsv",
            }
            if PLAN.uses_video3d()
            else {}
        ),
        ledger="results/normalize/{corpus}/shard-{shard}.tsv",
        video="results/features/{corpus}/video/shard-{shard}.h5",
        video_ledger="results/features/{corpus}/video/shard-{shard}.tsv",
        audio="results/features/{corpus}/audio/shard-{shard}.h5",
        audio_ledger="results/features/{corpus}/audio/shard-{shard}.tsv",
    log:
        "logs/media/{corpus}/shard-{shard}.log",
    benchmark:
        "benchmarks/results/media/{corpus}/shard-{shard}.tsv"
    conda:
        "../../envs/features.yaml"
    # the model thread plus the decoding workers (each runs one single-threaded ffmpeg)
    threads: PLAN.media_threads()
    resources:
        gpu=1,
    params:
        settings=stage_settings("media"),
        videos_dir="results/normalize/{corpus}/shard-{shard}",
        video3d=lambda wc, output: (
            f"--video3d-output {output.video3d} --video3d-ledger {output.video3d_ledger}"
            if "video3d" in output.keys()
            else ""
        ),
    shell:
        "OMP_NUM_THREADS={threads} python -m mcnflow media --download-ledger {input}"
        " --corpus {wildcards.corpus} --shard {wildcards.shard} --normalize-ledger {output.ledger}"
        " --video-output {output.video} --video-ledger {output.video_ledger}"
        " --audio-output {output.audio} --audio-ledger {output.audio_ledger}"
        " --videos-dir {params.videos_dir} {params.video3d} --quiet --settings-file {params.settings} > {log} 2>&1"
