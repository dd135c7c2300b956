#!/usr/bin/env bash
# Smoke run of the policy and audit benchmarks (issue 9): tiny sizes and durations, debug
# build, so they cannot rot. Timings are printed, never asserted; the audit bench fails only
# if a record acknowledged by submit_and_wait is lost after SIGKILL, or the chain breaks.
# Full-scale runs: `cargo bench --bench policy` and `cargo bench --bench audit` (README,
# "Benchmarks").
set -euo pipefail
cd "$(dirname "$0")/.."
# Under `cargo test` criterion runs each benchmark once (no --bench argument).
KEYWARD_BENCH_SCALE=0.001 cargo test --locked --bench policy
KEYWARD_BENCH_AUDIT_SECS=0.1 KEYWARD_BENCH_AUDIT_QUEUE=1024 \
    KEYWARD_BENCH_AUDIT_KILL_MS=300 KEYWARD_BENCH_AUDIT_KILL_RUNS=1 \
    cargo test --locked --bench audit
# The PKCS#11 benchmark (SoftHSM2 direct, p11-kit RPC, Keyward) with tiny durations: it
# exits non-zero if any operation fails through Keyward. Full run: README, "Performance".
cargo build --locked --quiet -p keyward -p keyward-pkcs11 -p keyward-bench
target=${CARGO_TARGET_DIR:-$PWD/target}
"$target/debug/keyward-bench" --smoke
# 1,000 concurrent module instances (processes) on one keywardd: each signs and stays
# connected; fails unless every one succeeds and exits cleanly.
"$target/debug/keyward-bench" connections --count 1000
