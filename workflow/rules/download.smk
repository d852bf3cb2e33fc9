# Download each shard's videos with yt-dlp (or take local files); per-video outcomes in the ledger.


rule download_shard:
    input:
        "results/manifest/{corpus}.tsv",
    output:
        # update(): a forced rerun reads the old ledger and retries only its retryable rows.
        update("results/download/{corpus}/shard-{shard}.tsv"),
    log:
        "logs/download/{corpus}/shard-{shard}.log",
    benchmark:
        "benchmarks/results/download/{corpus}/shard-{shard}.tsv"
    retries: 2
    conda:
        "../../envs/download.yaml"
    threads: 1
    resources:
        **{
            route: (
                lambda wc, route=route: int(PLAN.route_resource(wc.shard) == route)
            )
            for route in PLAN.route_limits()
        },
        net=1,
    params:
        settings=stage_settings("download"),
        id_kind=lambda wc: CORPORA[wc.corpus]["id_kind"],
        videos_dir="results/download/{corpus}/videos",
    shell:
        "python -m mcnflow download --manifest {input} --shard {wildcards.shard} --id-kind {params.id_kind}"
        " --ledger {output} --videos-dir {params.videos_dir} --settings-file {params.settings} > {log} 2>&1"


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
    log:
        "logs/download/{corpus}/survival.log",
    conda:
        "../../envs/download.yaml"
    threads: 1
    shell:
        "python -m mcnflow survival --ledgers {input} --corpus {wildcards.corpus} --output {output} > {log} 2>&1"
