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
    threads: 1
    params:
        settings=section("normalize"),
    shell:
        "python -m mcnflow normalize --download-ledger {input} --ledger {output.ledger} --out-dir {output.videos}"
        " --settings {params.settings:q} > {log} 2>&1"
