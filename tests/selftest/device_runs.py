"""Real device runs the self-tests render and parse. They are the evidence under docs/evidence/
(kept compressed there to keep that folder small), read from there so test data and evidence are one
file, not two copies that drift apart."""

from __future__ import annotations

import gzip
import json
import lzma
from pathlib import Path

EVIDENCE = Path(__file__).resolve().parents[2] / "docs" / "evidence"
# 2× H100, session 5: `pytest -m inference` judged against baselines (serving table, monitor
# timelines, failures with their reasons)
SERVING_CHECK = EVIDENCE / "issue-4-inference/session5/serving-check/metrics.json.xz"
# 2× H100, session 6: a full `make certify` (every check family, physics against datasheet peaks)
CERTIFY = EVIDENCE / "issue-6-certify/certify/metrics.json.xz"

# the lent H100 (session 22): `make study`'s batching and tuned studies, kept without per-request samples
STUDY_BATCHING = EVIDENCE / "issue-15-studies/session22-h100/batching-tuned/metrics.json.xz"
# the lent H100 (session 23): the KV-cache saturation study, a 7B preset, bf16 and fp8 caches
STUDY_KV = EVIDENCE / "issue-15-studies/session23-h100/kv/metrics.json.xz"
# capacity under SLO at vLLM's defaults on an H100 (session 24): a search's probes, before the
# misses per SLO were kept
STUDY_SLO = EVIDENCE / "issue-15-studies/session24-h100/slo-concurrency/metrics.json.xz"
# the same search on another H100 (session 27), its probes keeping the misses per SLO: TTFT bounds
# it at 512 (39 of 2,048 late), capacity 470
STUDY_SLO_MISSES = EVIDENCE / "issue-15-studies/session27-h100/slo-concurrency/metrics.json.xz"
# the tuned configuration's served side alone (session 27, H100): 3 engine starts a side
STUDY_TUNED_SERVED = EVIDENCE / "issue-15-studies/session27-h100/tuned-served/metrics.json.xz"
# precision served on the tuned front end (session 30, H100): 4 variants, 3 repeats each, GPU busy 60-66 %
STUDY_PRECISION_SERVED = EVIDENCE / "issue-15-studies/session30-h100/precision/metrics.json.xz"
# the batching grid whole in one run (session 31, H100): six points, 3 repeats each on one engine
# start, every later point against vLLM's defaults with its Welch interval
STUDY_GRID = EVIDENCE / "issue-15-studies/session31-h100/grid/metrics.json.xz"

# make certify's GEMM checks alone (`run-burnin.sh gemm`), sustained: the lent H100 (session 19)
# and the lent H200 (session 28), each judged on the datasheet floors alone
GEMM_H100 = EVIDENCE / "issue-17-burnin/h100-session19/gemm-metrics.json.xz"
GEMM_H200 = EVIDENCE / "issue-17-burnin/h200-session28/gemm-metrics.json.xz"
# the plain rerun of those checks on an H100 (session 38) after two `--update-baselines` runs made
# baselines/1xH100-80GB-HBM3/gemm.json: the projections up to m = 1,024 replayed as CUDA graphs
GEMM_H100_RERUN = EVIDENCE / "issue-17-burnin/h100-session38/gemm-rerun-metrics.json.xz"
# the served default capture at 256, each window's decode step kept as a sample: the baselines'
# run and a plain rerun of the same node, with three windows on one H100 (session 33) and with
# five on the lent H200 (session 34, the whole plan's base and the rerun of that capture)
FORENSICS_WINDOWS = [EVIDENCE / f"issue-16-forensics/h100-session33/windows-{run}-metrics.json.xz"
                     for run in ("base", "rerun")] + \
    [EVIDENCE / f"issue-16-forensics/h200-session34/{run}-metrics.json.xz" for run in ("base", "rerun")]

# the lent H200 (session 10, GPU fdc826f6, driver 580, XML schema v13, busy with vLLM): `nvidia-smi
# -q -x` and, one second later, `nvidia-smi -q`
H200_SMI = EVIDENCE / "issue-14-newcomer/h200"
H200_SMI_XML = H200_SMI / "nvidia-smi-q.xml.xz"
H200_SMI_TEXT = H200_SMI / "nvidia-smi-q.txt"
# the lent H100 (session 21, GPU 965a55ff, driver 580, idle before `make certify`): the same pair
H100_SMI = EVIDENCE / "issue-14-newcomer/h100"
H100_SMI_XML = H100_SMI / "nvidia-smi-q.xml.xz"
H100_SMI_TEXT = H100_SMI / "nvidia-smi-q.txt"


def text(path: Path) -> str:
    """A captured text file, compressed (xz, gzip) or not."""
    raw = path.read_bytes()
    return {".xz": lzma.decompress, ".gz": gzip.decompress}.get(path.suffix, bytes)(raw).decode()


def load(path: Path) -> dict:
    """A run's metrics.json (xz-compressed; gzip read too), as the card and the exporters take it."""
    return json.loads(text(path))


def slowed(run: dict, factor: float) -> dict:
    """A copy of a run's metrics.json with every figure, sample and interval × `factor`: a
    regression planted in a real run (factor < 1 for a higher-is-better figure)."""
    copy = json.loads(json.dumps(run))
    for check in copy["checks"]:
        for metric in check["metrics"]:
            if isinstance(metric.get("value"), (int, float)):
                metric["value"] *= factor
            metric["samples"] = [s * factor for s in metric.get("samples") or []]
            if metric.get("ci"):
                metric["ci"] = [c * factor for c in metric["ci"]]
    return copy
