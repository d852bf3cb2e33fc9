# Per-shard HDF5 features: caption tokens with their word2vec vectors, and the feature tables. The video
# and audio features come from the media rule (workflow/rules/media.smk: one decode per video).


rule word2vec:
    # The one word2vec source every corpus's text features take their vectors from: the GoogleNews
    # binary, or a word2vec trained on the training corpus's captions only. It never depends on an
    # evaluation corpus, so adding or changing one never reruns training.
    input:
        unpack(word2vec_inputs),
    output:
        WORD2VEC,
    log:
        "logs/features/word2vec.log",
    conda:
        "../../envs/features.yaml"
    threads: 1
    params:
        settings=stage_settings("word2vec"),
        sources=lambda wc, input: word2vec_args(input),
    shell:
        "python -m mcnflow extract word2vec {params.sources} --output {output}"
        " --settings-file {params.settings} > {log} 2>&1"


rule extract_text:
    input:
        manifest="results/manifest/{corpus}.tsv",
        download="results/download/{corpus}/shard-{shard}.tsv",
        normalize="results/normalize/{corpus}/shard-{shard}.tsv",
        word2vec=WORD2VEC,
    output:
        features="results/features/{corpus}/text/shard-{shard}.h5",
        ledger="results/features/{corpus}/text/shard-{shard}.tsv",
    log:
        "logs/features/{corpus}/text/shard-{shard}.log",
    conda:
        "../../envs/features.yaml"
    threads: 1
    params:
        settings=stage_settings("features.text", "corpus"),
    shell:
        "python -m mcnflow extract text --corpus {wildcards.corpus} --settings-file {params.settings}"
        " --manifest {input.manifest} --shard {wildcards.shard} --download-ledger {input.download}"
        " --normalize-ledger {input.normalize} --word2vec {input.word2vec}"
        " --output {output.features} --ledger {output.ledger} > {log} 2>&1"


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
    threads: 1
    shell:
        "python -m mcnflow feature-stats --corpus {wildcards.corpus} --ledgers {input}"
        " --output {output} > {log} 2>&1"
