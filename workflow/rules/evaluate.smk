# Each experiment's checkpoint on each benchmark (text -> video retrieval, temporal localization).


def evaluation_inputs(wildcards):
    corpus = BENCHMARKS[wildcards.benchmark]["corpus"]
    files = feature_files(corpus, MODALITIES)
    files["checkpoint"] = f"results/train/{wildcards.experiment}/model.pt"
    files["manifest"] = f"results/manifest/{corpus}.tsv"
    files["vocabulary"] = "results/features/vocabulary.h5"
    return files


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        "results/eval/{experiment}/{benchmark}.json",
    params:
        settings=evaluation_params,
        corpus=lambda wc: BENCHMARKS[wc.benchmark]["corpus"],
        spec=lambda wc: canonical_json(CORPORA[BENCHMARKS[wc.benchmark]["corpus"]]),
        features=lambda wc, input: feature_args(input, MODALITIES),
    conda:
        "../../envs/model.yaml"
    log:
        "logs/eval/{experiment}/{benchmark}.log",
    threads: 1
    shell:
        "OMP_NUM_THREADS={threads} {MCNFLOW} evaluate --experiment {wildcards.experiment}"
        " --benchmark {wildcards.benchmark} --settings {params.settings:q} --checkpoint {input.checkpoint}"
        " --corpus {params.corpus} --corpus-spec {params.spec:q} --manifest {input.manifest}"
        " {params.features} --vocabulary {input.vocabulary} --output {output} > {log} 2>&1"
