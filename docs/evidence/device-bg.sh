#!/usr/bin/env bash
# Runs a long command on the lent GPU node past one call's 10-minute limit (the machine stays warm
# while calls follow each other within ~30 s):
#   device-bg.sh start NAME CMD...    start CMD in its own session (it outlives this call), in a copy
#                                     of the checkout (/tmp/gpucert-bg/NAME/tree: device-env.sh imports
#                                     gpucert from there); its files go to /tmp/gpucert-bg/NAME/out ($OUT)
#   device-bg.sh stop NAME            SIGTERM CMD's whole process group (a pytest or script running vLLM
#                                     then stops its engine: SIGTERM is Ctrl-C to it); never `pkill -f`
#                                     a pattern the calling command line contains (it kills that shell)
#   (every device call re-lays the working tree first: a step that read the checkout itself could
#   lose a file for a moment — session 28's precision study stopped at once, pyproject.toml gone,
#   when the next call began as it started; so CMD runs in its own copy, which no call touches)
#   device-bg.sh wait NAME SECONDS    wait up to SECONDS (less once files are ready); print the log's
#                                     tail; move finished files to this call's $OUT; DONE when all is
set -uo pipefail
cmd=$1; name=$2; shift 2
base=/tmp/gpucert-bg/$name
case $cmd in
  start)
    rm -rf "$base"; mkdir -p "$base/out" "$base/tree"
    # the checkout without its reports, git, venv and the bundle's large chunks (staged already)
    tar -c --exclude=./reports --exclude=./.git --exclude=./.venv --exclude='./.devbundle*/c[0-9]*' --exclude='./.devbundle*/smol[0-9]*' . \
      | tar -x -C "$base/tree" || { echo "could not copy the checkout to $base/tree"; exit 3; }
    cd "$base/tree" || exit 3
    # one simple command in the background, so $! is the new session's leader (`stop` signals its group)
    OUT=$base/out setsid nohup bash -c '"$@"; echo $? > '"$base/rc" _ "$@" > "$base/log" 2>&1 < /dev/null &
    echo $! > "$base/pid"
    echo "started $name (pid $!) in $base/tree";;
  stop)
    pid=$(cat "$base/pid" 2>/dev/null) || { echo "no $name started"; exit 1; }
    kill -TERM -- "-$pid" 2>/dev/null && echo "sent SIGTERM to process group $pid"
    for _ in $(seq 60); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 1; done
    kill -0 -- "-$pid" 2>/dev/null && { kill -KILL -- "-$pid"; echo "SIGKILL after 60 s"; }
    nvidia-smi --query-gpu=index,memory.used --format=csv,noheader 2>/dev/null | sed 's/^/after: gpu /';;
  wait)
    # returns when CMD ended, at the deadline, or once finished files wait in its out folder (so a
    # pipeline's results come back step by step, at most 7 a call: the device returns 8 files)
    deadline=$(( $(date +%s) + $1 ))
    # a file the job still writes (a redirect's target is there, empty, from the command's start;
    # mamf-finder appends to its output file shape by shape) is not finished: it waits for the end
    finished() {
      [[ -f $base/rc ]] && return 0
      [[ -s $1 ]] || return 1
      [[ -z $(find /proc/[0-9]*/fd -lname "$1" -print -quit 2>/dev/null) ]]
    }
    ready() { local f; for f in "$base/out"/*; do [[ -e $f ]] && finished "$f" && return 0; done; return 1; }
    while [[ ! -f $base/rc ]] && (( $(date +%s) < deadline )) && ! ready; do sleep 5; done
    tail -n 40 "$base/log"
    # the newest gpucert.log: a check's progress (engine starts, levels) while make's output waits
    newest=$(ls -t "$base"/tree/reports/*/gpucert.log 2>/dev/null | head -1)
    [[ -n $newest ]] && { echo "-- $newest"; tail -n 6 "$newest" | cut -c1-240; }
    moved=0
    for f in "$base/out"/*; do
      [[ -e $f ]] && (( moved < 7 )) && finished "$f" || continue
      mv "$f" "${OUT:-/tmp/out}/" && moved=$((moved + 1)) && echo "fetched $(basename "$f")"
    done
    if [[ -f $base/rc ]] && [[ -z $(ls -A "$base/out" 2>/dev/null) ]]; then
      echo "DONE $name: exit $(cat "$base/rc")"
    else
      echo "RUNNING $name (or files left: call wait again)"
    fi;;
  *) echo "usage: device-bg.sh start|wait|stop NAME ..."; exit 2;;
esac
