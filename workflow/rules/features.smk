# Per-shard HDF5 features: ResNet152 video, DaveNet log-mel audio, word2vec caption tokens.


rule extract_video:
    input:
        ledger="results/normalize/{corpus}/shard-{shard}.tsv",
        videos="results/normalize/{corpus}/shard-{shard}",
    output:
        features="results/features/{corpus}/video/shard-{shard}.h5",
        ledger="results/features/{corpus}/video/shard-{shard}.tsv",
    params:
        settings=feature_settings("video"),
    conda:
        "../../envs/features.yaml"
    log:
        "logs/features/{corpus}/video/shard-{shard}.log",
    benchmark:
        "benchmarks/results/features/{corpus}/video/shard-{shard}.tsv"
    threads: 2
    resources:
        gpu=1,
    shell:
        "OMP_NUM_THREADS={threads} {MCNFLOW} extract video --normalize-ledger {input.ledger}"
        " --corpus {wildcards.corpus} --shard {wildcards.shard} --output {output.features}"
        " --ledger {output.ledger} --settings {params.settings:q} > {log} 2>&1"


rule extract_audio:
    input:
        ledger="results/normalize/{corpus}/shard-{shard}.tsv",
        videos="results/normalize/{corpus}/shard-{shard}",
    output:
        features="results/features/{corpus}/audio/shard-{shard}.h5",
        ledger="results/features/{corpus}/audio/shard-{shard}.tsv",
    params:
        settings=feature_settings("audio"),
    conda:
        "../../envs/features.yaml"
    log:
        "logs/features/{corpus}/audio/shard-{shard}.log",
    benchmark:
        "benchmarks/results/features/{corpus}/audio/shard-{shard}.tsv"
    shell:
        "{MCNFLOW} extract audio --normalize-ledger {input.ledger}"
        " --corpus {wildcards.corpus} --shard {wildcards.shard} --output {output.features}"
        " --ledger {output.ledger} --settings {params.settings:q} > {log} 2>&1"


rule vocabulary:
    input:
        manifests=expand("results/manifest/{corpus}.tsv", corpus=FEATURE_CORPORA),
        ledgers=[corpus_shard_files("results/download/{corpus}/shard-{shard}.tsv", c) for c in FEATURE_CORPORA],
    output:
        "results/features/vocabulary.h5",
    params:
        corpora=lambda wc: canonical_json({c: CORPORA[c] for c in FEATURE_CORPORA}),
        train_corpus=TRAIN_CORPUS,
        settings=section("features", "text"),
    conda:
        "../../envs/features.yaml"
    log:
        "logs/features/vocabulary.log",
    shell:
        "{MCNFLOW} extract vocabulary --corpora {params.corpora:q} --train-corpus {params.train_corpus}"
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
    params:
        spec=corpus_spec,
        settings=feature_settings("text"),
    conda:
        "../../envs/features.yaml"
    log:
        "logs/features/{corpus}/text/shard-{shard}.log",
    shell:
        "{MCNFLOW} extract text --corpus {wildcards.corpus} --corpus-spec {params.spec:q}"
        " --manifest {input.manifest} --shard {wildcards.shard} --download-ledger {input.download}"
        " --normalize-ledger {input.normalize} --vocabulary {input.vocabulary}"
        " --output {output.features} --ledger {output.ledger} --settings {params.settings:q} > {log} 2>&1"
