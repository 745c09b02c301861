#!/usr/bin/env bash
# usage: bench/fingerprint.sh REPO OUTDIR -- a behaviour fingerprint of chipq: the real VGG-16 blobs (default
# retraining and --no-retrain), descriptor files and --json outputs, with their SHA-256 in OUTDIR/sums.txt
# (compare two checkouts to show "no change"). Timings are dropped from the JSON before hashing
# (every key with "seconds" in its name) and the checkout's own path is written $REPO; everything else must
# match byte for byte. `bench/fingerprint.sh REPO OUTDIR --sums-only` redoes only the normalising and the sums.
# Needs REPO/.venv/bin/chipq and the real VGG-16 in $CHIPQ_MODELS (default /work/models: chipq fetch-vgg16 -o DIR).
set -u
repo=$(cd "$1" && pwd); out=$2; mkdir -p "$out"; cd "$out"
C=$repo/.venv/bin/chipq
PY=$repo/.venv/bin/python
M=${CHIPQ_MODELS:-/work/models}
if [ "${3:-}" != "--sums-only" ]; then
$C compress $M/vgg16.pt --plan 3x7,1x6 -o real.blob --json > compress.raw.json 2>compress.log
$C compress $M/vgg16.pt --plan 3x7,1x6 --no-retrain -o fast.blob --json > compress_fast.raw.json 2>>compress.log
$C inspect real.blob --json > inspect.raw.json
$C inspect real.blob --input 640x480 --json > inspect640.raw.json
$C inspect fast.blob --hw 256@200 --json > inspect_hw.raw.json
$C inspect $repo/samples/tiny.blob --json > inspect_tiny.raw.json
$C verify real.blob --model $M/vgg16.pt --images $repo/samples/photos --golden 1 --limit 3 --json > verify.raw.json 2>/dev/null
$C extract $repo/samples --blob real.blob -o chip_nip.npz > /dev/null 2>&1
$C extract $repo/samples --blob fast.blob -d bit -o chip_bit.npz > /dev/null 2>&1
$C extract $repo/samples/photos --blob real.blob --rnip 5 -o chip_rnip5.npz > /dev/null 2>&1
$C extract $repo/samples --model $M/vgg16.pt -o float_nip.npz > /dev/null 2>&1
$C extract $repo/samples --blob $repo/samples/tiny.blob -o tiny_nip.npz > /dev/null 2>&1
$C eval chip_nip.npz --gt $repo/samples/groundtruth.json --exclude-queries --json > eval_chip.raw.json
$C eval float_nip.npz --gt $repo/samples/groundtruth.json --exclude-queries --json > eval_float.raw.json
$C eval chip_bit.npz --gt $repo/samples/groundtruth.json --exclude-queries --json > eval_bit.raw.json
fi
for raw in *.raw.json; do
    "$PY" - "$raw" "${raw%.raw.json}.json" "$repo" <<'PYEOF'
import json, sys
def drop(value):
    if isinstance(value, dict):
        return {k: drop(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [drop(v) for v in value]
    return value
with open(sys.argv[1]) as f:
    text = f.read().replace(sys.argv[3], "$REPO")
try:
    data = drop(json.loads(text))
except ValueError:
    data = {"not_json": text}
with open(sys.argv[2], "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
PYEOF
done
sha256sum *.blob *.npz $(ls *.json | grep -v raw.json) | tee sums.txt
