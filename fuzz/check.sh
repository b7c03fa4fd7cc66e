#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a fixed time (KLUTCH_FUZZ_SECONDS, default 20) from its committed
# corpus in fuzz/corpus/TARGET; fails when one crashes, after running the others. What a run finds new stays
# in a scratch directory; a crashing input is kept in fuzz/artifacts/TARGET/. `.ci/run` runs this in the
# background (docs/developers/testing.md#fuzzing).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${KLUTCH_FUZZ_SECONDS:-20}
targets=(backend_health managed_object query config)
# The build is cached outside the checkout, as controlplane/build.sh caches its builds.
export CARGO_TARGET_DIR=${KLUTCH_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/klutch-health/fuzz-target}
# No AddressSanitizer: nothing in src/ is unsafe, the build needs no unstable flag without it (the stable
# toolchain builds it), and the cold build and every run are faster. libFuzzer still catches every panic, abort,
# stack overflow and timeout, and debug assertions (integer overflow included) are on.
flags=(--sanitizer none --release --debug-assertions)

cargo fuzz build "${flags[@]}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
  mkdir "$scratch/$target"
  echo "==> fuzz $target for ${seconds}s"
  # New inputs go to the first directory (scratch); the committed seeds are only read. Progress
  # lines and the recommended dictionary left out.
  set +e
  cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=1024 -print_final_stats=1 2>&1 \
    | grep -v -e '^#[0-9]' -e '^"' -e '^######'
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || failed+=("$target")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${failed[*]} crashed: reproduce with \`cargo fuzz run ${flags[*]} TARGET fuzz/artifacts/TARGET/FILE\`" >&2
  exit 1
fi
echo "fuzz: ${targets[*]}: no crash in ${seconds}s each"
