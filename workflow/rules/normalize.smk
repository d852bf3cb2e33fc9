# Normalize each shard to 454x256 @ 30 fps with 16 kHz mono audio, verified with ffprobe.


rule normalize_shard:
    input:
        "results/download/{corpus}/shard-{shard}.tsv",
    output:
        ledger="results/normalize/{corpus}/shard-{shard}.tsv",
        videos=normalized_videos(directory("results/normalize/{corpus}/shard-{shard}")),
    log:
        "logs/normalize/{corpus}/shard-{shard}.log",
    benchmark:
        "benchmarks/results/normalize/{corpus}/shard-{shard}.tsv"
    conda:
        "../../envs/media.yaml"
    threads: config["normalize"]["threads"]
    params:
        settings=stage_settings("normalize"),
    shell:
        "python -m mcnflow normalize --download-ledger {input} --ledger {output.ledger} --out-dir {output.videos}"
        " --settings-file {params.settings} > {log} 2>&1"
