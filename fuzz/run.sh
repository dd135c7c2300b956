#!/usr/bin/env bash
# Builds the fuzz targets on the stable toolchain and runs one (README "Fuzzing").
#   bash fuzz/run.sh build                  # all targets, instrumented, into fuzz/target
#   bash fuzz/run.sh TARGET [libFuzzer flags] # e.g. wire -runs=10000000
#   bash fuzz/run.sh minimize TARGET          # fold fuzz/work/TARGET into corpus/TARGET
# New finds go to fuzz/work/TARGET (not committed); `minimize` keeps an edge cover of the
# committed corpus and the finds, which is what corpus/ holds (CI replays it).
# libFuzzer (libfuzzer-sys, compiled by the system C++ compiler) with rustc's stable
# SanitizerCoverage pass: inline 8-bit counters, PC table and comparison tracing, as
# cargo-fuzz passes them, without the nightly-only -Zsanitizer (debug assertions and overflow
# checks are on instead). `--cfg fuzzing` builds the harness modules. The target triple is
# given so build scripts and proc macros are not instrumented.
set -euo pipefail
cd "$(dirname "$0")"
triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ "${1:-build}" = build ]; then
    cargo build --locked --release --target "$triple" --bins
    exit 0
fi
if [ "$1" = minimize ]; then
    target="$2"
    bin="$CARGO_TARGET_DIR/$triple/release/$target"
    fresh="$(mktemp -d)"
    mkdir -p "work/$target"
    "$bin" -set_cover_merge=1 -use_counters=0 -max_len=4096 "$fresh" "corpus/$target" "work/$target"
    # Named regression inputs stay under their names.
    find "corpus/$target" -type f -name '*-*' ! -name 'seed-*' -exec cp {} "$fresh/" \;
    rm -rf "corpus/$target"
    mv "$fresh" "corpus/$target"
    chmod 755 "corpus/$target"
    exit 0
fi
target="$1"
shift
cargo build --locked --release --target "$triple" --bin "$target"
mkdir -p "work/$target" "artifacts/$target"
exec "$CARGO_TARGET_DIR/$triple/release/$target" -artifact_prefix="artifacts/$target/" \
    -max_len=4096 -timeout=10 "$@" "work/$target" "corpus/$target"
