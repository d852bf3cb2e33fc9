# Decode each download once (mcnflow media): the same decode gives the normalize ledger, the 2D video
# and audio features, the 3D video features (when an experiment reads them) and, with normalize.keep, the normalized
# 454x256 @ 30 fps videos. One job per shard.


# Outputs: one HDF5 file and ledger per feature stream the job makes (PLAN.media_streams(): the 3D features
# only when an experiment's training.video_features has 3d). The normalized videos (normalize.keep) are no
# output: Snakemake deletes a failed job's outputs, and they are hours of encoding. They go to params.videos_dir,
# the normalize ledger's path column points at them, and a rerun trusts one only through its journal row.
rule media_shard:
    input:
        "results/download/{corpus}/shard-{shard}.tsv",
    output:
        # per stream the job makes (mcnflow.core.streams; 3D only when an experiment reads it)
        **media_outputs(),
        ledger="results/normalize/{corpus}/shard-{shard}.tsv",
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
        outputs=media_output_args,
    shell:
        "OMP_NUM_THREADS={threads} python -m mcnflow media --download-ledger {input}"
        " --corpus {wildcards.corpus} --shard {wildcards.shard} --normalize-ledger {output.ledger}"
        " {params.outputs} --videos-dir {params.videos_dir} --quiet --settings-file {params.settings} > {log} 2>&1"
