#!/usr/bin/env bash
# Runs each fuzz target in fuzz/ for SECONDS (default 180), one after the
# other, seeded with the inputs kept under fuzz/regressions/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: sse completion config_toml
#
# New inputs go to fuzz/corpus/<target>/ (not committed); a crash stops the
# script and leaves its input in fuzz/artifacts/<target>/. Keep a crash's
# input (and any small input worth re-checking) in fuzz/regressions/<target>/:
# the crates' regression tests run every file there.
#
# cargo-fuzz needs nightly compiler features; on a stable toolchain
# RUSTC_BOOTSTRAP=1 unlocks them. No sanitizer: the crates forbid unsafe code,
# and debug assertions (overflow checks) stay on.
set -euo pipefail

secs="${1:-180}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(sse completion config_toml)
fi

cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    dict=()
    if [ -f "dict/$target.dict" ]; then
        dict=("-dict=dict/$target.dict")
    fi
    echo "== $target: ${secs}s"
    cargo fuzz run --sanitizer none "$target" "corpus/$target" "regressions/$target" -- \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}"
done
