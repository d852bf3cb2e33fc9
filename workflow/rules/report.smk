# Every experiment's metrics -> the study's answer (summary.md, answer.rst: the HTML report's first page),
# summary.csv, statistics.csv, pair_effects.csv, power.csv and plots.


localrules:
    manifest,
    survival,
    feature_stats,
    summarize,


rule summarize:
    input:
        metrics=evaluation_files(),
        train_logs=branch_files("results/train/{experiment}/seed-{seed}/log.tsv"),
        survival=expand("results/download/{corpus}/survival.tsv", corpus=CORPORA),
    output:
        csv=report(
            "results/summary.csv", caption="../report/summary.rst", category="Results"
        ),
        markdown="results/summary.md",
        answer="results/answer.rst",
        statistics=report(
            "results/statistics.csv",
            caption="../report/statistics.rst",
            category="Results",
        ),
        pair_effects=report(
            "results/pair_effects.csv",
            caption="../report/pair_effects.rst",
            category="Results",
        ),
        power=report(
            "results/power.csv", caption="../report/power.rst", category="Results"
        ),
        plots=report(
            directory("results/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Results",
        ),
    log:
        "logs/report/summarize.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    params:
        settings=stage_settings("summarize"),
    shell:
        "python -m mcnflow summarize --metrics {input.metrics} --train-logs {input.train_logs}"
        " --survival {input.survival} --out-dir results --settings-file {params.settings} > {log} 2>&1"
