"""Accuracy scoring inside the engine's Python: vLLM's `LLM.generate` with prompt log-probabilities
on the documents the parent wrote as token ids, one JSON line per document on stdout.

Run as a script (`<engine python> vllm_worker.py CONFIG.json`), not as a gpucert module: the
Python that has vLLM need not have gpucert, so this file imports nothing but the standard library
and vLLM (as serving/offline_worker.py). The parent (vllm_backend.py) writes the config and reads
the lines.

How the scores come out of vLLM (0.26, read from its source: vllm/logprobs.py,
vllm/v1/engine/logprobs.py, vllm/v1/sample/sampler.py): with SamplingParams(prompt_logprobs=1),
RequestOutput.prompt_logprobs holds one entry per prompt position. Entry 0 is None (the first
token has no context; a FlatLogprobs container, when flat_logprobs is on, gives {} there). Entry t
is a dict token id → Logprob(logprob, rank, decoded_token) built from [the prompt token, the top-1
token]: the prompt token with its true vocabulary rank (1 + the number of tokens with a strictly
higher logprob), the top-1 with rank 1; one key when they are the same token. The logprobs are
log_softmax of the raw logits in float32 (logprobs_mode "raw_logprobs", the default), so they
compare with the transformers backend's. A prompt token tied with the top-1 also has rank 1: the
top-1 is then the other rank-1 key (torch.topk's pick), the same token the engine would emit.
Requests with prompt_logprobs skip reading the prefix cache (SamplingParams sets
skip_reading_prefix_cache), so every position is computed, not served from another request.

What was run: `read_prompt_logprobs` against literal structures shaped as above, and the whole
script against a stand-in `vllm` module in the self-tests. What was not: a real vLLM engine — it
cannot be installed on the CPU machines the self-tests run on.
"""

import json
import os
import sys


def read_prompt_logprobs(token_ids, prompt_logprobs):
    """([log p(token_t | tokens_<t)], [top-1 token id]) for t = 1 … n−1 from vLLM's
    prompt_logprobs of a prompt of `token_ids` (see the module's docstring for the layout)."""
    if prompt_logprobs is None:
        raise ValueError("vLLM returned no prompt_logprobs: SamplingParams(prompt_logprobs=1) was not applied")
    n = len(token_ids)
    if len(prompt_logprobs) != n:
        raise ValueError(f"vLLM returned prompt_logprobs for {len(prompt_logprobs)} positions of a {n}-token prompt")
    if prompt_logprobs[0]:
        raise ValueError("vLLM's prompt_logprobs carry a score at position 0: not the layout this worker reads")
    logprobs, top1 = [], []
    for t in range(1, n):
        entry = prompt_logprobs[t]
        actual = int(token_ids[t])
        if not entry or actual not in entry:
            raise ValueError(f"position {t}: vLLM gave no logprob for the prompt token {actual}")
        logprobs.append(float(entry[actual].logprob))
        ranked = [int(token) for token, logprob in entry.items() if logprob.rank == 1]
        if not ranked:
            raise ValueError(f"position {t}: no rank-1 token among {sorted(entry)} (prompt_logprobs must be >= 1)")
        others = [token for token in ranked if token != actual]
        top1.append(others[0] if others else actual)
    return logprobs, top1


def main(config_path):
    with open(config_path) as fh:
        config = json.load(fh)
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(**config["engine"])
    # one output token: the work is the prefill, where prompt logprobs are computed; greedy, so
    # nothing random runs; no detokenizing (decoded_token stays None: not needed)
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
    documents = config["documents"]
    # one batch, as a serving engine would see it: vLLM is not batch-invariant, and every
    # precision the study compares is scored in the same batch
    outputs = llm.generate([TokensPrompt(prompt_token_ids=d["token_ids"]) for d in documents], params, use_tqdm=False)
    for doc, output in zip(documents, outputs):
        seen = list(output.prompt_token_ids or [])
        if seen != list(doc["token_ids"]):
            raise ValueError(f"document {doc['id']!r}: vLLM scored other token ids than it was given")
        logprobs, top1 = read_prompt_logprobs(seen, output.prompt_logprobs)
        print(json.dumps({"document": {"id": doc["id"], "token_ids": seen, "logprobs": logprobs, "top1": top1}}),
              flush=True)
    print(json.dumps({"done": {"vllm": getattr(vllm, "__version__", "unknown"), "documents": len(documents)}}),
          flush=True)
    shut_down(llm)
    return 0


def shut_down(llm):
    """End vLLM's engine core process now, while this process is whole (best effort: the parent
    ends the process group after this one exits, whatever is left of it)."""
    stop = getattr(getattr(getattr(llm, "llm_engine", None), "engine_core", None), "shutdown", None)
    if callable(stop):
        stop()


if __name__ == "__main__":
    status = main(sys.argv[1])
    # Every score is out and flushed. Leave without the interpreter's teardown: on the H100 with
    # vLLM 0.26 (session 22) it aborted there ("terminate called without an active exception",
    # status -6) after all 32 documents were scored, which failed a complete measurement.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
