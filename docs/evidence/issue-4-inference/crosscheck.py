"""gpucert loadgen against `vllm bench serve` on the same server (run on the GPU node by
run-crosscheck.sh): both clients take turns on one vLLM (the preset with dummy weights, a real Qwen
tokenizer so vLLM's bench can send its text prompts, prefix caching off so neither client gets
the other's cache), at the same concurrency, request count, 128 in / 256 out, ignore_eos. The
figures should agree within run-to-run noise; where they differ, the table shows by how much.
    python crosscheck.py OUT_DIR TOKENIZER_DIR"""

import json
import subprocess
import sys
from pathlib import Path

from gpucert.serving.vllm_config import default_config
from gpucert.serving.vllm_server import VllmServer

LEVELS = ((1, 16), (64, 256), (256, 1024))  # (concurrency, requests)
# turns each client takes per level, alternating (A B A B): session 4 saw TPOT 2.51 ms (bench) against
# 2.83 ms (gpucert) at one stream from one turn each; a second turn shows whether that is noise
TURNS = {1: 2}
INPUT_LEN, OUTPUT_LEN = 128, 256


def vllm_bench(base: str, model: str, tokenizer: str, concurrency: int, requests: int, seed: int, out: Path,
               turn: int = 0) -> dict:
    name = f"vllm_c{concurrency}" + (f"_t{turn}" if turn else "") + ".json"
    argv = [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve", "--backend", "vllm",
            "--base-url", base, "--endpoint", "/v1/completions", "--model", model, "--tokenizer", tokenizer,
            "--dataset-name", "random", "--random-input-len", str(INPUT_LEN), "--random-output-len", str(OUTPUT_LEN),
            "--ignore-eos", "--max-concurrency", str(concurrency), "--num-prompts", str(requests),
            "--request-rate", "inf", "--seed", str(seed), "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,99", "--save-result", "--result-dir", str(out), "--result-filename", name]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    (out / name.replace(".json", ".log")).write_text(run.stdout[-20000:] + run.stderr[-20000:])
    if run.returncode != 0:
        return {"error": (run.stderr or run.stdout).strip().splitlines()[-1][:200]}
    d = json.loads((out / name).read_text())
    return {"completed": d.get("completed"), "output_tok_s": d.get("output_throughput"),
            "ttft_p50": d.get("median_ttft_ms"), "ttft_p99": d.get("p99_ttft_ms"),
            "tpot_p50": d.get("median_tpot_ms"), "tpot_p99": d.get("p99_tpot_ms"), "itl_p99": d.get("p99_itl_ms")}


def gpucert_loadgen(base: str, model: str, concurrency: int, requests: int, seed: int, out: Path,
                    turn: int = 0) -> dict:
    argv = [sys.executable, "-m", "gpucert.cli", "loadgen", "--base-url", f"{base}/v1", "--model", model,
            "--concurrency", str(concurrency), "--num-requests", str(requests), "--dataset", "random",
            "--input-len", str(INPUT_LEN), "--output-len", str(OUTPUT_LEN), "--token-ids", "--seed", str(seed),
            "--workers", "1", "--json"]  # one process, as vllm bench serve
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    (out / (f"gpucert_c{concurrency}" + (f"_t{turn}" if turn else "") + ".json")).write_text(run.stdout)
    if not run.stdout.strip():
        return {"error": run.stderr.strip().splitlines()[-1][:200] if run.stderr.strip() else f"exit {run.returncode}"}
    s = json.loads(run.stdout)["summary"]
    return {"completed": s["completed"], "output_tok_s": s["output_tokens_per_s"],
            "ttft_p50": s["ttft_ms"]["p50"], "ttft_p99": s["ttft_ms"]["p99"], "tpot_p50": s["tpot_ms"]["p50"],
            "tpot_p99": s["tpot_ms"]["p99"], "itl_p99": s["itl_ms"]["p99"]}


def main(out: Path, tokenizer: str) -> int:
    out.mkdir(parents=True, exist_ok=True)
    engine = default_config({"skip_tokenizer_init": "false", "enable_prefix_caching": "false",
                             "extra_args": f"--tokenizer {tokenizer}"})
    rows = []
    with VllmServer(engine, out / "engine") as server:
        base, model = server.base_url, server.model_name
        gpucert_loadgen(base, model, 8, 32, 99, out)  # warm the server once for both
        for concurrency, requests in LEVELS:
            for turn in range(TURNS.get(concurrency, 1)):
                # each tool and turn its own seed: different prompts, so none meets another's KV blocks
                seed = 10 * turn + concurrency
                rows.append(("vllm bench serve", concurrency, vllm_bench(base, model, tokenizer, concurrency, requests,
                                                                        1000 + seed, out, turn)))
                rows.append(("gpucert loadgen", concurrency, gpucert_loadgen(base, model, concurrency, requests,
                                                                            2000 + seed, out, turn)))
                # after every pair: a run stopped by its budget keeps what it measured
                (out / "crosscheck.json").write_text(json.dumps(rows, indent=1))
    cols = ("completed", "output_tok_s", "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "itl_p99")
    print(f"{'client':<18}{'conc':>5}" + "".join(f"{c:>14}" for c in cols))
    for tool, concurrency, r in rows:
        cells = ("  " + r["error"]) if r.get("error") else "".join("-".rjust(14) if r.get(c) is None else f"{r[c]:>14,.2f}" for c in cols)
        print(f"{tool:<18}{concurrency:>5}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
