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
    threads: 1
    params:
        settings=stage_settings("manifest", "corpus"),
    shell:
        "python -m mcnflow manifest --corpus {wildcards.corpus} --settings-file {params.settings}"
        " --output {output} > {log} 2>&1"
