#!/usr/bin/env bash
# Multi-rank tests under a real mpirun. Usage: Tests/mpi/run.sh BIN_DIR
# Each case checks an exit code, a time bound and, where it matters, that no rank is left behind.
set -u
# Absolute, so that the leftover check (`no_leftovers "$bin/suder"`) matches this checkout's processes only.
bin=$(cd "${1:?usage: Tests/mpi/run.sh BIN_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1
# OpenMPI's help messages mention the run-as-root and binding details; keep logs short.
export OMPI_MCA_orte_base_help_aggregate=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$root/Tests/mpi/lib.sh"

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
    if [ "$(grep -c "unknown config key 'nosuch.key'" "$work/out")" = 1 ] && no_leftovers "$bin/suder"; then pass "unknown override key: named once, every rank gone"
    else fail "unknown override key: message or leftovers"; fi
fi

printf 'model:\n  d_modle: 64\n' >"$work/misspelt.yaml"
if run "misspelt YAML key" nonzero 10 mpirun -np 2 "$bin/suder" pretrain --config "$work/misspelt.yaml" --run-dir "$work/run2"; then
    if grep -q "unknown config key 'model.d_modle' (did you mean 'model.d_model'?)" "$work/out" && no_leftovers "$bin/suder"; then pass "misspelt YAML key: named with a suggestion"
    else fail "misspelt YAML key: message or leftovers"; fi
fi

# A kernel path is chosen on every rank before any work; a bad SUDER_KERNELS ends them all.
if run "unknown kernel path" nonzero 10 env SUDER_KERNELS=avx9 mpirun -np 2 "$bin/suder" pretrain --config "$root/configs/tiny.yaml" --run-dir "$work/run3"; then
    if grep -q "SUDER_KERNELS=avx9: expected one of avx512, avx2, blas" "$work/out" && [ ! -e "$work/run3" ] && no_leftovers; then
        pass "unknown kernel path: named, no run directory, every rank gone"
    else fail "unknown kernel path: message, run directory or leftovers"; fi
fi
if run "doctor on the blas path, -np 2" zero 60 env SUDER_KERNELS=blas mpirun -np 2 "$bin/suder" doctor; then
    if [ "$(grep -cE '^[01] +.* blas ' "$work/out")" = 2 ] && grep -q "all .* checks passed on 2 rank" "$work/out"; then pass "doctor on the blas path: both ranks run it"
    else fail "doctor on the blas path: rows or checks"; fi
fi

# OpenBLAS's core: with OPENBLAS_CORETYPE unset every rank ends up on the CPU's kernel family (where
# OpenBLAS's own table falls short, suder restarts with it set); a set one is the user's and stands.
if run "doctor, OpenBLAS core unset, -np 2" zero 60 env -u OPENBLAS_CORETYPE mpirun -np 2 "$bin/suder" doctor; then
    if ! grep -q "note: OpenBLAS runs its" "$work/out" && [ "$(awk '/^[01] +/ {print $5}' "$work/out" | sort -u | wc -l)" = 1 ] &&
        grep -q "all .* checks passed on 2 rank" "$work/out"; then
        pass "doctor, OpenBLAS core unset: the CPU's kernel family on every rank"
    else fail "doctor, OpenBLAS core unset: weaker core, ranks on different cores or failed checks"; fi
fi
if ! grep -qw avx2 /proc/cpuinfo; then skip "doctor, OPENBLAS_CORETYPE=Prescott: no core better than Prescott to advise on this CPU"
elif run "doctor, OPENBLAS_CORETYPE=Prescott, -np 2" zero 60 env OPENBLAS_CORETYPE=Prescott mpirun -np 2 "$bin/suder" doctor; then
    if [ "$(grep -cE '^[01] +.* Prescott ' "$work/out")" = 2 ] && grep -q "note: OpenBLAS runs its Prescott kernels (forced by OPENBLAS_CORETYPE=Prescott)" "$work/out"; then
        pass "doctor, OPENBLAS_CORETYPE=Prescott: kept on every rank, with advice"
    else fail "doctor, OPENBLAS_CORETYPE=Prescott: core or advice"; fi
fi

# The allreduce benchmark behind docs/SCALING.md: every rank takes part, the size is the config's.
if run "bench allreduce, -np 3 --oversubscribe" zero 60 mpirun -np 3 --oversubscribe "$bin/suder" bench allreduce --config "$root/configs/tiny.yaml" --repeats 3 --json; then
    if tail -1 "$work/out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
assert r["ranks"] == 3 and r["hosts"] == 1, r
assert r["parameters"] > 10000 and r["bytes"] == 4 * r["parameters"], r
assert 0 < r["seconds_min"] <= r["seconds"] and r["latency_s"] > 0, r
'; then pass "bench allreduce: 3 ranks, the tiny config's gradient buffer, times measured"
    else fail "bench allreduce: JSON fields"; fi
fi
if run "bench allreduce, bad --repeats" nonzero 10 mpirun -np 2 "$bin/suder" bench allreduce --repeats 0; then
    if [ "$(grep -c "repeats must be at least 1" "$work/out")" = 1 ] && no_leftovers "$bin/suder"; then pass "bench allreduce: bad --repeats named once, every rank gone"
    else fail "bench allreduce: bad --repeats message or leftovers"; fi
fi

for check in kill-rank abort-rank; do
    if run "$check" nonzero 15 mpirun -np 2 "$bin/suder-mpitests" $check; then
        if no_leftovers "$bin/suder"; then pass "$check: job ended non-zero in ${elapsed}s, no rank left"
        else fail "$check: ranks left behind"; fi
    fi
done

echo "mpi: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
