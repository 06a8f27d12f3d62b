"""The vLLM scoring backend without vLLM (it cannot be installed here): the worker's reading of
prompt_logprobs against literal structures shaped exactly as vLLM 0.26 builds them, and the
parent ↔ worker round trip through the REAL worker script running over a stand-in `vllm` module
(first on the worker's path) whose LLM scores with a known bigram table.

What this proves: the layout is read right (the prompt token's logprob; the top-1 as the rank-1
key, also when the prompt token ties it or is it; position 0 None, or {} from FlatLogprobs); the
engine arguments and sampling parameters reach LLM(...) as the study set them; the JSON comes
back to the same ScoringResult a transformers run gives; a crash, a missing prompt_logprobs and a
hang end in one line naming the log, and a hung worker's process is killed. What it does not: a
real engine's numbers — those come from the GPU node.
"""

import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from gpucert.accuracy import TokenDocument, VllmScoringError, compare, score_with_vllm
from gpucert.accuracy.vllm_worker import read_prompt_logprobs

from .emulators import process_alive


@dataclass
class Logprob:
    """vllm.logprobs.Logprob of vLLM 0.26, field for field."""
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def vllm_position(prompt_token: int, prompt_logprob: float, prompt_rank: int, top: list[tuple[int, float]]):
    """One position's dict as vllm.logprobs.append_logprobs_for_next_position builds it: the prompt
    token with its rank first, then the top-k with ranks 1..k (a repeated key keeps its place and
    takes the later value)."""
    ids = [prompt_token] + [t for t, _ in top]
    lps = [prompt_logprob] + [lp for _, lp in top]
    ranks = [prompt_rank] + list(range(1, len(top) + 1))
    return {t: Logprob(logprob=lp, rank=r, decoded_token=None) for t, lp, r in zip(ids, lps, ranks)}


def test_prompt_logprobs_are_read_as_vllm_lays_them_out():
    token_ids = [1, 42, 7, 7, 99]
    prompt_logprobs = [
        None,  # the first token: no context
        vllm_position(42, -3.25, 5, [(11, -0.5)]),  # prompt token ranked 5th: the top-1 is another
        vllm_position(7, -0.125, 1, [(7, -0.125)]),  # the prompt token is the top-1: one key
        vllm_position(7, -0.7, 1, [(8, -0.7)]),  # tied with the top-1 (rank 1 too): topk's pick is the top-1
        vllm_position(99, -12.0, 30001, [(3, -0.01)]),
    ]
    assert [len(p) for p in prompt_logprobs[1:]] == [2, 1, 2, 2]
    logprobs, top1 = read_prompt_logprobs(token_ids, prompt_logprobs)
    assert logprobs == [-3.25, -0.125, -0.7, -12.0]
    assert top1 == [11, 7, 8, 3]
    # FlatLogprobs (SamplingParams.flat_logprobs) yields {} at position 0, not None
    assert read_prompt_logprobs(token_ids, [{}] + prompt_logprobs[1:]) == (logprobs, top1)


@pytest.mark.parametrize("case,structure,message", [
    pytest.param("missing", None, "no prompt_logprobs", marks=pytest.mark.fault(
        "accuracy", "vLLM output without prompt_logprobs", "ValueError naming SamplingParams(prompt_logprobs=1)")),
    pytest.param("short", [None, {5: Logprob(-1.0, 1)}], "for 2 positions of a 3-token prompt", marks=pytest.mark.fault(
        "accuracy", "prompt_logprobs shorter than the prompt", "ValueError with both lengths")),
    pytest.param("no-prompt-token", [None, {5: Logprob(-1.0, 1)}, {6: Logprob(-0.1, 1)}],
                 "position 1: vLLM gave no logprob for the prompt token 2", marks=pytest.mark.fault(
        "accuracy", "a position whose dict lacks the prompt token", "ValueError naming the position and token")),
    pytest.param("no-rank-1", [None, {2: Logprob(-4.0, 9)}, {3: Logprob(-0.1, 1)}], "no rank-1 token",
                 marks=pytest.mark.fault("accuracy", "a position without a rank-1 entry (prompt_logprobs=0)",
                                         "ValueError: prompt_logprobs must be >= 1")),
])
def test_malformed_prompt_logprobs_are_refused_in_one_line(case, structure, message):
    with pytest.raises(ValueError, match=message) as err:
        read_prompt_logprobs([1, 2, 3], structure)
    assert "\n" not in str(err.value)


VOCAB = 50
# the stand-in's "model": bigram logits that the test computes again on its own
BIGRAM = "math.sin(prev * 12.9898 + tok * 78.233) * 4.0"

