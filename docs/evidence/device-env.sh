# Sourced by every run-*.sh here, on the lent GPU node after the vLLM bundle is staged: the
# bundle's environment (NVLink multicast off, vLLM on the path), unbuffered output, gpucert
# installed from this checkout (the node's python3 has none: `make` there runs `python3 -m pytest`,
# whose conftest imports gpucert), and $OUT made.
[[ -f /tmp/devsite/env.sh ]] && source /tmp/devsite/env.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# gpucert's code from this checkout, whichever tree runs (device-bg.sh's copy or the call's own):
# an editable install made from another tree would otherwise serve that tree's code
export PYTHONPATH=$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}
# installed = its metadata (the pytest11 entry point that loads the plugin), not merely importable
python3 -c "import importlib.metadata as m; m.distribution('gpucert')" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 \
  || { tail -3 /tmp/pip.log; echo "gpucert did not install from $PWD"; exit 3; }
