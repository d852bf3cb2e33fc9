# Corpus -> manifest (video_id, shard, source): the start of the data flow.


rule manifest:
    input:
        manifest_inputs,
    output:
        "results/manifest/{corpus}.tsv",
    log:
        "logs/manifest/{corpus}.log",
    conda:
        "../../envs/download.yaml"
    params:
        spec=corpus_spec,
        shard_size=config["shard_size"],
    shell:
        "python -m mcnflow manifest --corpus {wildcards.corpus} --corpus-spec {params.spec:q}"
        " --shard-size {params.shard_size} --output {output} > {log} 2>&1"