STAND_IN_VLLM = {
    "vllm/__init__.py": f'''
import json, math, os, time, types
from vllm.logprobs import Logprob
__version__ = "0.26.0"
VOCAB = {VOCAB}
class SamplingParams:
    def __init__(self, max_tokens=16, temperature=1.0, prompt_logprobs=None, detokenize=True, **rest):
        assert not rest, rest
        self.max_tokens, self.temperature, self.prompt_logprobs = max_tokens, temperature, prompt_logprobs
        self.detokenize = detokenize
def _position(prev, tok):
    logits = [{BIGRAM} for tok in range(VOCAB)]
    top = max(logits)
    lse = top + math.log(sum(math.exp(x - top) for x in logits))
    lps = [x - lse for x in logits]
    best = max(range(VOCAB), key=lambda i: lps[i])
    rank = 1 + sum(1 for x in lps if x > lps[tok])
    # vllm.logprobs.append_logprobs_for_next_position: the prompt token first, then the top-k
    return {{t: Logprob(logprob=lp, rank=r, decoded_token=None)
            for t, lp, r in zip([tok, best], [lps[tok], lps[best]], [rank, 1])}}
class _EngineCore:
    def shutdown(self):
        if os.environ.get("STAND_IN_SHUTDOWN"):
            open(os.environ["STAND_IN_SHUTDOWN"], "w").write("shut down")
class LLM:
    def __init__(self, **kwargs):
        if os.environ.get("STAND_IN_KWARGS"):
            json.dump(kwargs, open(os.environ["STAND_IN_KWARGS"], "w"))
        if os.environ.get("STAND_IN_ABORT_AT_EXIT"):  # vLLM 0.26 on an H100: a C++ thread's teardown
            import atexit; atexit.register(os.abort)
        if os.environ.get("STAND_IN_ENGINE_PID"):  # an engine core process its shutdown does not end
            import subprocess
            core = subprocess.Popen(["sleep", "300"])
            open(os.environ["STAND_IN_ENGINE_PID"], "w").write(str(core.pid))
        self.llm_engine = types.SimpleNamespace(engine_core=_EngineCore())
        print("INFO 12-15 10:00:00 [llm.py:1] stand-in engine up", flush=True)
    def generate(self, prompts, params, use_tqdm=False):
        assert params.max_tokens == 1 and params.prompt_logprobs == 1 and params.temperature == 0.0
        if os.environ.get("STAND_IN_FAIL"):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        time.sleep(float(os.environ.get("STAND_IN_SLEEP_S", "0")))
        outputs = []
        for p in prompts:
            ids = p["prompt_token_ids"]
            plp = None if os.environ.get("STAND_IN_NO_LOGPROBS") else [None] + [
                _position(ids[t - 1], ids[t]) for t in range(1, len(ids))]
            outputs.append(types.SimpleNamespace(prompt_token_ids=list(ids), prompt_logprobs=plp,
                                                 outputs=[types.SimpleNamespace(token_ids=[0])]))
        return outputs
''',
    "vllm/logprobs.py": '''
from dataclasses import dataclass
@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None
''',
    "vllm/inputs.py": '''
def TokensPrompt(prompt_token_ids):
    return {"prompt_token_ids": prompt_token_ids}
''',
}


@pytest.fixture
def engine_python(tmp_path):
    """An engine Python with the stand-in vLLM first on its path."""
    for name, text in STAND_IN_VLLM.items():
        (tmp_path / "site" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / name).write_text(text)
    wrapper = tmp_path / "engine-python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{tmp_path / "site"}${{PYTHONPATH:+:$PYTHONPATH}}" exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


DOCS = [TokenDocument("a", (1, 5, 9, 13, 2, 2, 40)), TokenDocument("b", (7, 3, 3, 48, 0, 11)),
        TokenDocument("c", (4, 4))]


def expected(doc):
    """The bigram table's scores, computed here with numpy, independently of the stand-in."""
    logprobs, top1 = [], []
    for prev, tok in zip(doc.token_ids[:-1], doc.token_ids[1:]):
        logits = np.array([math.sin(prev * 12.9898 + t * 78.233) * 4.0 for t in range(VOCAB)])
        lps = logits - np.logaddexp.reduce(logits)
        logprobs.append(lps[tok])
        top1.append(int(np.argmax(lps)))
    return logprobs, top1


