#!/usr/bin/env bash
# Time and peak memory of the backbone half of the default DAG (datasets → model → behaviour →
# hidden states → directions → geometry) for one model, in a fresh work directory.
# Usage: bash benchmarks/backbone.sh [MODEL] [EXTRA SNAKEMAKE ARGS...]
# Writes benchmarks/out/backbone-MODEL.txt (GNU time -v of the whole run) and prints a summary;
# record the result in benchmarks/backbone.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL=${1:-smollm2-135m}; shift || true
WD=$(mktemp -d /tmp/harmref-bench.XXXXXX)
mkdir -p "$WD/config" "$ROOT/benchmarks/out"
sed "s#^data_root: .*#data_root: $ROOT/data#" "$ROOT/config/config.yaml" > "$WD/config/config.yaml"
OUT="$ROOT/benchmarks/out/backbone-$MODEL.txt"
/usr/bin/time -v "$ROOT/.venv/bin/snakemake" -s "$ROOT/Snakefile" --directory "$WD" --cores 2 --quiet rules \
  "results/$MODEL/tables/refusal_rates.csv" "results/$MODEL/tables/cosine_by_layer.csv" "$@" 2> "$OUT"
grep -E "Elapsed|Maximum resident" "$OUT"
echo "per-job peak RSS is in each rule's benchmark-free log; outputs kept in $WD"
