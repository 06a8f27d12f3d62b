"""Baseline files: strict reading, merge-only writes, refusals, atomic replace."""

import json

import pytest

from gpucert.baselines import BaselineError, BaselineStore, Provenance, empty_family, merge, write_atomic
from gpucert.metrics import Metric


def metric(name, value, samples=(), **params):
    return Metric(check="gemm", family="gemm", metric=name, unit="TFLOP/s", value=value,
                  params=params, samples=list(samples), direction="higher")


PROV = Provenance("sha256:abc", "deadbeef", "2026-11-27T00:00:00+00:00")


def test_merge_writes_only_measured_and_keeps_the_rest():
    existing = empty_family("P", "gemm")
    existing["metrics"]["gemm[dtype=fp16]::tflops"] = {"value": 700.0}
    existing["metrics"]["gemm[dtype=bf16]::tflops"] = {"value": 750.0}
    doc, changes = merge(existing, [metric("tflops", 780.0, [779, 780, 781], dtype="bf16")], {}, PROV, {})
    assert doc["metrics"]["gemm[dtype=fp16]::tflops"] == {"value": 700.0}
    entry = doc["metrics"]["gemm[dtype=bf16]::tflops"]
    assert entry["value"] == 780.0 and entry["samples"] == 3 and entry["spread"] == pytest.approx(1.0)
    assert entry["direction"] == "higher" and entry["snapshot_digest"] == "sha256:abc"
    assert doc["git_revision"] == "deadbeef" and doc["gpucert_version"]
    assert [(c.action, c.old, c.new) for c in changes] == [("updated", 750.0, 780.0)]
    assert changes[0].line() == "~ gemm[dtype=bf16]::tflops: 750 -> 780 (+4.0%)"


def test_merge_refuses_non_finite_and_too_few_samples():
    nan = metric("tflops", float("nan"), dtype="a")
    bad_sample = metric("tflops", 1.0, [1.0, float("inf"), 1.0], dtype="b")
    few = metric("tflops", 1.0, [1.0, 1.0], dtype="c")
    errored = Metric("gemm", "gemm", "tflops", "TFLOP/s", None, {"dtype": "d"}, status="error", error="OOM")
    doc, changes = merge(empty_family("P", "gemm"), [nan, bad_sample, few, errored], {}, PROV,
                         {few.key: 3, nan.key: 1, bad_sample.key: 1, errored.key: 1})
    assert doc["metrics"] == {}
    assert [c.action for c in changes] == ["refused"] * 4
    assert "not finite" in changes[0].reason and "NaN or inf" in changes[1].reason
    assert "2 sample(s), thresholds.yaml asks for at least 3" in changes[2].reason
    assert "OOM" in changes[3].reason


def test_store_reads_strictly(tmp_path):
    store = BaselineStore(tmp_path, "2xH100-80GB-HBM3-NV18")
    assert store.entry("gemm", "x") is None  # missing file: no baseline, nothing created
    assert not (tmp_path / "2xH100-80GB-HBM3-NV18").exists()
    doc = empty_family("8xA100-SXM4-80GB-NV12", "gemm")
    write_atomic(store.path("gemm"), doc)
    with pytest.raises(BaselineError, match="measured on profile '8xA100-SXM4-80GB-NV12', this run is profile '2xH100"):
        BaselineStore(tmp_path, "2xH100-80GB-HBM3-NV18").validate_all()
    store.path("gemm").write_text("{not json")
    with pytest.raises(BaselineError, match="cannot read baseline"):
        BaselineStore(tmp_path, "2xH100-80GB-HBM3-NV18").family("gemm")


def test_profile_names_are_validated(tmp_path):
    with pytest.raises(BaselineError, match="not a valid name"):
        BaselineStore(tmp_path, "../etc")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "p" / "f.json"
    write_atomic(target, {"a": 1})
    with pytest.raises(ValueError):
        write_atomic(target, {"a": float("nan")})  # refused by allow_nan=False
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_written_files_are_readable_by_everyone(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "f.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644
