# Each experiment's checkpoint on each benchmark (text -> video retrieval, temporal localization).


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        "results/eval/{experiment}/seed-{seed}/{benchmark}.json",
    log:
        "logs/eval/{experiment}/seed-{seed}/{benchmark}.log",
    conda:
        "../../envs/model.yaml"
    threads: 1
    params:
        settings=stage_settings("evaluate", "experiment", "seed", "benchmark"),
        features=lambda wc, input: feature_args(input),
    shell:
        "OMP_NUM_THREADS={threads} python -m mcnflow evaluate --experiment {wildcards.experiment} --seed {wildcards.seed}"
        " --benchmark {wildcards.benchmark} --settings-file {params.settings} --checkpoint {input.checkpoint}"
        " --manifest {input.manifest} {params.features} --word2vec {input.word2vec}"
        " --output {output} > {log} 2>&1"
