"""vLLM 0.26's /metrics wiring (vllm/entrypoints/serve/instrumentator/metrics.py), reproduced to
check the monitor's filtered poll against it: the instrumentator's own /metrics route (whole
exposition, ignores `name[]`) plus prometheus_client's ASGI app mounted at /metrics (`/metrics/`
answers `?name[]=…` with those families only); vLLM's four gauges and 40 histograms (~81 kB).
    PYTHONPATH=<prometheus-fastapi-instrumentator 8.1> python vllm_like_metrics.py PORT [--no-mount]
(--no-mount: the instrumentator's route alone, so the monitor falls back to the plain poll)"""
import re, sys
import prometheus_client
from fastapi import FastAPI, Response
from prometheus_client import make_asgi_app, Gauge, Counter, Histogram
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.routing import Mount
import uvicorn
registry = prometheus_client.REGISTRY
labels = ["engine", "model_name"]
Gauge("vllm:num_requests_running", "r", labels).labels("0", "m").set(7)
Gauge("vllm:num_requests_waiting", "w", labels).labels("0", "m").set(2)
Gauge("vllm:kv_cache_usage_perc", "kv", labels).labels("0", "m").set(0.25)
Counter("vllm:num_preemptions", "p", labels).labels("0", "m").inc(3)
for i in range(40):
    Histogram(f"vllm:latency_{i}_seconds", "x", labels, buckets=[0.001 * 2 ** k for k in range(20)]).labels("0", "m").observe(0.1)
app = FastAPI()
class PrometheusResponse(Response):
    media_type = prometheus_client.CONTENT_TYPE_LATEST
Instrumentator(excluded_handlers=["/metrics", "/health"], registry=registry).add().instrument(app).expose(app, response_class=PrometheusResponse)
if "--no-mount" not in sys.argv:
    metrics_route = Mount("/metrics", make_asgi_app(registry=registry))
    metrics_route.path_regex = re.compile("^/metrics(?P<path>.*)$")
    app.routes.append(metrics_route)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