def test_the_worker_round_trip_gives_the_scores_and_passes_the_precision(engine_python, tmp_path):
    kwargs_file = tmp_path / "kwargs.json"
    result = score_with_vllm("/models/qwen", DOCS, dtype="bfloat16", quantization="fp8", kv_cache_dtype="fp8_e4m3",
                             engine={"tensor_parallel_size": 2, "max_model_len": 4096}, workdir=tmp_path / "w",
                             python=engine_python, env={"STAND_IN_KWARGS": str(kwargs_file)}, text_set="t-v1")
    assert json.loads(kwargs_file.read_text()) == {
        "model": "/models/qwen", "dtype": "bfloat16", "quantization": "fp8", "kv_cache_dtype": "fp8_e4m3",
        "tensor_parallel_size": 2, "max_model_len": 4096}
    assert [d.id for d in result.documents] == ["a", "b", "c"]
    for doc, scored in zip(DOCS, result.documents):
        logprobs, top1 = expected(doc)
        assert scored.token_ids.tolist() == list(doc.token_ids)
        np.testing.assert_allclose(scored.logprobs, logprobs, rtol=0, atol=1e-12)
        assert scored.top1.tolist() == top1
    assert result.backend == "vllm" and result.dtype == "bfloat16" and result.text_set == "t-v1"
    assert result.settings["vllm"] == "0.26.0" and result.label == "vllm bfloat16 (kv_cache_dtype=fp8_e4m3, quantization=fp8)"
    # vLLM's stdout lines go to the log, after stderr
    assert "stand-in engine up" in (tmp_path / "w" / "accuracy-bfloat16-q-fp8-kv-fp8_e4m3.log").read_text()
    # fp8 weights and an fp8 KV cache alone: two runs, each with its own config and log
    for setting in ({"quantization": "fp8"}, {"kv_cache_dtype": "fp8"}):
        score_with_vllm("/models/qwen", DOCS, dtype="bfloat16", workdir=tmp_path / "w", python=engine_python,
                        env={"STAND_IN_KWARGS": str(kwargs_file)}, **setting)
    assert {p.name for p in (tmp_path / "w").glob("accuracy-bfloat16-*")} == {
        f"accuracy-bfloat16-{tag}.{ext}" for tag in ("q-fp8-kv-fp8_e4m3", "q-fp8", "kv-fp8") for ext in ("json", "log")}
    # the same scores compare with themselves: no change, every top-1 agrees
    same = compare(result, result, "itself")
    assert same.delta_nll == 0.0 and same.greedy_agreement_pct == 100.0 and same.tokens == 6 + 5 + 1


@pytest.mark.fault("accuracy", "vLLM aborts in the interpreter's teardown after every document is scored",
                   "the worker shuts the engine down and leaves without teardown: the scores stand")
def test_an_abort_in_the_interpreters_teardown_does_not_void_the_scores(engine_python, tmp_path):
    shutdown = tmp_path / "shutdown"
    result = score_with_vllm("/m", DOCS, dtype="float16", workdir=tmp_path / "w", python=engine_python,
                             env={"STAND_IN_ABORT_AT_EXIT": "1", "STAND_IN_SHUTDOWN": str(shutdown)})
    assert [d.id for d in result.documents] == ["a", "b", "c"]
    assert shutdown.read_text() == "shut down"  # the engine core was told to end before the exit


@pytest.mark.fault("accuracy", "the worker's engine core process outlives it",
                   "the parent ends the worker's process group: nothing keeps holding the GPU")
def test_an_engine_process_left_behind_is_ended(engine_python, tmp_path):
    pid_file = tmp_path / "engine.pid"
    score_with_vllm("/m", DOCS, dtype="float16", workdir=tmp_path / "w", python=engine_python,
                    env={"STAND_IN_ENGINE_PID": str(pid_file)})
    pid = int(pid_file.read_text())
    assert not process_alive(pid), f"the engine process {pid} is still running"


@pytest.mark.parametrize("env,message", [
    pytest.param({"STAND_IN_FAIL": "1"}, "exited with status 1 after 0 of 3 documents: .*illegal memory access",
                 marks=pytest.mark.fault("accuracy", "vLLM crashes inside generate (CUDA error)",
                                         "VllmScoringError in one line: status, documents done, the error, the log")),
    pytest.param({"STAND_IN_NO_LOGPROBS": "1"}, "no prompt_logprobs",
                 marks=pytest.mark.fault("accuracy", "vLLM returns outputs without prompt_logprobs",
                                         "VllmScoringError quoting the worker's ValueError")),
])
def test_a_failing_worker_is_one_line_naming_its_log(engine_python, tmp_path, env, message):
    with pytest.raises(VllmScoringError, match=message) as err:
        score_with_vllm("/m", DOCS, dtype="float16", workdir=tmp_path, python=engine_python, env=env)
    assert "\n" not in str(err.value) and str(tmp_path / "accuracy-float16.log") in str(err.value)


@pytest.mark.fault("accuracy", "the vLLM worker hangs past the timeout",
                   "VllmScoringError 'exceeded 3 s and was killed'; its process is gone")
def test_a_hung_worker_is_killed(engine_python, tmp_path):
    kwargs_file = tmp_path / "kwargs.json"
    with pytest.raises(VllmScoringError, match="exceeded 3 s and was killed"):
        score_with_vllm("/m", DOCS, dtype="float16", workdir=tmp_path, python=engine_python, timeout_s=3,
                        env={"STAND_IN_SLEEP_S": "120", "STAND_IN_KWARGS": str(kwargs_file)})
    assert kwargs_file.exists()  # it had started
    # no python left running the worker's config (its whole process group got SIGKILL)
    config = str(tmp_path / "accuracy-float16.json")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                assert config.encode() not in fh.read(), f"worker {pid} outlived its timeout"
        except OSError:
            continue
