# One MCN training per experiment (a modality-pair combination and a space): the study's branches.


def training_inputs(wildcards):
    files = feature_files(TRAIN_CORPUS, experiment_modalities(wildcards.experiment))
    files["vocabulary"] = "results/features/vocabulary.h5"
    return files


def feature_args(inputs, modalities):
    return " ".join(f"--{m} " + " ".join(inputs[m]) for m in modalities)


rule train:
    input:
        unpack(training_inputs),
    output:
        model="results/train/{experiment}/model.pt",
        log_tsv="results/train/{experiment}/log.tsv",
    params:
        settings=experiment_params,
        features=lambda wc, input: feature_args(input, experiment_modalities(wc.experiment)),
        out_dir="results/train/{experiment}",
    conda:
        "../../envs/model.yaml"
    log:
        "logs/train/{experiment}.log",
    benchmark:
        "benchmarks/results/train/{experiment}.tsv"
    threads: 2
    resources:
        gpu=1,
    shell:
        "OMP_NUM_THREADS={threads} {MCNFLOW} train --experiment {wildcards.experiment}"
        " --settings {params.settings:q} {params.features} --vocabulary {input.vocabulary}"
        " --out-dir {params.out_dir} > {log} 2>&1"
