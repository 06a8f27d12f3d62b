#!/usr/bin/env bash
# Issue 13, item 10: the self-tests (`make test test-slow`, both tiers, as CI runs them; TARGETS
# overrides) while every core is busy with an unrelated CPU hog, N runs in a row (default 5).
# Writes a log per run and a table (run, passed, failed, errors, skipped, duration, exit status)
# to OUT (default: docs/evidence/issue-13-faults/under-load/); exits 0 only when every run was
# green. The hogs are stopped however the script ends (trap).
#
#   docs/evidence/issue-13-faults/make-test-under-load.sh [RUNS]
#   PYTHON=.venv/bin/python OUT=/tmp/under-load HOGS=2 docs/evidence/issue-13-faults/make-test-under-load.sh 5
#
# A hog is `python3 -c 'while True: pass'` at the default nice level, one per core (HOGS
# overrides): the self-tests compete for the CPU as they would with any other job on the box.
set -euo pipefail

RUNS="${1:-5}"
case "$RUNS" in ''|*[!0-9]*|0) echo "ERROR: gpucert: RUNS must be a positive integer, got '$RUNS'" >&2; exit 4;; esac
cd "$(dirname "$0")/../../.."
HOGS="${HOGS:-$(nproc)}"
OUT="${OUT:-docs/evidence/issue-13-faults/under-load}"
PYTHON="${PYTHON:-python3}"
# both tiers of the self-tests, as CI runs them (`TARGETS=test`: the quick tier alone)
TARGETS="${TARGETS:-test test-slow}"
mkdir -p "$OUT"

hog_pids=()
stop_hogs() {
    for pid in "${hog_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${hog_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    hog_pids=()
}
trap stop_hogs EXIT
trap 'stop_hogs; exit 130' INT TERM

for _ in $(seq "$HOGS"); do
    python3 -c 'while True: pass' &
    hog_pids+=("$!")
done

table="$OUT/make-test-under-load.md"
{
    echo "# \`make $TARGETS\` under a CPU hog on every core"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $HOGS hogs"
    echo "(\`python3 -c 'while True: pass'\`), load average before the first run: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| run | passed | failed | errors | skipped | duration (s) | exit |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
} > "$table"

count() {  # count WORD LOG: the numbers before WORD in pytest's summary lines, one per session
    grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected).* in [0-9.]+s' "$2" \
        | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' | awk '{ n += $1 } END { print n + 0 }'
}

green=0
for run in $(seq "$RUNS"); do
    log="$OUT/run-$run.log"
    started=$(date +%s)
    status=0
    # shellcheck disable=SC2086  # TARGETS is a list of make targets
    make $TARGETS PYTHON="$PYTHON" ARGS="-p no:cacheprovider" > "$log" 2>&1 || status=$?
    duration=$(( $(date +%s) - started ))
    echo "| $run | $(count passed "$log") | $(count failed "$log") | $(count 'errors?' "$log") | $(count skipped "$log") | $duration | $status |" >> "$table"
    [ "$status" -eq 0 ] && green=$((green + 1))
    echo "run $run: exit $status in ${duration} s ($log)"
done

stop_hogs
echo >> "$table"
echo "$green of $RUNS runs green." >> "$table"
cat "$table"
[ "$green" -eq "$RUNS" ]
