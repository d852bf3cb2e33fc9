# Per-shard HDF5 features: ResNet152 video, DaveNet log-mel audio, word2vec caption tokens.


rule extract_video:
    input:
        ledger="results/normalize/{corpus}/shard-{shard}.tsv",
        videos="results/normalize/{corpus}/shard-{shard}",
    output:
        features="results/features/{corpus}/video/shard-{shard}.h5",
        ledger="results/features/{corpus}/video/shard-{shard}.tsv",
    log:
        "logs/features/{corpus}/video/shard-{shard}.log",
    benchmark:
        "benchmarks/results/features/{corpus}/video/shard-{shard}.tsv"
    conda:
        "../../envs/features.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        settings=feature_settings("video"),
    shell:
        "OMP_NUM_THREADS={threads} python -m mcnflow extract video --normalize-ledger {input.ledger}"
        " --corpus {wildcards.corpus} --shard {wildcards.shard} --output {output.features}"
        " --ledger {output.ledger} --settings {params.settings:q} > {log} 2>&1"


rule extract_audio:
    input:
        ledger="results/normalize/{corpus}/shard-{shard}.tsv",
        videos="results/normalize/{corpus}/shard-{shard}",
    output:
        features="results/features/{corpus}/audio/shard-{shard}.h5",
        ledger="results/features/{corpus}/audio/shard-{shard}.tsv",
    log:
        "logs/features/{corpus}/audio/shard-{shard}.log",
    benchmark:
        "benchmarks/results/features/{corpus}/audio/shard-{shard}.tsv"
    conda:
        "../../envs/features.yaml"
    params:
        settings=feature_settings("audio"),
    shell:
        "python -m mcnflow extract audio --normalize-ledger {input.ledger}"
        " --corpus {wildcards.corpus} --shard {wildcards.shard} --output {output.features}"
        " --ledger {output.ledger} --settings {params.settings:q} > {log} 2>&1"


rule vocabulary:
    input:
        manifests=expand("results/manifest/{corpus}.tsv", corpus=FEATURE_CORPORA),
        ledgers=[
            corpus_shard_files("results/download/{corpus}/shard-{shard}.tsv", c)
            for c in FEATURE_CORPORA
        ],
    output:
        "results/features/vocabulary.h5",
    log:
        "logs/features/vocabulary.log",
    conda:
        "../../envs/features.yaml"
    params:
        corpora=lambda wc: canonical_json({c: CORPORA[c] for c in FEATURE_CORPORA}),
        train_corpus=TRAIN_CORPUS,
        settings=section("features", "text"),
    shell:
        "python -m mcnflow extract vocabulary --corpora {params.corpora:q} --train-corpus {params.train_corpus}"
        " --manifests {input.manifests} --download-ledgers {input.ledgers} --output {output}"
        " --settings {params.settings:q} > {log} 2>&1"


rule extract_text:
    input:
        manifest="results/manifest/{corpus}.tsv",
        download="results/download/{corpus}/shard-{shard}.tsv",
        normalize="results/normalize/{corpus}/shard-{shard}.tsv",
        vocabulary="results/features/vocabulary.h5",
    output:
        features="results/features/{corpus}/text/shard-{shard}.h5",
        ledger="results/features/{corpus}/text/shard-{shard}.tsv",
    log:
        "logs/features/{corpus}/text/shard-{shard}.log",
    conda:
        "../../envs/features.yaml"
    params:
        spec=corpus_spec,
        settings=feature_settings("text"),
    shell:
        "python -m mcnflow extract text --corpus {wildcards.corpus} --corpus-spec {params.spec:q}"
        " --manifest {input.manifest} --shard {wildcards.shard} --download-ledger {input.download}"
        " --normalize-ledger {input.normalize} --vocabulary {input.vocabulary}"
        " --output {output.features} --ledger {output.ledger} --settings {params.settings:q} > {log} 2>&1"


rule feature_stats:
    input:
        shard_files("results/features/{corpus}/video/shard-{shard}.tsv"),
        shard_files("results/features/{corpus}/audio/shard-{shard}.tsv"),
        shard_files("results/features/{corpus}/text/shard-{shard}.tsv"),
    output:
        report(
            "results/features/{corpus}/stats.tsv",
            caption="../report/feature_stats.rst",
            category="Data",
            labels={"corpus": "{corpus}", "table": "features"},
        ),
    log:
        "logs/features/{corpus}/stats.log",
    conda:
        "../../envs/download.yaml"
    shell:
        "python -m mcnflow feature-stats --corpus {wildcards.corpus} --ledgers {input}"
        " --output {output} > {log} 2>&1"
