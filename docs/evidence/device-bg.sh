#!/usr/bin/env bash
# Runs a long command on the lent GPU node past one call's 10-minute limit (the machine stays warm
# while calls follow each other within ~30 s):
#   device-bg.sh start NAME CMD...    start CMD in its own session (it outlives this call); its
#                                     files go to /tmp/gpucert-bg/NAME/out ($OUT for it)
#   device-bg.sh wait NAME SECONDS    wait up to SECONDS; print the log's tail; once CMD ended,
#                                     copy its files to this call's $OUT and print its exit status
set -uo pipefail
cmd=$1; name=$2; shift 2
base=/tmp/gpucert-bg/$name
case $cmd in
  start)
    rm -rf "$base"; mkdir -p "$base/out"
    OUT=$base/out setsid nohup bash -c '"$@"; echo $? > '"$base/rc" _ "$@" > "$base/log" 2>&1 < /dev/null &
    echo "started $name (pid $!)";;
  wait)
    deadline=$(( $(date +%s) + $1 ))
    while [[ ! -f $base/rc ]] && (( $(date +%s) < deadline )); do sleep 5; done
    tail -n 40 "$base/log"
    if [[ -f $base/rc ]]; then
      cp -r "$base/out/." "${OUT:-/tmp/out}/" 2>/dev/null
      echo "DONE $name: exit $(cat "$base/rc")"
    else
      echo "RUNNING $name"
    fi;;
  *) echo "usage: device-bg.sh start|wait NAME ..."; exit 2;;
esac
