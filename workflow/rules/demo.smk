# Demo mode only: make the synthetic corpus and serve it over local HTTP while the workflow runs.
if DEMO:

    rule demo_corpus:
        output:
            PLAN.demo_files(),
        log:
            "logs/demo/demo_corpus.log",
        conda:
            "../../envs/media.yaml"
        threads: 1
        params:
            settings=stage_settings("demo"),
            out_dir=lambda wildcards, output: Path(output[0]).parents[1],
        shell:
            "python -m mcnflow demo-corpus --settings-file {params.settings} --out-dir {params.out_dir} > {log} 2>&1"

    onstart:
        start_demo_server()
