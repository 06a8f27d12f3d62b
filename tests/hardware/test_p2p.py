"""P2P: GPU-to-GPU copies per ordered pair, judged against the peak its topology link allows, and
the p2pBandwidthLatencyTest matrices on the card.

`test_p2p[src,dst]` records, for one ordered pair:
- p2p_access: 1 if cudaDeviceCanAccessPeer(src, dst), else 0;
- oneway_gbps: copy of 1 GiB src → dst, with the expected peak of the link (NVLink for NV#,
  PCIe for PIX/PXB/PHB/NODE/SYS) as `peak`, so thresholds.yaml's min_fraction_of_peak judges it;
- bothway_gbps: src → dst and dst → src at once (peak: twice the one-way peak);
- latency_us: one small copy, queued back to back behind a hold kernel;
- oneway_gbps_p2p_off: the same copy staged through pinned host memory (peak: the PCIe link).
`test_p2p_matrices` measures every pair and the diagonal once, smaller, for the card's matrices.
Sizes keep all of it near 10 s on 2 GPUs (plus CUDA start-up).
"""

import pytest

from gpucert.physics import p2p, p2p_matrix

pytestmark = pytest.mark.hardware

PAIR_SIZE = 1 << 30
BANDWIDTH = {"warmup": 3, "reps": 20, "max_time_s": 10.0}
STAGED = {"warmup": 2, "reps": 10, "max_time_s": 10.0}  # ~25 ms an iteration through the host
LATENCY = {"nbytes": 4, "copies": 100, "warmup": 3, "reps": 10, "max_time_s": 10.0}
MATRIX = p2p_matrix.SweepConfig(size=256 << 20, latency_copies=100, warmup=2, reps=5, max_time_s=5.0)


def pytest_generate_tests(metafunc):
    if not {"src", "dst"} <= set(metafunc.fixturenames):
        return
    # gpucert.gpus' answer, with its no-GPU reason, creating no CUDA context
    count, reason = p2p.available_gpus()
    pairs = [(i, j) for i in range(count) for j in range(count) if i != j]
    if pairs:
        metafunc.parametrize("src,dst", pairs, ids=[f"{i}to{j}" for i, j in pairs])
    else:
        skip = pytest.mark.skip(reason=p2p.too_few_gpus(count, reason))
        metafunc.parametrize("src,dst", [pytest.param(None, None, id="no-pair", marks=skip)])


def _record_rate(gpucert, metric, result, *, peak=None, note=None):
    gpucert.record_result(metric, result, result.gbps, unit="GB/s", direction="higher",
                          samples=result.rate_samples("gbps"), peak=peak, note=note)


def test_p2p(gpucert, src, dst):
    a, b = f"cuda:{src}", f"cuda:{dst}"
    src_gpu, dst_gpu = p2p.snapshot_gpus(gpucert.snapshot, [a, b])
    expected = p2p.pair_expectation(gpucert.snapshot, src_gpu, dst_gpu)
    access = p2p.peer_access(a, b)

    gpucert.record("p2p_access", int(access), unit="bool", direction="higher",
                   note=f"topology link {expected.link or 'unknown'}"
                        + ("" if access else ": no peer access, torch's copy goes through the host"))
    _record_rate(gpucert, "oneway_gbps", p2p.measure_oneway(a, b, PAIR_SIZE, **BANDWIDTH),
                 peak=expected.peak_gbps, note=expected.basis)
    _record_rate(gpucert, "bothway_gbps", p2p.measure_bothway(a, b, PAIR_SIZE, **BANDWIDTH),
                 peak=2 * expected.peak_gbps if expected.peak_gbps else None,
                 note=f"twice the one-way peak: {expected.basis}")
    latency = p2p.measure_latency(a, b, **LATENCY)
    gpucert.record_result("latency_us", latency, latency.median_s * 1e6 if latency.median_s else None,
                          unit="us", direction="lower", samples=[s * 1e6 for s in latency.samples_s],
                          note=f"{LATENCY['nbytes']}-byte copies, {LATENCY['copies']} per iteration")
    staged = p2p.staged_expectation(src_gpu, dst_gpu)
    _record_rate(gpucert, "oneway_gbps_p2p_off", p2p.measure_oneway(a, b, PAIR_SIZE, p2p=False, **STAGED),
                 peak=staged.peak_gbps, note=f"staged through pinned host memory; {staged.basis}")


def test_p2p_matrices(gpucert):
    count, reason = p2p.available_gpus()
    if count < 2:
        pytest.skip(p2p.too_few_gpus(count, reason))
    result = p2p_matrix.sweep([f"cuda:{i}" for i in range(count)], MATRIX)
    for row in p2p_matrix.card_rows([[int(a) for a in row] for row in result.access]):
        gpucert.finding(p2p_matrix.CONNECTIVITY_TITLE, **row)
    for key in result.results:
        kind = p2p_matrix.KIND_BY_KEY[key]
        for row in p2p_matrix.card_rows(result.matrix(key), corner=kind.corner.strip()):
            gpucert.finding(kind.title, **row)
    failures = result.failures()
    for failure in failures:
        gpucert.finding("failed entries", **failure)
    gpucert.record("failed_entries", len(failures), unit="entries", direction="lower",
                   note=f"{MATRIX.size >> 20} MiB copies, {MATRIX.reps} repetitions per entry")
