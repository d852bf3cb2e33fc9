# Each experiment's checkpoint on each benchmark (text -> video retrieval, temporal localization).


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        "results/eval/{experiment}/{benchmark}.json",
    log:
        "logs/eval/{experiment}/{benchmark}.log",
    conda:
        "../../envs/model.yaml"
    threads: 1
    params:
        settings=evaluation_params,
        corpus=lambda wc: BENCHMARKS[wc.benchmark]["corpus"],
        spec=lambda wc: canonical_json(CORPORA[BENCHMARKS[wc.benchmark]["corpus"]]),
        features=lambda wc, input: feature_args(input, MODALITIES),
    shell:
        "OMP_NUM_THREADS={threads} python -m mcnflow evaluate --experiment {wildcards.experiment}"
        " --benchmark {wildcards.benchmark} --settings {params.settings:q} --checkpoint {input.checkpoint}"
        " --corpus {params.corpus} --corpus-spec {params.spec:q} --manifest {input.manifest}"
        " {params.features} --vocabulary {input.vocabulary} --output {output} > {log} 2>&1"
