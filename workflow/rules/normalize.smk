# Normalize each shard to 454x256 @ 30 fps with 16 kHz mono audio, verified with ffprobe.


def normalized_videos(path):
    # normalize.keep: false makes the normalized copies temporary (removed once features exist).
    return path if config["normalize"]["keep"] else temp(path)


rule normalize_shard:
    input:
        "results/download/{corpus}/shard-{shard}.tsv",
    output:
        ledger="results/normalize/{corpus}/shard-{shard}.tsv",
        videos=normalized_videos(directory("results/normalize/{corpus}/shard-{shard}")),
    params:
        settings=section("normalize"),
    conda:
        "../../envs/media.yaml"
    log:
        "logs/normalize/{corpus}/shard-{shard}.log",
    benchmark:
        "benchmarks/results/normalize/{corpus}/shard-{shard}.tsv"
    threads: 1
    shell:
        "{MCNFLOW} normalize --download-ledger {input} --ledger {output.ledger} --out-dir {output.videos}"
        " --settings {params.settings:q} > {log} 2>&1"
