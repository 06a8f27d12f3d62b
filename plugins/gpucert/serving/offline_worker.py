"""Offline throughput inside the engine's Python: vLLM's `LLM.generate` on the prompts the parent
wrote (token ids, or text where the model has a tokenizer), each with its own output length, one
level after another, one JSON line per level on stdout.

Run as a script (`<engine python> offline_worker.py CONFIG.json`), not as a gpucert module: the
Python that has vLLM need not have gpucert, so this file imports nothing but the standard library
and vLLM. The parent (offline.py) writes the config, including the prompts, and reads the lines.
"""

import json
import sys
import time


def main(config_path: str) -> int:
    with open(config_path) as fh:
        config = json.load(fh)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(**config["engine"])

    def batch(requests):
        """vLLM's prompts and sampling parameters for [{"prompt": ids | text, "max_tokens": n}]:
        one SamplingParams where every length is the same (the common, fixed-length case)."""
        prompts = [TokensPrompt(prompt_token_ids=r["prompt"]) if isinstance(r["prompt"], list) else r["prompt"]
                   for r in requests]
        params = {n: SamplingParams(max_tokens=n, ignore_eos=config["ignore_eos"], detokenize=False)
                  for n in {r["max_tokens"] for r in requests}}
        if len(params) == 1:
            return prompts, next(iter(params.values()))
        return prompts, [params[r["max_tokens"]] for r in requests]

    # one small batch first: compile and graph capture stay out of every level's time
    llm.generate(*batch(config["warmup_prompts"]), use_tqdm=False)
    for entry in config["levels"]:
        level, (prompts, params) = entry["level"], batch(entry["prompts"])
        profiled = bool(entry.get("profile"))
        if profiled:  # the profiler config's delay/max iterations bound the trace to a few steps
            llm.start_profile()
        start, start_monotonic, start_wall = time.perf_counter(), time.monotonic(), time.time()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        if profiled:
            llm.stop_profile()
        print(json.dumps({
            "level": level,
            "repeat": entry.get("repeat", 0),
            "profiled": profiled,
            "wall_start": start_wall,
            "prompts": len(prompts),
            "elapsed_s": elapsed,
            # the host's one monotonic clock: the resource monitor's window of this level
            "window_monotonic": [start_monotonic, time.monotonic()],
            "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
            "requested_output_tokens": sum(r["max_tokens"] for r in entry["prompts"]),
            "prompt_tokens": sum(len(o.prompt_token_ids or []) for o in outputs),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
