"""The offline figure: vLLM's LLM.generate on the same prompts and levels as the serving
baseline (the number of prompts per level = its concurrency), output tok/s per level. The gap to
the served figure at the same level is the server front end's cost."""

import statistics

import pytest

from gpucert.serving.summary import token_count_wrong

pytestmark = pytest.mark.inference


def test_offline_throughput(gpucert, offline_sweep, concurrency):
    load, result = offline_sweep
    lines = result.levels.get(concurrency)
    if not lines:
        gpucert.record_error("output_tok_s", f"{result.error or 'level not reported'}; log: {result.log_path}",
                             unit="tok/s")
        return
    rates = result.rates(concurrency)
    seconds = ", ".join(f"{line['elapsed_s']:.2f}" for line in lines)
    note = f"{lines[0]['prompts']} prompts × {load.label}, {seconds} s"
    missing = len(lines) < load.repeats
    if missing:
        note += f"; {len(lines)} of {load.repeats} repeats ran ({result.error or 'not reported'})"
    if len(rates) > 1:  # the mean of the repeats, which are its samples (a t interval: noise-aware verdicts)
        gpucert.record("output_tok_s", statistics.fmean(rates), unit="tok/s", direction="higher", samples=rates,
                       stat="mean", note=f"mean of {len(rates)} repeats; {note}")
    else:
        gpucert.record("output_tok_s", rates[0] if rates else None, unit="tok/s", direction="higher", note=note)
    timed = [line for line in lines if line.get("window_monotonic")]
    output_tokens = sum(line["output_tokens"] for line in lines)
    if timed:  # for the resource monitor: a repeat's energy and energy per token of this level
        gpucert.work(output_tokens=[line["output_tokens"] for line in timed],
                     windows=[line["window_monotonic"] for line in timed])
    asked = sum(line["requested_output_tokens"] for line in lines)
    wrong = sum(token_count_wrong(line["output_tokens"], line["requested_output_tokens"], exact=load.ignore_eos)
                for line in lines)
    gpucert.record("token_count_mismatches", int(wrong), unit="levels", direction="lower",
                   note=f"{output_tokens} tokens, asked {asked}" if wrong else None)
