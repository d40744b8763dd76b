#!/usr/bin/env bash
# Runs every test: the Python engine's (pytest) and the TypeScript product's (node's test runner), then prints
# one combined closing line. Tests that need ../shared/models/stories260k skip with a message where it is absent.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log_py=$(mktemp); log_js=$(mktemp)
trap 'rm -f "$log_py" "$log_js"' EXIT

echo "== engine tests (pytest)"
engine/.venv/bin/python -m pytest engine/tests -q -rs 2>&1 | tee "$log_py"
py_rc=${PIPESTATUS[0]}

echo "== product tests (node --test)"
# Only *.test.js files: fixtures and helpers under dist/test are not tests (node would run every .js there).
mapfile -t test_files < <(find dist/test -name '*.test.js' | sort)
node --test --test-concurrency=1 "${test_files[@]}" 2>&1 | tee "$log_js"
js_rc=${PIPESTATUS[0]}

count() { grep -Eo "$1" "$2" | tail -1 | grep -Eo '[0-9]+' || echo 0; }
py_pass=$(count '[0-9]+ passed' "$log_py"); py_fail=$(count '[0-9]+ failed' "$log_py"); py_skip=$(count '[0-9]+ skipped' "$log_py")
js_pass=$(count '^# pass [0-9]+' "$log_js"); js_fail=$(count '^# fail [0-9]+' "$log_js"); js_skip=$(count '^# skipped [0-9]+' "$log_js")
py_err=$(count '[0-9]+ errors?' "$log_py")
failed=$((py_fail + js_fail + py_err))
# A runner that failed without counting a failure (e.g. pytest could not import its conftest) still counts.
if [ "$py_rc" -ne 0 ] && [ $((py_fail + py_err)) -eq 0 ]; then failed=$((failed + 1)); fi
if [ "$js_rc" -ne 0 ] && [ "$js_fail" -eq 0 ]; then failed=$((failed + 1)); fi
echo
echo "tests: $((py_pass + js_pass)) passed, $failed failed, $((py_skip + js_skip)) skipped"
# pytest exits 5 when it collected nothing: that is a failure here, as is any other non-zero code.
[ "$py_rc" -eq 0 ] && [ "$js_rc" -eq 0 ]
