"""The resource monitor: a sampler process reading NVML, the host and vLLM's /metrics every
100 ms on the load generator's clock (sampler.py), its columnar file (store.py), and the figures
of a window (summary.py). The plugin attaches it to inference checks; `gpucert monitor` runs it."""
