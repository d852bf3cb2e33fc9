# Demo mode only: make the synthetic corpus and serve it over local HTTP while the workflow runs.
import atexit
import subprocess
import sys

DEMO_CORPUS_FILES = [
    "{dir}/howto100m/HowTo100M_v1.csv",
    "{dir}/howto100m/caption.json",
    "{dir}/youcook2/youcookii_annotations_trainval.json",
    "{dir}/msrvtt/MSRVTT_JSFUSION_test.csv",
]

if DEMO:

    rule demo_corpus:
        output:
            [f.format(dir=DEMO["corpus_dir"]) for f in DEMO_CORPUS_FILES],
        params:
            settings=lambda wc: canonical_json(DEMO),
            out_dir=DEMO["corpus_dir"],
        conda:
            "../../envs/media.yaml"
        log:
            "logs/demo/demo_corpus.log",
        shell:
            "{MCNFLOW} demo-corpus --settings {params.settings:q} --out-dir {params.out_dir} > {log} 2>&1"

    def start_demo_server():
        """Start `mcnflow demo-server` unless one already answers on the port; stop it when Snakemake exits."""
        from mcnflow.demo_server import served_root, wait_until_serving

        port = DEMO["port"]
        root = served_root(port)
        if root == str(Path(DEMO["corpus_dir"]).resolve()):
            return  # already serving this workflow's corpus (e.g. a second snakemake in the same directory)
        if root is not None:
            raise WorkflowError(f"port {port} serves another demo corpus ({root}); set demo.port to a free port")
        Path("logs/demo").mkdir(parents=True, exist_ok=True)
        server_log = open("logs/demo/server.log", "a")
        command = [sys.executable, "-m", "mcnflow", "demo-server", "--root", DEMO["corpus_dir"],
                   "--port", str(port), "--flaky", *DEMO.get("flaky", [])]
        server = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT)
        atexit.register(server.terminate)
        if not wait_until_serving(port):
            server.terminate()
            raise WorkflowError(f"the demo server did not start on port {port}; see logs/demo/server.log")

    onstart:
        start_demo_server()
