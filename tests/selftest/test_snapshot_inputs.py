"""Snapshot inputs that must never change the profile silently: bad nvidia-smi captures, a node
that lost a GPU, NVML failing mid-read. Each case runs as an operator runs the stack check
(`pytest -m hardware -k stack --snapshot-from DIR`) on real files edited from the captured 2× H100
node, and asserts how it ends: one line `ERROR: gpucert: <file>: <what is wrong>` and exit 4, or,
where the snapshot is usable but partial, a note and a failed stack check."""

import gzip
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gpucert import snapshot
from gpucert.snapshot import host as host_engine
from gpucert.snapshot.collect import collect_live

from .captures import FIXTURE
from .machine import without_gpu
from .test_snapshot_nvml import GPU_IS_LOST, Raise, fixture_node, smi_from_fixture

REPO = Path(__file__).resolve().parents[2]
PROFILE = "2xH100-80GB-HBM3-NV18"
QUERY, TOPO, NVLINK, TABLE = "nvidia-smi-q.txt", "nvidia-smi-topo-m.txt", "nvidia-smi-nvlink-s.txt", "nvidia-smi.txt"
GPU1_SECTION = "GPU 00000000:00:07.0\n"
UUID0 = "GPU-e6e6948f-a562-7039-2777-28ff85a40348"


