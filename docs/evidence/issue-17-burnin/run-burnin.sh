#!/usr/bin/env bash
# Issue 17 on the lent one-GPU H200, from the repo root after the vLLM bundle is staged (torch and
# pynvml come with the node; the bundle is not needed for PART=peer). Start with device-bg.sh so it
# outlives one call:
#   bash docs/evidence/device-bg.sh start burnin bash docs/evidence/issue-17-burnin/run-burnin.sh burnin
#   bash docs/evidence/device-bg.sh start peer bash docs/evidence/issue-17-burnin/run-burnin.sh peer   # carry .devbundle/mamf-finder.py
# PART burnin (~12 min): `make burnin` as the README gives it (10 minutes, then the memtest); the
# report comes back as burnin.tgz. PART peer (~5 min): mamf-finder (stas00/ml-engineering, the
# version in .devbundle/mamf-finder.py: 30 s warm-up, mean of 100 back-to-back iterations per
# shape) and gpucert's sustained search over the same bf16 grid, one after the other on the GPU, then
# make certify's method (ranked by bursts, 3 timed sustained). PART gemm (~2 min): make certify's GEMM
# checks alone, judged by the shipped thresholds. PART rebaseline (~7 min): those checks twice with
# --update-baselines into a copy of baselines/, then a plain rerun against them; gemm.json comes back.
# PART projections (~2.5 min): the model-projection GEMMs alone, twice (their run-to-run spread).
set -uo pipefail
source docs/evidence/device-env.sh
part=${1:-burnin}
case $part in
  burnin)
    report=reports/burnin; rm -rf "$report"; log=/tmp/burnin.log
    start=$(date +%s)
    make burnin PYTHON=python3 BURNIN_MIN=${BURNIN_MIN:-10} ARGS="--report-dir=$report --baselines-dir=/tmp/gpucert-burnin-baselines" > "$log" 2>&1
    echo "burnin: exit $? in $(( $(date +%s) - start )) s" | tee -a "$log"
    grep -E "^gpucert|passed|failed" "$log" | tail -4
    cp "$log" "$report/make.log" 2>/dev/null
    gzip -f "$report/metrics.json" "$report"/burnin/*.log 2>/dev/null
    tar czf "$OUT/burnin.tgz" "$report" ;;
  peer)
    # mamf-finder's ranges stop before STOP (numpy arange), gpucert's include it: the same 64 shapes
    grid="4096 16385 4096"; range=4096:16384:4096
    # every file is written under /tmp and copied to $OUT at the end: device-bg.sh's wait moves a
    # finished $OUT file away at once, and the summary below reads them all (session 30 lost its tail)
    peer=/tmp/peer; rm -rf "$peer"; mkdir -p "$peer"
    start=$(date +%s)
    python3 .devbundle/mamf-finder.py --m_range $grid --n_range $grid --k_range $grid --dtype bfloat16 \
      --output_file "$peer/mamf-finder-bf16.txt" > /tmp/mamf.log 2>&1
    echo "mamf-finder: exit $? in $(( $(date +%s) - start )) s"; tail -3 "$peer/mamf-finder-bf16.txt"
    start=$(date +%s)
    python3 -m gpucert.cli bench gemm --device cuda:0 --dtype bf16 --shapes search --search-range $range \
      --sustain-s 1 --warmup-s 0.3 --preheat-s 30 --search-budget 900 --json > "$peer/gpucert-search-sustained.json" 2> /tmp/gsearch.log
    echo "gpucert sustained search: exit $? in $(( $(date +%s) - start )) s"
    python3 -m gpucert.cli bench gemm --device cuda:0 --dtype bf16 --shapes search --search-range $range \
      --search-budget 900 --json > "$peer/gpucert-search-burst.json" 2>> /tmp/gsearch.log
    echo "gpucert burst search: exit $?"
    # make certify's own method: the grid ranked by bursts, its 3 fastest shapes timed sustained
    python3 -m gpucert.cli bench gemm --device cuda:0 --dtype bf16 --shapes search --search-range $range \
      --sustain-s 1 --warmup-s 0.5 --sustain-top 3 --preheat-s 15 --json > "$peer/gpucert-search-certify.json" 2>> /tmp/gsearch.log
    echo "gpucert certify-mode search: exit $?"
    python3 - "$peer" <<'PY'
import json, sys
out = sys.argv[1]
for name in ("sustained", "burst", "certify"):
    rows = json.load(open(f"{out}/gpucert-search-{name}.json"))
    print(name, [(r["m"], r["n"], r["k"], round(r["tflops"] or 0, 1)) for r in rows if r["shape"] == "search"])
PY
    cp /tmp/mamf.log /tmp/gsearch.log "$peer"/* "$OUT"/ ;;
  gemm)
    # make certify's GEMM checks alone (sustained figures, issue 17 point 4), judged by the shipped
    # thresholds; no baseline (a fresh folder), so the datasheet floors are what can fail
    report=reports/gemm; rm -rf "$report"; start=$(date +%s)
    python3 -m pytest tests/hardware/test_gemm.py -m hardware -p no:cacheprovider -q --report-dir=$report \
      --baselines-dir=/tmp/gpucert-gemm-baselines > /tmp/gemm.log 2>&1
    echo "certify GEMM checks: exit $? in $(( $(date +%s) - start )) s"; tail -3 /tmp/gemm.log
    cp /tmp/gemm.log "$report/pytest.log"; gzip -f "$report/metrics.json"; tar czf "$OUT/gemm.tgz" "$report" ;;
  rebaseline)
    # the committed baselines/1xH200/gemm.json holds burst figures (session 4); certify's GEMM checks
    # are sustained now, and a baseline of another method is neither compared with nor merged into.
    # Two separate --update-baselines runs into a copy of the committed baselines (a node's first
    # baseline wants two: its between-run noise), then a plain rerun judged against them (~7 min)
    dir=/tmp/gpucert-rebaseline; rm -rf "$dir" reports/gemm-*; cp -r baselines "$dir"; touch /tmp/gemm-start
    for run in update1 update2 rerun; do
      opt=(--update-baselines); [[ $run == rerun ]] && opt=()
      start=$(date +%s)
      python3 -m pytest tests/hardware/test_gemm.py -m hardware -p no:cacheprovider -q "${opt[@]}" \
        --report-dir=reports/gemm-$run --baselines-dir=$dir > /tmp/gemm-$run.log 2>&1
      echo "gemm $run: exit $? in $(( $(date +%s) - start )) s"; tail -2 /tmp/gemm-$run.log
      cp /tmp/gemm-$run.log reports/gemm-$run/pytest.log; gzip -f reports/gemm-$run/metrics.json
    done
    # what changed, per profile the snapshot named: the new gemm.json files, and each run's report
    (cd "$dir" && find . -name gemm.json -newer /tmp/gemm-start) | tee /tmp/gemm-written.txt
    tar czf "$OUT/rebaseline.tgz" -C "$dir" $(cat /tmp/gemm-written.txt) -C "$PWD" reports/gemm-update1 \
      reports/gemm-update2 reports/gemm-rerun ;;
  projections)
    # certify's model-projection GEMMs (small m: decode-sized) twice, no baseline: session 36 found
    # their eager launches moving 13-77 % between runs (the host's launch rate); CUDA graphs now
    rm -rf reports/proj-*
    for run in 1 2; do
      start=$(date +%s)
      python3 -m pytest tests/hardware/test_gemm.py -m hardware -k qwen -p no:cacheprovider -q \
        --report-dir=reports/proj-$run --baselines-dir=/tmp/gpucert-proj-baselines > /tmp/proj-$run.log 2>&1
      echo "projections run $run: exit $? in $(( $(date +%s) - start )) s"; tail -1 /tmp/proj-$run.log
      cp /tmp/proj-$run.log reports/proj-$run/pytest.log; gzip -f reports/proj-$run/metrics.json
    done
    tar czf "$OUT/projections.tgz" reports/proj-1 reports/proj-2 ;;
  pershape)
    ms=${SHAPES_M:-4096 12288}; ns=${SHAPES_N:-4096 12288}; ks=${SHAPES_K:-8192 16384}
    python3 .devbundle/mamf-finder.py --m $ms --n $ns --k $ks --dtype bfloat16 \
      --output_file "$OUT/pershape-mamf.txt" > /tmp/mamf-pershape.log 2>&1
    echo "mamf-finder: exit $?"
    g="python3 -m gpucert.cli bench gemm --device cuda:0 --dtype bf16 --shapes search --json"
    preheat=15
    for m in $ms; do for n in $ns; do for k in $ks; do
      one="--m-range $m:$m:$m --n-range $n:$n:$n --k-range $k:$k:$k"
      sus=$($g $one --sustain-s 1 --warmup-s 0.3 --preheat-s $preheat); preheat=0
      burst=$($g $one)
      python3 - "$m" "$n" "$k" "$sus" "$burst" <<'PY'
import json, re, sys
m, n, k, sus, burst = sys.argv[1:]
tf = lambda text: json.loads(text)[0]["tflops"]
mamf = re.search(rf"([\d.]+)\(mean\)\s+([\d.]+)\(median\)\s+([\d.]+)\(max\) @ {m}x{n}x{k}\b",
                 open("/tmp/mamf-pershape.log").read())
mean, mx = (float(mamf[1]), float(mamf[3])) if mamf else (float("nan"), float("nan"))
print(f"{m}x{n}x{k}  mamf mean {mean:7.1f}  max {mx:7.1f}  |  gpucert sustained {tf(sus):7.1f} "
      f"({100 * (tf(sus) / mean - 1):+.1f} % of mamf mean)  burst {tf(burst):7.1f}")
PY
    done; done; done | tee "$OUT/pershape.txt"
    cp /tmp/mamf-pershape.log "$OUT"/ ;;
  *) echo "usage: run-burnin.sh burnin|peer|gemm|rebaseline|projections|pershape"; exit 2 ;;
esac
nvidia-smi --query-gpu=index,memory.used,temperature.gpu,clocks.sm --format=csv,noheader | sed 's/^/after: gpu /'
