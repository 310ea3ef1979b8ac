#!/usr/bin/env bash
# fuzz.sh runs every native Go fuzz target (func FuzzXxx in a _test.go file)
# of the module for FUZZTIME each (default 10s), one after the other, and
# exits non-zero if any of them finds a crash or fails to run. The input
# that crashed is written by `go test` to that package's testdata/fuzz/FuzzXxx/
# directory: commit it, and it becomes a regression test that every plain
# `go test` runs.
#
#   scripts/fuzz.sh                 all targets, 10 s each
#   FUZZTIME=1m scripts/fuzz.sh     longer runs
#   FUZZMINIMIZE=60s scripts/fuzz.sh  (default 100x: a long minimisation of a new
#                                     input would stall a short run)
#   scripts/fuzz.sh ./internal/verify ./internal/eventlog   only these packages
#
# Targets are found in the source, so a new FuzzXxx is fuzzed without
# editing this script.
set -euo pipefail

cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}

# "dir name" per target, sorted; testdata and hidden directories are not Go
# packages.
mapfile -t targets < <(
	find . -type d \( -name testdata -o -name '.*' -a ! -name . \) -prune -o -type f -name '*_test.go' -print |
		xargs grep -HoE '^func Fuzz[A-Za-z0-9_]*\(' |
		sed -E 's|^\./((.*)/)?[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($|\2 \3|' |
		sort -u
)

if [ "$#" -gt 0 ]; then
	want=" $* "
	mapfile -t targets < <(for t in "${targets[@]}"; do
		case "$want" in *" ./${t%% *} "*) echo "$t" ;; esac
	done)
fi

if [ "${#targets[@]}" -eq 0 ]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

# crashers counts the inputs saved for a target: go test writes one there
# when the target fails.
crashers() {
	local d="$1/testdata/fuzz/$2"
	if [ -d "$d" ]; then find "$d" -type f | wc -l; else echo 0; fi
}

echo "fuzz.sh: ${#targets[@]} targets, $fuzztime each"
failed=()
start=$SECONDS
for t in "${targets[@]}"; do
	dir=${t%% *}
	dir=${dir:-.}
	name=${t##* }
	t0=$SECONDS
	before=$(crashers "$dir" "$name")
	for attempt in 1 2; do
		if go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" -fuzzminimizetime="${FUZZMINIMIZE:-100x}" "./$dir"; then
			echo "fuzz.sh: ok   $name ./$dir ($((SECONDS - t0)) s)"
			break
		fi
		if [ "$(crashers "$dir" "$name")" -gt "$before" ]; then
			echo "fuzz.sh: FAIL $name ./$dir: crasher saved in ./$dir/testdata/fuzz/$name/ (commit it)" >&2
			failed+=("$name ./$dir (crasher)")
			break
		fi
		# No input was saved: the package did not build, or the fuzzing
		# engine itself failed. Try once more before failing.
		if [ "$attempt" -eq 2 ]; then
			echo "fuzz.sh: FAIL $name ./$dir: failed twice without saving an input (see the output above)" >&2
			failed+=("$name ./$dir (no crasher)")
		fi
	done
done
echo "fuzz.sh: ${#targets[@]} targets in $((SECONDS - start)) s"

if [ "${#failed[@]}" -gt 0 ]; then
	echo "fuzz.sh: ${#failed[@]} failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
