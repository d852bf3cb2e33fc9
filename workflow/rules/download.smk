# Download each shard's videos with yt-dlp (or take local files); per-video outcomes in the ledger.


rule download_shard:
    input:
        "results/manifest/{corpus}.tsv",
    output:
        "results/download/{corpus}/shard-{shard}.tsv",
    params:
        settings=section("download"),
        id_kind=lambda wc: CORPORA[wc.corpus]["id_kind"],
        videos_dir="results/download/{corpus}/videos",
    conda:
        "../../envs/download.yaml"
    log:
        "logs/download/{corpus}/shard-{shard}.log",
    benchmark:
        "benchmarks/results/download/{corpus}/shard-{shard}.tsv"
    retries: 2
    resources:
        net=1,
    shell:
        "{MCNFLOW} download --manifest {input} --shard {wildcards.shard} --id-kind {params.id_kind}"
        " --ledger {output} --videos-dir {params.videos_dir} --settings {params.settings:q} > {log} 2>&1"


rule survival:
    input:
        shard_files("results/download/{corpus}/shard-{shard}.tsv"),
    output:
        report(
            "results/download/{corpus}/survival.tsv",
            caption="../report/survival.rst",
            category="Data",
            labels={"corpus": "{corpus}", "table": "survival"},
        ),
    conda:
        "../../envs/download.yaml"
    log:
        "logs/download/{corpus}/survival.log",
    shell:
        "{MCNFLOW} survival --ledgers {input} --corpus {wildcards.corpus} --output {output} > {log} 2>&1"
