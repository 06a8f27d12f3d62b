"""The offline figure: vLLM's LLM.generate on the same prompts and levels as the serving
baseline (the number of prompts per level = its concurrency), output tok/s per level. The gap to
the served figure at the same level is the server front end's cost."""

import pytest

from gpucert.serving.summary import token_count_wrong

pytestmark = pytest.mark.inference


def test_offline_throughput(gpucert, offline_sweep, concurrency):
    load, result = offline_sweep
    line = result.levels.get(concurrency)
    if line is None:
        gpucert.record_error("output_tok_s", f"{result.error or 'level not reported'}; log: {result.log_path}",
                             unit="tok/s")
        return
    asked = line["requested_output_tokens"]
    wrong = token_count_wrong(line["output_tokens"], asked, exact=load.ignore_eos)
    gpucert.record("output_tok_s", result.output_tokens_per_s(concurrency), unit="tok/s", direction="higher",
                   note=f"{line['prompts']} prompts × {load.label}, {line['elapsed_s']:.2f} s")
    if line.get("window_monotonic"):  # for the resource monitor: energy per token of this level
        gpucert.work(output_tokens=line["output_tokens"], window=tuple(line["window_monotonic"]))
    gpucert.record("token_count_mismatches", int(wrong), unit="levels", direction="lower",
                   note=f"{line['output_tokens']} tokens, asked {asked}" if wrong else None)
