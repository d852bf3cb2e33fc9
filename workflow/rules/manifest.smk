# Corpus -> manifest (video_id, shard, source): the start of the data flow.


def manifest_inputs(wildcards):
    files = corpus_input_files(wildcards.corpus)
    if DEMO:
        demo_outputs = [f.format(dir=DEMO["corpus_dir"]) for f in DEMO_CORPUS_FILES]
        return [f for f in files if f in demo_outputs] + [f for f in files if f not in demo_outputs]
    return files


rule manifest:
    input:
        manifest_inputs,
    output:
        "results/manifest/{corpus}.tsv",
    params:
        spec=corpus_spec,
        shard_size=config["shard_size"],
    conda:
        "../../envs/download.yaml"
    log:
        "logs/manifest/{corpus}.log",
    shell:
        "{MCNFLOW} manifest --corpus {wildcards.corpus} --corpus-spec {params.spec:q}"
        " --shard-size {params.shard_size} --output {output} > {log} 2>&1"
