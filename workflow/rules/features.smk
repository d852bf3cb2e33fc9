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


rule split_captions:
    # HowTo100M's caption.json (~8 GB for 1.22M videos) streamed once into one caption file per
    # manifest shard, so each extract_text job reads only its own shard's captions.
    input:
        manifest="results/manifest/{corpus}.tsv",
        captions=lambda wc: PLAN.caption_file(wc.corpus),
    output:
        directory("results/captions/{corpus}"),
    log:
        "logs/captions/{corpus}.log",
    benchmark:
        "benchmarks/results/split_captions/{corpus}.tsv"
    conda:
        "../../envs/features.yaml"
    threads: 1
    params:
        settings=stage_settings("split_captions", "corpus"),
    shell:
        "python -m mcnflow split-captions --corpus {wildcards.corpus} --manifest {input.manifest}"
        " --output {output} --settings-file {params.settings} > {log} 2>&1"


rule extract_text:
    input:
        unpack(text_caption_inputs),
        manifest="results/manifest/{corpus}.tsv",
        download="results/download/{corpus}/shard-{shard}.tsv",
        normalize="results/normalize/{corpus}/shard-{shard}.tsv",
        word2vec=WORD2VEC,
    output:
        features="results/features/{corpus}/text/shard-{shard}.h5",
        ledger="results/features/{corpus}/text/shard-{shard}.tsv",
    log:
        "logs/features/{corpus}/text/shard-{shard}.log",
    benchmark:
        "benchmarks/results/text/{corpus}/shard-{shard}.tsv"
    conda:
        "../../envs/features.yaml"
    threads: 1
    params:
        settings=stage_settings("features.text", "corpus"),
        captions=lambda wc, input: text_captions_arg(wc, input),
    shell:
        "python -m mcnflow extract text --corpus {wildcards.corpus} --settings-file {params.settings}"
        " --manifest {input.manifest} --shard {wildcards.shard} --download-ledger {input.download}"
        " {params.captions}"
        " --normalize-ledger {input.normalize} --word2vec {input.word2vec}"
        " --output {output.features} --ledger {output.ledger} > {log} 2>&1"


rule feature_stats:
    input:
        stats_inputs,
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
