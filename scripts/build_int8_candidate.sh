#!/usr/bin/env bash
# Build a candidate ensemble served as int8 (validation only): scripts/build_int8_candidate.sh NAME EXPLAIN_INDEX MEMBER...
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1; EXPLAIN=$2; shift 2
D=../shared/data/ham10000; S=splits/ham10000_seed0.csv
.venv/bin/dermxai ensemble "$@" --explain-member "$EXPLAIN" --out runs/$NAME
.venv/bin/dermxai calibrate --model runs/$NAME --data $D --split $S
.venv/bin/dermxai export --model runs/$NAME --int8 --data $D --split $S
.venv/bin/dermxai calibrate --model runs/$NAME --data $D --split $S
echo BUILT $NAME