def pytest_stack(snapshot_dir, baselines, report_dir, *extra):
    cmd = [sys.executable, "-m", "pytest", "-m", "hardware", "-k", "stack", "-p", "no:cacheprovider",
           f"--baselines-dir={baselines}", f"--report-dir={report_dir}", *extra]
    if snapshot_dir is not None:
        cmd += [f"--snapshot-from={snapshot_dir}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def capture_copy(tmp_path: Path) -> Path:
    target = tmp_path / "capture"
    shutil.copytree(FIXTURE, target, ignore=shutil.ignore_patterns("*.log"))
    return target


def text(name: str) -> str:
    return (FIXTURE / name).read_text()


def cut(content: str, before: str) -> str:
    """The content up to (not including) the first `before`: a capture cut short."""
    assert before in content
    return content[:content.index(before)]


def drop_line(content: str, starting: str) -> str:
    return "".join(line for line in content.splitlines(keepends=True) if not line.startswith(starting))


def add_third_gpu(topo: str) -> str:
    """A topo -m of three GPUs: another node's capture, or one taken at another time."""
    lines = topo.splitlines(keepends=True)
    lines[0] = lines[0].replace("GPU1\t", "GPU1\tGPU2\t")
    lines[1] = lines[1].replace("NV18\t", "NV18\tNV18\t", 1)
    lines[2] = lines[2].replace(" X \t", " X \tNV18\t", 1)
    lines.insert(3, "GPU2\tNV18\tNV18\t X \t0-31\t0\t\tN/A\n")
    return "".join(lines)


def plant(directory: Path, name: str, content) -> None:
    path = directory / name
    if content is None:
        path.unlink()
    elif content == "directory":
        path.unlink()
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def fault(planted, ending="one line `ERROR: gpucert: <file>: ...` naming the file and what is wrong, exit 4"):
    return pytest.mark.fault("snapshot", planted, ending)


# (file, planted content, what the one line must say after the file's path)
BAD_CAPTURES = [
    pytest.param(QUERY, None, "missing (the GPUs, and so the profile, come from it",
                 marks=fault("nvidia-smi-q.txt not captured (only topo, nvlink and the banner)"), id="query-missing"),
    pytest.param(QUERY, "", "empty (the GPUs, and so the profile, come from it)",
                 marks=fault("nvidia-smi-q.txt empty (nvidia-smi killed before it printed)"), id="query-empty"),
    pytest.param(QUERY, cut(text(QUERY), GPU1_SECTION),
                 "truncated: 'Attached GPUs : 2' but 1 GPU section(s) (00000000:00:06.0)",
                 marks=fault("nvidia-smi-q.txt cut after the first GPU's section"), id="query-cut-after-gpu0"),
    pytest.param(QUERY, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
                        "that the latest NVIDIA driver is installed and running.\n",
                 "not `nvidia-smi -q` output (no 'Attached GPUs' line)",
                 marks=fault("nvidia-smi-q.txt holds nvidia-smi's 'couldn't communicate with the driver' message"),
                 id="query-driver-error-text"),
    pytest.param(QUERY, gzip.compress(text(QUERY).encode()), "binary data (NUL byte at offset",
                 marks=fault("nvidia-smi-q.txt is a gzip file under the .txt name"), id="query-binary"),
    pytest.param(QUERY, text(QUERY).replace(": 29 C\n", ": 29 \u00b0C\n").encode("latin-1"), "not UTF-8 text (byte 0xb0 at offset",
                 marks=fault("nvidia-smi-q.txt re-saved as Latin-1 (a degree sign byte 0xb0)"), id="query-latin1"),
    pytest.param(QUERY, text(QUERY).encode("utf-16"), "UTF-16 text, not UTF-8",
                 marks=fault("nvidia-smi-q.txt written by PowerShell's `>` (UTF-16 with BOM)"), id="query-utf16"),
    pytest.param(QUERY, "directory", "cannot be read (Is a directory)",
                 marks=fault("nvidia-smi-q.txt is a directory"), id="query-directory"),
    pytest.param(TOPO, None, "missing (with 2 GPUs the profile's interconnect comes from it",
                 marks=fault("nvidia-smi-topo-m.txt not captured on a 2-GPU node (the profile would lose NV18)"),
                 id="topo-missing"),
    pytest.param(TOPO, cut(text(TOPO), "\t X \t0-31"), "matrix not square: row GPU1 has 1 of 2 cells",
                 marks=fault("nvidia-smi-topo-m.txt cut in the middle of the GPU1 row"), id="topo-cut-mid-row"),
    pytest.param(TOPO, drop_line(text(TOPO), "GPU1\t"), "matrix not square: GPU columns GPU0, GPU1, GPU rows GPU0",
                 marks=fault("nvidia-smi-topo-m.txt without its GPU1 row"), id="topo-row-missing"),
    pytest.param(TOPO, add_third_gpu(text(TOPO)), "shows 3 GPU(s), nvidia-smi-q.txt 2",
                 marks=fault("nvidia-smi-topo-m.txt of a 3-GPU node beside a 2-GPU -q"), id="topo-gpu-count-mismatch"),
    pytest.param(TOPO, text(TOPO).replace("NV18", "N?18", 1), "GPU0→GPU1 is 'N?18', not a link `topo -m` prints",
                 marks=fault("nvidia-smi-topo-m.txt with a garbled link cell"), id="topo-garbled-cell"),
    pytest.param(NVLINK, cut(text(NVLINK), "GPU 1:"), "truncated: blocks for GPU 0, nvidia-smi-q.txt has 2 GPU(s)",
                 marks=fault("nvidia-smi-nvlink-s.txt cut after GPU 0's links"), id="nvlink-cut"),
    pytest.param(NVLINK, text(NVLINK).replace("GPU-0595606e-cf87-68bc-dcd1-a66677557151",
                                              "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
                 "GPU 1 is GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee here, GPU-0595606e",
                 marks=fault("nvidia-smi-nvlink-s.txt from another node (GPU 1's UUID differs from -q)"),
                 id="nvlink-other-node"),
    pytest.param(TABLE, "<html><body><h1>502 Bad Gateway</h1></body></html>\n",
                 "not `nvidia-smi` output (no 'Driver Version:' banner)",
                 marks=fault("nvidia-smi.txt holds an HTML error page (fetched through a proxy)"), id="table-html"),
]


@pytest.mark.parametrize("name,content,message", BAD_CAPTURES)
def test_bad_capture_is_one_line_naming_the_file(tmp_path, name, content, message):
    directory = capture_copy(tmp_path)
    plant(directory, name, content)
    run = pytest_stack(directory, tmp_path / "baselines", tmp_path / "report")
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: gpucert: {directory / name}: {message}"), run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "baselines").exists()  # nothing measured, nothing stored


@pytest.fixture
def baselined(tmp_path):
    """tmp baselines/ holding the captured node's stack baseline, as --update-baselines writes it."""
    baselines = tmp_path / "baselines"
    first = pytest_stack(FIXTURE, baselines, tmp_path / "r0", "--update-baselines")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr
    return baselines


def stack_check(report_dir: Path) -> tuple[dict, dict]:
    metrics = json.loads((report_dir / "metrics.json").read_text())
    return metrics, next(c for c in metrics["checks"] if c["check"] == "stack")


@pytest.mark.fault("snapshot", "nvidia-smi-q.txt cut inside GPU 1's section, after its name and UUID "
                               "(PCI, memory, ECC, clocks … lost)",
                   "usable: a note and stack health_critical FAIL (exit 1); --update-baselines keeps the old stack baseline")
@pytest.mark.slow("child pytest sessions")
def test_capture_cut_inside_the_last_gpu_is_partial_and_fails(tmp_path, baselined):
    directory = capture_copy(tmp_path)
    gpu1 = text(QUERY).index(GPU1_SECTION)
    plant(directory, QUERY, text(QUERY)[:text(QUERY).index("    Inforom BBX Object Flush", gpu1)])
    stored = (baselined / PROFILE / "stack.json").read_text()
    for extra in ((), ("--update-baselines",)):
        report = tmp_path / f"r{len(extra)}"
        run = pytest_stack(directory, baselined, report, *extra)
        assert run.returncode == 1, run.stdout[-3000:] + run.stderr
        metrics, check = stack_check(report)
        assert metrics["profile"] == PROFILE
        health = {m["metric"]: (m["value"], m["verdict"]) for m in check["metrics"]}
        assert health["health_critical"] == (1, "fail")
        [finding] = [f for f in check["findings"]["health"] if f["path"] == "incomplete"]
        assert finding["value"].startswith("nvidia-smi-q.txt: GPU 00000000:00:07.0 was cut short (no PCI, "
                                           "FB Memory Usage, Processes")
        assert "stack::health_critical: FAIL" in run.stdout
        assert f"note: incomplete snapshot: {finding['value']}" in run.stdout
    # the partial snapshot did not become the baseline
    assert json.loads((baselined / PROFILE / "stack.json").read_text())["artifacts"] == json.loads(stored)["artifacts"]


def one_gpu_capture(directory: Path) -> None:
    """A consistent capture of the same node with GPU 1 gone: -q, topo -m and nvlink -s agree."""
    plant(directory, QUERY, cut(text(QUERY), GPU1_SECTION).replace(
        "Attached GPUs                                          : 2", "Attached GPUs                                          : 1"))
    topo = text(TOPO).splitlines(keepends=True)
    plant(directory, TOPO, "".join([topo[0].replace("GPU1\t", ""), topo[1].replace("NV18\t", "", 1), *topo[3:]]))
    plant(directory, NVLINK, cut(text(NVLINK), "GPU 1:"))


@pytest.mark.fault("snapshot", "a consistent capture of the baselined node with GPU 1 gone (derives profile "
                               "1xH100-80GB-HBM3, which has no baselines)",
                   "judged against this host's profile 2xH100-80GB-HBM3-NV18 (same GPU UUID): drift_critical FAIL, exit 1")
@pytest.mark.slow("child pytest sessions")
def test_node_that_lost_a_gpu_is_judged_against_its_own_profile(tmp_path, baselined):
    directory = capture_copy(tmp_path)
    one_gpu_capture(directory)
    assert snapshot.profile_name(snapshot.collect(from_dir=directory)) == "1xH100-80GB-HBM3"
    run = pytest_stack(directory, baselined, tmp_path / "r1")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr
    metrics, check = stack_check(tmp_path / "r1")
    assert (metrics["profile"], metrics["profile_source"]) == (PROFILE, "host's baselines")
    assert any(note.startswith(f"the snapshot says profile 1xH100-80GB-HBM3, which has no baselines, but this "
                               f"host's are under {PROFILE} (GPU {UUID0} in both)") for note in metrics["notes"])
    assert {"path": "gpus", "old": 2, "new": 1, "severity": "critical"} in check["findings"]["drift"]
    assert "stack::drift_critical: FAIL" in run.stdout
    assert not (baselined / "1xH100-80GB-HBM3").exists()

    # an approved hardware change: --update-baselines starts the new profile, with a note
    update = pytest_stack(directory, baselined, tmp_path / "r2", "--update-baselines")
    assert update.returncode == 0, update.stdout[-3000:] + update.stderr
    metrics, _ = stack_check(tmp_path / "r2")
    assert metrics["profile"] == "1xH100-80GB-HBM3"
    assert any(f"this host's earlier baselines are under profile {PROFILE}" in n for n in metrics["notes"])


@without_gpu
@pytest.mark.fault("snapshot", "this GPU-less machine, whose baselines/ holds a 2-GPU stack baseline taken on it "
                               "(same hostname, CPU and memory): the driver and GPUs are gone",
                   "judged against that profile, not 'no-gpu': drift_critical FAIL (GPU count 2 -> 0), exit 1")
def test_live_host_whose_gpus_vanished_fails_its_drift(tmp_path):
    stored = json.loads((REPO / "baselines" / PROFILE / "stack.json").read_text())
    stored["artifacts"]["stack::snapshot"]["host"] = host_engine.live()  # taken on this very machine
    (tmp_path / "baselines" / PROFILE).mkdir(parents=True)
    (tmp_path / "baselines" / PROFILE / "stack.json").write_text(json.dumps(stored))
    run = pytest_stack(None, tmp_path / "baselines", tmp_path / "r")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr
    metrics, check = stack_check(tmp_path / "r")
    assert metrics["profile"] == PROFILE and metrics["stack"]["gpu_found"] is False
    assert any(f"host {socket.gethostname()} with the same CPU" in note for note in metrics["notes"])
    assert {"path": "gpus", "old": 2, "new": 0, "severity": "critical"} in check["findings"]["drift"]

    # another machine with this hostname (lent machines share names) is not this host
    stored["artifacts"]["stack::snapshot"]["host"]["cpu_count"] = 999
    (tmp_path / "baselines" / PROFILE / "stack.json").write_text(json.dumps(stored))
    other = pytest_stack(None, tmp_path / "baselines", tmp_path / "r2")
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr
    assert stack_check(tmp_path / "r2")[0]["profile"] == "no-gpu"


def lose(fake, gpu: int, *functions: str) -> None:
    for function in functions:
        fake.gpus[gpu][function] = Raise(GPU_IS_LOST)


NVML_FAULTS = [
    pytest.param(lambda fake: lose(fake, 1, "nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceGetNvLinkState"),
                 "NVML: GPU1 nvmlDeviceGetCurrPcieLinkWidth: GPU is lost: the GPU was lost while it was read",
                 marks=pytest.mark.fault("snapshot", "NVML answers 'GPU is lost' for GPU 1 mid-read",
                                         "snapshot incomplete: a critical health finding naming GPU1"),
                 id="gpu-lost-mid-read"),
    pytest.param(lambda fake: setattr(fake, "nvmlDeviceGetHandleByIndex",
                                      lambda i: fake.gpus[i] if i == 0 else (_ for _ in ()).throw(
                                          fake.NVMLError(GPU_IS_LOST))),
                 "NVML: GPU1 nvmlDeviceGetHandleByIndex: GPU is lost",
                 marks=pytest.mark.fault("snapshot", "NVML counts 2 GPUs but GPU 1's handle fails",
                                         "snapshot incomplete: a critical health finding, GPU 1 kept (not dropped)"),
                 id="handle-fails"),
    pytest.param(lambda fake: lose(fake, 0, "nvmlDeviceGetUUID"),
                 "NVML: GPU0 nvmlDeviceGetUUID: GPU is lost",
                 marks=pytest.mark.fault("snapshot", "NVML cannot read GPU 0's UUID",
                                         "snapshot incomplete: a critical health finding"), id="uuid-fails"),
]


@pytest.mark.parametrize("plant_fault,first_problem", NVML_FAULTS)
def test_nvml_failing_mid_collect_is_incomplete_not_a_smaller_node(plant_fault, first_problem):
    fake = fixture_node()
    plant_fault(fake)
    live = collect_live(pynvml_module=fake, smi_runner=smi_from_fixture)
    assert len(live["gpus"]) == 2  # never a silent 1-GPU node
    assert live["incomplete"][0].startswith(first_problem), live["incomplete"]
    findings = [f for f in snapshot.health(live) if f["path"] == "incomplete"]
    assert findings and all(f["severity"] == "critical" for f in findings)
    assert "incomplete" not in snapshot.stack_view(live)  # never baselined as stack content


@pytest.mark.fault("snapshot", "NVML initialises, then nvmlDeviceGetCount fails (and nvidia-smi -q fails too)",
                   "not a GPU-less node: snapshot incomplete (critical health finding), both failures named")
def test_nvml_count_failure_is_not_a_gpu_less_node():
    fake = fixture_node()
    fake.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(fake.NVMLError(GPU_IS_LOST))

    def smi_fails(args):
        from gpucert.snapshot.smi import SmiUnavailable
        raise SmiUnavailable("nvidia-smi -q exited 15: Unable to determine the device handle for GPU1: GPU is lost")

    live = collect_live(pynvml_module=fake, smi_runner=smi_fails)
    assert live["incomplete"] == [
        "NVML initialised, then nvmlDeviceGetCount failed: GPU is lost, and nvidia-smi -q failed too "
        "(nvidia-smi -q exited 15: Unable to determine the device handle for GPU1: GPU is lost): the GPUs are unknown"]
    assert [f["severity"] for f in snapshot.health(live)] == ["critical"]


def test_what_a_healthy_node_may_print_still_passes(tmp_path):
    """The checks catch cut and foreign captures, not variety: a section only one GPU has (MIG
    devices), a link kind a newer driver adds, a UTF-8 BOM."""
    directory = capture_copy(tmp_path)
    query = text(QUERY)
    gpu1 = query.index(GPU1_SECTION)
    plant(directory, QUERY, "\ufeff" + query[:gpu1].replace(
        "    Processes  ", "    MIG Devices\n        MIG Device Count                           : 0\n    Processes  ", 1)
        + query[gpu1:])
    plant(directory, TOPO, text(TOPO).replace("NV18", "C2C"))
    taken = snapshot.collect(from_dir=directory)
    assert taken["incomplete"] == [] and len(taken["gpus"]) == 2
    assert snapshot.profile_name(taken) == "2xH100-80GB-HBM3-C2C"
