# Demo mode only: make the synthetic corpus and serve it over local HTTP while the workflow runs.
if DEMO:

    rule demo_corpus:
        output:
            [f.format(dir=DEMO["corpus_dir"]) for f in DEMO_CORPUS_FILES],
        log:
            "logs/demo/demo_corpus.log",
        conda:
            "../../envs/media.yaml"
        params:
            settings=lambda wc: canonical_json(DEMO),
            out_dir=lambda wildcards, output: Path(output[0]).parents[1],
        shell:
            "python -m mcnflow demo-corpus --settings {params.settings:q} --out-dir {params.out_dir} > {log} 2>&1"

    onstart:
        start_demo_server()
