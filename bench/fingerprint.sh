#!/usr/bin/env bash
# usage: bench/fingerprint.sh REPO OUTDIR -- a behaviour fingerprint of chipq: the real VGG-16 blob, descriptor
# files and --json outputs, with their SHA-256 in OUTDIR/sums.txt (compare two checkouts to show "no change").
# Needs REPO/.venv/bin/chipq and the real VGG-16 in /work/models ($CHIPQ_MODELS, default /work/models: chipq fetch-vgg16 -o DIR).
set -u
# As run for the layout change (issue 11), when `compress` was post-training by default; for a
# later checkout add --no-retrain to both compress lines to compare like with like.
repo=$(cd "$1" && pwd); out=$2; mkdir -p "$out"; cd "$out"
C=$repo/.venv/bin/chipq
M=${CHIPQ_MODELS:-/work/models}
$C compress $M/vgg16.pt --plan 3x7,1x6 -o real.blob > compress.txt 2>&1
$C compress $M/vgg16.pt --plan 3x7,1x6 -o real2.blob --json > compress.json 2>/dev/null
$C inspect real.blob --json > inspect.json
$C inspect real.blob --input 640x480 --json > inspect640.json
$C inspect $repo/samples/tiny.blob --json > inspect_tiny.json
$C verify real.blob --model $M/vgg16.pt --golden 1 --limit 3 --json > verify.json 2>/dev/null
$C extract $repo/samples --blob real.blob -o chip_nip.npz > /dev/null 2>&1
$C extract $repo/samples --blob real.blob -d bit -o chip_bit.npz > /dev/null 2>&1
$C extract $repo/samples/photos --blob real.blob --rnip 5 -o chip_rnip5.npz > /dev/null 2>&1
$C extract $repo/samples --model $M/vgg16.pt -o float_nip.npz > /dev/null 2>&1
$C extract $repo/samples --blob $repo/samples/tiny.blob -o tiny_nip.npz > /dev/null 2>&1
$C eval chip_nip.npz --gt $repo/samples/groundtruth.json --exclude-queries --json > eval_chip.json
$C eval float_nip.npz --gt $repo/samples/groundtruth.json --exclude-queries --json > eval_float.json
$C eval chip_bit.npz --gt $repo/samples/groundtruth.json --exclude-queries --json > eval_bit.json
sha256sum *.blob *.npz *.json | tee sums.txt
