#!/usr/bin/env bash
# Multi-rank tests under a real mpirun. Usage: Tests/mpi/run.sh BIN_DIR
# Each case checks an exit code, a time bound and, where it matters, that no rank is left behind.
set -u
# Absolute, so that the leftover check below matches this checkout's processes only.
bin=$(cd "${1:?usage: Tests/mpi/run.sh BIN_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1
# OpenMPI's help messages mention the run-as-root and binding details; keep logs short.
export OMPI_MCA_orte_base_help_aggregate=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$root/Tests/mpi/lib.sh"

no_leftovers() {
    sleep 0.5
    if pgrep -f "$bin/suder" >/dev/null; then
        pgrep -af "$bin/suder" >>"$work/out"
        pkill -9 -f "$bin/suder"
        return 1
    fi
}

for np in "2" "3 --oversubscribe"; do
    for check in collectives checkpoint; do
        run "$check, -np $np" zero 60 mpirun -np $np "$bin/suder-mpitests" $check && pass "$check, -np $np"
    done
done

if run "doctor, -np 3 --oversubscribe" zero 60 mpirun -np 3 --oversubscribe "$bin/suder" doctor; then
    rows=$(grep -cE '^[0-2] +' "$work/out")
    if [ "$rows" = 3 ] && grep -q "all .* checks passed on 3 rank" "$work/out"; then pass "doctor, -np 3 --oversubscribe"
    else fail "doctor table has $rows rank rows"; fi
fi

if run "unknown override key" nonzero 10 mpirun -np 2 "$bin/suder" pretrain --config "$root/configs/tiny.yaml" --run-dir "$work/run" nosuch.key=1; then
    if [ "$(grep -c "unknown config key 'nosuch.key'" "$work/out")" = 1 ] && no_leftovers; then pass "unknown override key: named once, every rank gone"
    else fail "unknown override key: message or leftovers"; fi
fi

printf 'model:\n  d_modle: 64\n' >"$work/misspelt.yaml"
if run "misspelt YAML key" nonzero 10 mpirun -np 2 "$bin/suder" pretrain --config "$work/misspelt.yaml" --run-dir "$work/run2"; then
    if grep -q "unknown config key 'model.d_modle' (did you mean 'model.d_model'?)" "$work/out" && no_leftovers; then pass "misspelt YAML key: named with a suggestion"
    else fail "misspelt YAML key: message or leftovers"; fi
fi

for check in kill-rank abort-rank; do
    if run "$check" nonzero 15 mpirun -np 2 "$bin/suder-mpitests" $check; then
        if no_leftovers; then pass "$check: job ended non-zero in ${elapsed}s, no rank left"
        else fail "$check: ranks left behind"; fi
    fi
done

echo "mpi: $passed passed, $failed failed"
[ $failed -eq 0 ]
