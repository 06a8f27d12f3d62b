"""A stand-in for `vllm serve --distributed-executor-backend ray` (vLLM cannot run here): it joins
the Ray cluster its environment's RAY_ADDRESS names, as vLLM's Ray executor does, reserves
tensor × pipeline bundles of one GPU in a PACK placement group (vLLM's strategy), starts one actor
per bundle (vLLM's workers), writes where each landed to a JSON file, and then serves as the
emulator on the lifecycle's port — the actors held until it is stopped.

    python -m tests.selftest.ray_engine --port {port} --tensor {tensor_parallel_size}
        --pipeline {pipeline_parallel_size} --record FILE
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from gpucert.serving.emulator import EmulatorConfig, serve

# a loaded 2-core box places 4 bundles in seconds; the lifecycle's own start timeout is minutes
PLACEMENT_TIMEOUT_S = 120


@ray.remote
class Rank:
    """One of vLLM's workers: here it only says where Ray put it."""

    def where(self) -> dict:
        return {"node_id": ray.get_runtime_context().get_node_id(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tensor", type=int, required=True)
    parser.add_argument("--pipeline", type=int, required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    address = os.environ.get("RAY_ADDRESS")
    # address=None would start a private one-node Ray: what gpucert's RAY_ADDRESS must prevent
    ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    world = args.tensor * args.pipeline
    group = placement_group([{"GPU": 1}] * world, strategy="PACK")
    ray.get(group.ready(), timeout=PLACEMENT_TIMEOUT_S)
    # num_cpus=0: a bundle holds one GPU and no CPU, as vLLM's workers ask
    ranks = [Rank.options(num_cpus=0, num_gpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
        placement_group=group, placement_group_bundle_index=index)).remote() for index in range(world)]
    placed = ray.get([rank.where.remote() for rank in ranks], timeout=PLACEMENT_TIMEOUT_S)
    Path(args.record).write_text(json.dumps({
        "ray_address": address, "tensor": args.tensor, "pipeline": args.pipeline,
        "cluster_gcs_address": ray.get_runtime_context().gcs_address, "ranks": placed}, indent=1) + "\n")
    print(f"ray stand-in: {world} worker(s) on {len({p['node_id'] for p in placed})} node(s)", flush=True)
    serve(EmulatorConfig(ttft_ms=2, itl_ms=1), port=args.port)  # until the lifecycle stops it; ranks held


if __name__ == "__main__":
    main()
