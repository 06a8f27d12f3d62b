"""Offline throughput inside the engine's Python: vLLM's `LLM.generate` on token-id prompts, one
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
    params = SamplingParams(max_tokens=config["output_len"], ignore_eos=True, detokenize=False)

    def token_prompts(ids_list):
        return [TokensPrompt(prompt_token_ids=ids) for ids in ids_list]

    # one small batch first: compile and graph capture stay out of every level's time
    llm.generate(token_prompts(config["warmup_prompts"]), params, use_tqdm=False)
    for entry in config["levels"]:
        level, batch = entry["level"], token_prompts(entry["prompts"])
        start, start_monotonic = time.perf_counter(), time.monotonic()
        outputs = llm.generate(batch, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        print(json.dumps({
            "level": level,
            "prompts": len(batch),
            "elapsed_s": elapsed,
            # the host's one monotonic clock: the resource monitor's window of this level
            "window_monotonic": [start_monotonic, time.monotonic()],
            "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
            "prompt_tokens": sum(len(o.prompt_token_ids or []) for o in outputs),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
