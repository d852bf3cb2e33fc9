# One MCN training per experiment (a modality-pair combination and a space): the study's branches.


rule train:
    input:
        unpack(training_inputs),
    output:
        model="results/train/{experiment}/seed-{seed}/model.pt",
        log_tsv="results/train/{experiment}/seed-{seed}/log.tsv",
    log:
        "logs/train/{experiment}/seed-{seed}.log",
    benchmark:
        "benchmarks/results/train/{experiment}/seed-{seed}.tsv"
    conda:
        "../../envs/model.yaml"
    threads: PLAN.train_threads()
    resources:
        gpu=1,
    params:
        settings=stage_settings("train", "experiment", "seed"),
        features=lambda wc, input: feature_args(input),
        out_dir="results/train/{experiment}/seed-{seed}",
    shell:
        "OMP_NUM_THREADS={threads} python -m mcnflow train --experiment {wildcards.experiment} --seed {wildcards.seed}"
        " --settings-file {params.settings} {params.features}"
        " --out-dir {params.out_dir} > {log} 2>&1"
