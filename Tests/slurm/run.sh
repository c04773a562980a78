#!/usr/bin/env bash
# Tests of slurm/ against real Slurm clusters on this machine (slurm/testing/local-cluster.sh:
# munged, slurmctld and slurmd from Debian's packages): first one node, then two nodes in network
# namespaces (--nodes 2).
#
#   Tests/slurm/run.sh [BIN_DIR]          BIN_DIR holds the release `suder` (default .build/release)
#   SUDER_SLURM_TESTS=real Tests/slurm/run.sh     only the tests whose name matches a regex
#   SUDER_SLURM_KEEP=1 Tests/slurm/run.sh          keep the work directory (jobs' logs) after success
#
# The tests:
#   - the job machinery (signal relay, checkpoint requeue, restart cap, DONE, dependency chain,
#     sweep array and gather) runs Tests/slurm/fake-suder, a stand-in that keeps the product's job
#     contracts, so it is tested whatever the stages can do;
#   - the product tests run the real `suder`: doctor under srun; then the tiny pipeline under
#     mpirun -np 2 as a reference, whose finished stages decide which tests can run (the chain
#     through submit against it, a signalled pretrain resuming exactly, the eval summary, a real
#     sweep); the others are skipped, naming the stage that is missing;
#   - on two nodes: doctor under srun and under mpirun across the namespaces (no Slurm), srun
#     without an MPI plugin refused, a sweep task requeued alone, the pipeline through submit equal
#     to mpirun -np 2, a signalled pretrain resuming exactly, a second job on a run directory in use
#     refused from the other node, the static build without the toolchain.
# Each cluster is started if it is not running, and then stopped again at the end.
# Ends with "N passed, N failed, N skipped"; exits non-zero if any test failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin_dir=$(realpath -m "${1:-$root/.build/release}")
suder=$bin_dir/suder
fake=$root/Tests/slurm/fake-suder
cluster=$root/slurm/testing/local-cluster.sh
tiny=$root/configs/tiny.yaml
work=$(mktemp -d /tmp/suder-slurm-tests.XXXXXX)
eval "$("$cluster" env)"
# The scripts under test are found through SUDER_HOME, as slurm/submit sets it.
export SUDER_HOME=$root
# Test jobs: 2 tasks of 1 CPU (this machine's cores) unless a test says otherwise. The time limit
# stays well above the scripts' --signal lead (up to 600 s), or the warning would come at once.
two_tasks=(--nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=60)

passed=0 failed=0 skipped=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }
fail() {
    echo "FAIL $1: $2"
    [[ -s $work/current.log ]] && sed 's/^/    | /' "$work/current.log" | tail -25
    failed=$((failed + 1))
}

# ---- helpers over scontrol -----------------------------------------------------------------------

# job_field JOB FIELD: FIELD's value in `scontrol show job -o` (first task of an array).
job_field() { scontrol show job -o "$1" 2>/dev/null | head -n 1 | grep -o "\b$2=[^ ]*" | cut -d= -f2-; }

# all_states JOB: the state of every job (every task, for an array) sharing this id.
all_states() { scontrol show job -o "$1" 2>/dev/null | grep -o '\bJobState=[A-Z_]*' | cut -d= -f2; }

is_final() { [[ $1 =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)$ ]]; }

# wait_final SECONDS JOB...: until every job (all array tasks) is in a final state.
wait_final() {
    local limit=$1 job state done_all
    shift
    for ((t = 0; t < limit * 2; t++)); do
        done_all=1
        for job in "$@"; do
            # Tasks of an array that have not started yet are listed as one pending record.
            for state in $(all_states "$job") MISSING; do
                [[ $state == MISSING ]] && break
                is_final "$state" || done_all=0
            done
        done
        ((done_all)) && return 0
        sleep 0.5
    done
    echo "timed out after ${limit}s waiting for jobs $*: $(for j in "$@"; do all_states "$j"; done | tr '\n' ' ')"
    return 1
}

# wait_until SECONDS CMD...: until CMD succeeds.
wait_until() {
    local limit=$1
    shift
    for ((t = 0; t < limit * 2; t++)); do
        "$@" && return 0
        sleep 0.5
    done
    echo "timed out after ${limit}s waiting for: $*"
    return 1
}

# Slurm keeps a requeued job pending for 120 s (BeginTime) before it may start again; the tests
# make it eligible early so they do not wait for that delay. Not too early, though, which the
# 120 s covers in real use: the previous run's slurmstepd lingers ~2 s after srun stops a step, and
# the restart reuses the step id, whose PMIx socket is still bound; and slurmd refuses a job
# credential issued within the same second as the old run's revoked one.
# release_requeued JOB [JOB_ID]: JOB may name an array task (ARRAY_TASK); JOB_ID is then its own id.
release_requeued() {
    wait_until 30 step_daemons_gone "${2:-$1}" || return 1
    sleep 2
    scontrol update JobId="$1" StartTime=now
}
step_daemons_gone() { ! pgrep -f "slurmstepd: \[$1\.[0-9]" >/dev/null; }
release_when_requeued() {
    wait_until 60 restarts_reached "$1" "$2" && release_requeued "$1"
}
restarts_reached() { (($(job_field "$1" Restarts) >= $2)) && [[ $(job_field "$1" JobState) == PENDING ]]; }

# comparable_summary FILE: an eval summary without what differs between two identical runs (the
# wall time of each evaluation and the checkpoint paths, which name the run directory).
comparable_summary() {
    python3 - "$1" <<'PY'
import json, sys
def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in ("seconds", "checkpoint")}
    return value
print(json.dumps(strip(json.load(open(sys.argv[1]))), indent=1, sort_keys=True))
PY
}
lines() { [[ -f $1 ]] && wc -l <"$1" || echo 0; }
at_least_lines() { (($(lines "$1") >= $2)); }

# ---- the cluster --------------------------------------------------------------------------------

# start_unless_running FLAG LABEL CLUSTER...: starts the cluster unless it runs already (then it is
# reused and left running at the end); sets the variable named FLAG to 1 when this call started it.
start_unless_running() {
    local flag=$1 label=$2
    shift 2
    if "$@" status >/dev/null 2>&1; then
        echo "$label already running; reusing it (it is left running at the end)"
    else
        "$@" start || return 1
        printf -v "$flag" 1
    fi
}

started_cluster=0
test_cluster_start() {
    start_unless_running started_cluster cluster "$cluster" || return 1
    "$cluster" status && "$cluster" check
}

# none_alive PID...: none of these processes runs. A zombie has exited; only its parent (here,
# whatever adopted the daemon) can reap it.
none_alive() {
    for pid; do
        grep -qs '^State:.[^Z]' "/proc/$pid/status" && { echo "pid $pid is still alive: $(cat "/proc/$pid/comm")"; return 1; }
    done
    return 0
}

test_cluster_stop() {
    local pids
    pids=$(cat "${SUDER_SLURM_DIR:-/tmp/suder-slurm}"/{munged,slurmctld,slurmd}.pid 2>/dev/null)
    "$cluster" stop || return 1
    ! "$cluster" status || { echo "status still reports daemons"; return 1; }
    none_alive $pids || return 1
    [[ -n $pids ]] || { echo "no pid files were found before stop"; return 1; }
    echo "stopped pids: $(echo $pids)"
}

# ---- the real product, available now ------------------------------------------------------------

suder_has() { [[ -x $suder ]] && "$suder" --help 2>/dev/null | grep -qw "$1"; }

test_doctor_under_srun() {
    suder_has doctor || { skip_reason="no $suder with a doctor command (build with: swift build -c release)"; return 2; }
    local out=$work/doctor.out
    sbatch --wait --parsable "${two_tasks[@]}" --output="$out" \
        --wrap "srun --mpi=pmix $suder doctor" || { cat "$out"; echo "job failed"; return 1; }
    cat "$out"
    grep -q "all .* checks passed on 2 rank" "$out"
}

# ---- the job machinery, on fake-suder -----------------------------------------------------------

# signal_requeue_resume DIR [ENV=VALUE ...]: a stage signalled with SIGUSR1 (as --signal=B:USR1@lead
# does before the time limit) relays it, checkpoints, requeues itself, resumes from the checkpoint
# and completes.
signal_requeue_resume() {
    local dir=$1 job log
    shift
    mkdir -p "$dir"
    job=$(env SUDER_BIN="$fake" FAKE_STEPS=8 "$@" sbatch --parsable --chdir="$dir" "${two_tasks[@]}" \
        "$root/slurm/pretrain.sbatch" "$tiny" run) || return 1
    log=$dir/suder-pretrain-$job.out
    echo "job $job"
    wait_until 60 at_least_lines "$dir/run/pretrain/trace.rank0" 2 || return 1
    scancel --signal=USR1 --batch "$job"
    release_when_requeued "$job" 1 || return 1
    wait_final 60 "$job" || return 1
    cat "$log"
    [[ $(job_field "$job" JobState) == COMPLETED ]] || { echo "state $(job_field "$job" JobState)"; return 1; }
    [[ $(job_field "$job" Restarts) == 1 ]] || { echo "restarts $(job_field "$job" Restarts)"; return 1; }
    grep -q "SIGUSR1 received" "$log" && grep -q "job step exited with code 85" "$log" &&
        grep -q "requeueing job $job (restart 1" "$log" && grep -q "restart 1:" "$log" || return 1
    # Resumed, not restarted: each rank ran every step exactly once, in order, across both runs.
    for rank in 0 1; do
        [[ $(tr '\n' ' ' <"$dir/run/pretrain/trace.rank$rank") == "1 2 3 4 5 6 7 8 " ]] ||
            { echo "rank $rank trace: $(tr '\n' ' ' <"$dir/run/pretrain/trace.rank$rank")"; return 1; }
    done
    [[ -e $dir/run/pretrain/DONE ]]
}

test_signal_requeue_resume() { signal_requeue_resume "$work/requeue"; }

# The documented fallback launcher relays the signal and requeues the same way.
test_mpirun_launcher_requeue() {
    signal_requeue_resume "$work/mpirun-launcher" SUDER_LAUNCHER=mpirun \
        OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1
}

# The warning signal comes from the script's own --signal=B:USR1@lead before the time limit.
test_time_limit_warning() {
    local dir=$work/timelimit job restarts=0
    mkdir -p "$dir"
    # 1-minute limit, warning 40 s before it (Slurm may send it up to 60 s early, so any time in
    # the first 20 s); 50 steps of 1 s cannot finish in one allocation.
    job=$(SUDER_BIN=$fake FAKE_STEPS=50 sbatch --parsable --chdir="$dir" "${two_tasks[@]}" \
        --time=1 --signal=B:USR1@40 "$root/slurm/suder.sbatch" "$tiny" run) || return 1
    echo "job $job"
    # Each allocation checkpoints before its limit; release each requeue until the stage finishes.
    while ! is_final "$(job_field "$job" JobState)"; do
        if restarts_reached "$job" $((restarts + 1)); then
            restarts=$((restarts + 1))
            release_requeued "$job" || return 1
        fi
        sleep 1
        ((SECONDS < 600)) || { echo "not finished after 600 s"; return 1; }
    done
    cat "$dir/suder-suder-$job.out"
    [[ $(job_field "$job" JobState) == COMPLETED ]] || { echo "state $(job_field "$job" JobState)"; return 1; }
    ((restarts >= 1)) || { echo "never requeued"; return 1; }
    grep -q "SIGUSR1 received" "$dir/suder-suder-$job.out" || return 1
    ! grep -q "CANCELLED .* DUE TO TIME LIMIT" "$dir/suder-suder-$job.out" || { echo "hit the time limit"; return 1; }
    [[ $(sort -n "$dir/run/suder/trace.rank0" | uniq | wc -l) == 50 && $(lines "$dir/run/suder/trace.rank0") == 50 ]]
}

test_restart_cap() {
    local dir=$work/cap job
    mkdir -p "$dir"
    job=$(SUDER_BIN=$fake FAKE_STEPS=8 SUDER_MAX_RESTARTS=0 sbatch --parsable --chdir="$dir" "${two_tasks[@]}" \
        "$root/slurm/pretrain.sbatch" "$tiny" run) || return 1
    wait_until 60 at_least_lines "$dir/run/pretrain/trace.rank0" 1 || return 1
    scancel --signal=USR1 --batch "$job"
    wait_final 60 "$job" || return 1
    cat "$dir/suder-pretrain-$job.out"
    [[ $(job_field "$job" JobState) == FAILED && $(job_field "$job" ExitCode) == 85:0 ]] ||
        { echo "state $(job_field "$job" JobState) exit $(job_field "$job" ExitCode)"; return 1; }
    [[ $(job_field "$job" Restarts) == 0 ]] && grep -q "giving up" "$dir/suder-pretrain-$job.out"
}

# A finished stage exits at once, without launching a job step.
test_finished_stage_exits_at_once() {
    local dir=$work/requeue job
    [[ -e $dir/run/pretrain/DONE ]] || { echo "needs the finished run of test_signal_requeue_resume"; return 1; }
    job=$(SUDER_BIN=$fake sbatch --parsable --chdir="$dir" "${two_tasks[@]}" "$root/slurm/pretrain.sbatch" "$tiny" run) || return 1
    wait_final 30 "$job" || return 1
    cat "$dir/suder-pretrain-$job.out"
    [[ $(job_field "$job" JobState) == COMPLETED ]] && grep -q "already finished" "$dir/suder-pretrain-$job.out" &&
        ! grep -q "srun" "$dir/suder-pretrain-$job.out" && [[ $(lines "$dir/run/pretrain/trace.rank0") == 8 ]]
}

# Exit 0 without the DONE marker is not success (srun exits 0 when a step fails to launch).
test_exit_zero_without_done_fails() {
    local dir=$work/nodone job
    mkdir -p "$dir"
    job=$(SUDER_BIN=$fake FAKE_STEPS=1 FAKE_NO_DONE=1 sbatch --parsable --chdir="$dir" "${two_tasks[@]}" \
        "$root/slurm/data.sbatch" "$tiny" run) || return 1
    wait_final 60 "$job" || return 1
    cat "$dir/suder-data-$job.out"
    [[ $(job_field "$job" JobState) == FAILED ]] && grep -q "does not exist; failing the job" "$dir/suder-data-$job.out"
}

# submit_chain DIR [ENV=VALUE ...]: runs slurm/submit in DIR with the environment given; prints
# "stage job" lines into DIR/jobs.
submit_chain() {
    local dir=$1
    shift
    mkdir -p "$dir"
    env "$@" SUDER_SBATCH_ARGS="${two_tasks[*]}" "$root/slurm/submit" "$tiny" "$dir/run" >"$dir/jobs" || return 1
    cat "$dir/jobs"
}
chain_job() { awk -v s="$2" '$1 == s {print $2}' "$1/jobs"; }

test_submit_chain() {
    local dir=$work/chain previous=
    submit_chain "$dir" SUDER_BIN="$fake" FAKE_STEPS=2 || return 1
    [[ $(awk '{print $1}' "$dir/jobs" | tr '\n' ' ') == "data pretrain suder eval " ]] || { echo "stages listed wrongly"; return 1; }
    for stage in pretrain suder eval; do
        previous=$(awk -v s="$stage" 'prev && $1 == s {print prev} {prev = $2}' "$dir/jobs")
        [[ $(job_field "$(chain_job "$dir" "$stage")" Dependency) == afterok:$previous* ]] ||
            [[ $(job_field "$(chain_job "$dir" "$stage")" JobState) != PENDING ]] ||
            { echo "$stage does not depend on afterok:$previous: $(job_field "$(chain_job "$dir" "$stage")" Dependency)"; return 1; }
    done
    wait_final 120 $(awk '{print $2}' "$dir/jobs") || return 1
    local end=0 start
    while read -r stage job; do
        [[ $(job_field "$job" JobState) == COMPLETED ]] || { echo "$stage: $(job_field "$job" JobState)"; return 1; }
        [[ -e $dir/run/$stage/DONE ]] || { echo "$stage: no DONE"; return 1; }
        # Each stage starts only after the previous one ended.
        start=$(date -d "$(job_field "$job" StartTime)" +%s)
        ((start >= end)) || { echo "$stage started before the previous stage ended"; return 1; }
        end=$(date -d "$(job_field "$job" EndTime)" +%s)
    done <"$dir/jobs"
    [[ -s $dir/run/eval/summary.json ]]
}

test_failed_stage_cancels_chain() {
    local dir=$work/chain-fail
    submit_chain "$dir" SUDER_BIN="$fake" FAKE_STEPS=1 FAKE_FAIL_STAGE=pretrain || return 1
    wait_final 120 $(awk '{print $2}' "$dir/jobs") || return 1
    local states
    states=$(while read -r stage job; do echo -n "$stage=$(job_field "$job" JobState) "; done <"$dir/jobs")
    echo "$states"
    [[ $states == "data=COMPLETED pretrain=FAILED suder=CANCELLED eval=CANCELLED " ]]
}

# A site whose jobs start with a clean environment (--export=NONE, here --export naming only the
# setup hook): nothing else set at submit time reaches the job. It finds common.sh through its
# submit directory (submit runs sbatch from the checkout), the setup hook supplies the rest, and
# the ranks get what the hook set (FAKE_STEPS=1), although srun inherits the job's --export.
test_clean_environment_with_setup_hook() {
    local dir=$work/clean-env job log
    mkdir -p "$dir"
    printf 'export SUDER_BIN=%q FAKE_STEPS=1\necho "setup hook sourced on $(hostname)"\n' "$fake" >"$dir/site.sh"
    (cd /tmp && env -u SUDER_HOME SUDER_BIN=/nonexistent SUDER_SBATCH_ARGS="${two_tasks[*]} --export=SUDER_SETUP=$dir/site.sh" \
        "$root/slurm/submit" "$tiny" "$dir/run" --until data) >"$dir/jobs" || return 1
    job=$(chain_job "$dir" data)
    wait_final 60 "$job" || return 1
    log=$dir/run/suder-data-$job.out
    cat "$log"
    [[ $(job_field "$job" JobState) == COMPLETED ]] && grep -q "setup hook sourced" "$log" &&
        grep -q "fake-suder rank 0: data from step 0 of 1$" "$log" && grep -q "fake-suder rank 1: data from step 0 of 1$" "$log" &&
        [[ -e $dir/run/data/DONE ]]
}

# sweep_and_gather DIR SUDER_BIN: a 3-run sweep file, submitted as an array, then gathered.
sweep_and_gather() {
    local dir=$1 bin=$2 job
    shift 2
    mkdir -p "$dir"
    cat >"$dir/runs.sweep" <<'EOF'
# name      overrides
seed1       run.seed=1
seed2-beta1 run.seed=2 suder.simpo_beta=1.0
seed3       run.seed=3   # a comment
EOF
    job=$(env SUDER_BIN="$bin" "$@" SUDER_SBATCH_ARGS="${sweep_task[*]}" \
        "$root/slurm/sweep" "$dir/runs.sweep" "$tiny" "$dir/runs") || return 1
    echo "array job $job"
    wait_final "$sweep_seconds" "$job" || return 1
    scontrol show job -o "$job" | grep -o 'JobId=[0-9]* ArrayJobId=[0-9]* ArrayTaskId=[0-9]*\|JobState=[A-Z]*'
    [[ $(all_states "$job" | grep -c COMPLETED) == 3 ]] || { echo "not 3 completed tasks"; return 1; }
    "$root/slurm/gather" "$dir/runs.sweep" "$dir/runs" >"$dir/table" || return 1
    cat "$dir/table"
    [[ $(grep -c ' ok$' "$dir/table") == 3 ]] || { echo "table has not 3 ok rows"; return 1; }
    local name expected
    for name in seed1 seed2-beta1 seed3; do
        expected=$(python3 -c "import json,sys; print(f'{json.load(open(sys.argv[1]))[\"models\"][\"suder\"][\"geneval\"][\"overall\"]:.4f}')" "$dir/runs/$name/eval/summary.json")
        grep -q "^$name .* $expected " "$dir/table" || { echo "$name: overall $expected not in the table"; return 1; }
    done
}

sweep_task=(--nodes=1 --ntasks-per-node=1 --cpus-per-task=1 --time=60)
sweep_seconds=120
test_sweep_and_gather() {
    local dir=$work/sweep
    sweep_and_gather "$dir" "$fake" FAKE_STEPS=1 || return 1
    # A run without a summary is reported by name, and the rest of the table is still gathered.
    rm "$dir/runs/seed2-beta1/eval/summary.json"
    "$root/slurm/gather" "$dir/runs.sweep" "$dir/runs" >"$dir/table2" 2>"$dir/table2.err" || { echo "gather failed on a missing run"; return 1; }
    cat "$dir/table2" "$dir/table2.err"
    grep -q "^seed2-beta1 .*missing: no eval/summary.json" "$dir/table2" &&
        grep -q "run 'seed2-beta1' missing" "$dir/table2.err" && grep -q "2 of 3 runs gathered" "$dir/table2.err" &&
        ! "$root/slurm/gather" --strict "$dir/runs.sweep" "$dir/runs" >/dev/null 2>&1
}

# An array task requeues itself on its own (by its own job id) and resumes its run directory.
test_sweep_task_requeues() {
    local dir=$work/sweep-requeue job task stage
    mkdir -p "$dir"
    echo "only  run.seed=5" >"$dir/one.sweep"
    job=$(env SUDER_BIN="$fake" FAKE_STEPS=3 SUDER_SBATCH_ARGS="${sweep_task[*]}" \
        "$root/slurm/sweep" "$dir/one.sweep" "$tiny" "$dir/runs") || return 1
    wait_until 60 at_least_lines "$dir/runs/only/data/trace.rank0" 1 || return 1
    task=$(job_field "${job}_0" JobId)
    echo "array job $job, task 0 is job $task"
    scancel --signal=USR1 --batch "${job}_0"
    release_when_requeued "$task" 1 || return 1
    wait_final 120 "$task" || return 1
    cat "$dir/runs/suder-sweep-${job}_0.out"
    [[ $(job_field "$task" JobState) == COMPLETED && $(job_field "$task" Restarts) == 1 ]] || return 1
    grep -q "requeueing job ${job}_0 (restart 1" "$dir/runs/suder-sweep-${job}_0.out" || return 1
    for stage in data pretrain suder eval; do
        [[ $(tr '\n' ' ' <"$dir/runs/only/$stage/trace.rank0") == "1 2 3 " ]] || { echo "$stage trace differs"; return 1; }
    done
    [[ -s $dir/runs/only/eval/summary.json ]]
}

# ---- the real stages (skipped until they exist) -------------------------------------------------

# mpirun_suder ARGS...: 2 ranks of 1 BLAS thread each, as the Slurm test jobs get. The threads come
# from SLURM_CPUS_PER_TASK as under Slurm, not from an override: the resolved config is part of
# every checkpoint, so both runs must resolve it identically.
mpirun_suder() {
    SLURM_CPUS_PER_TASK=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 \
        mpirun -np 2 --bind-to none -x SLURM_CPUS_PER_TASK "$suder" "$@"
}

# The reference: the tiny pipeline under mpirun -np 2. The stages it finished (DONE) are the ones
# the product implements; each real test below needs some of them.
implemented=()
probe_stages() {
    local out=$work/mpirun-reference.log stage
    suder_has pipeline || return 0
    mpirun_suder pipeline --config "$tiny" --run-dir "$work/mpirun/run" >"$out" 2>&1
    for stage in data pretrain suder eval; do
        [[ -e $work/mpirun/run/$stage/DONE ]] && implemented+=("$stage")
    done
    echo "stages finished by the mpirun reference run: ${implemented[*]:-none} ($(grep -o "stage '[a-z]*' is not implemented yet" "$out" | head -1))"
}

# needs STAGE...: fails with a skip reason unless the reference run finished every STAGE.
needs() {
    local stage
    suder_has pipeline || { skip_reason="no $suder with a pipeline command (build with: swift build -c release)"; return 1; }
    for stage in "$@"; do
        [[ " ${implemented[*]} " == *" $stage "* ]] ||
            { skip_reason="stage '$stage' is not on main yet (the tiny pipeline under mpirun did not finish it)"; return 1; }
    done
}

# same_final_checkpoint A B: the newest checkpoints of two stage directories are identical.
same_final_checkpoint() {
    local final reference_final
    reference_final=$(<"$1/latest") final=$(<"$2/latest") || return 1
    [[ $final == "$reference_final" ]] || { echo "final checkpoints differ: $reference_final vs $final"; return 1; }
    diff -r "$1/$reference_final" "$2/$final" && echo "identical final checkpoint $2/$final"
}

# The stages that exist, through submit with 2 tasks per job: same final checkpoints as mpirun.
test_real_chain_matches_mpirun() {
    needs data pretrain || return 2
    local dir=$work/real-chain stage
    mkdir -p "$dir"
    env SUDER_BIN="$suder" SUDER_SBATCH_ARGS="${two_tasks[*]}" "$root/slurm/submit" "$tiny" "$dir/run" \
        --until "${implemented[-1]}" >"$dir/jobs" || return 1
    cat "$dir/jobs"
    wait_final 1800 $(awk '{print $2}' "$dir/jobs") || return 1
    while read -r stage job; do
        [[ $(job_field "$job" JobState) == COMPLETED ]] || { echo "$stage: $(job_field "$job" JobState)"; cat "$dir/run"/*-"$job".out; return 1; }
    done <"$dir/jobs"
    for stage in pretrain suder; do
        [[ -e $work/mpirun/run/$stage/latest ]] || continue
        same_final_checkpoint "$work/mpirun/run/$stage" "$dir/run/$stage" || return 1
    done
    # The finished pretrain stage resubmitted: with the same settings it is done at once; with
    # another learning rate the job fails naming it, not reporting the old run as the new one.
    local same other
    same=$(SUDER_BIN=$suder sbatch --parsable --chdir="$dir" "${two_tasks[@]}" "$root/slurm/pretrain.sbatch" "$tiny" run) || return 1
    wait_final 120 "$same" || return 1
    other=$(SUDER_BIN=$suder sbatch --parsable --chdir="$dir" "${two_tasks[@]}" "$root/slurm/pretrain.sbatch" "$tiny" run pretrain.lr=0.5) ||
        return 1
    wait_final 120 "$other" || return 1
    cat "$dir/suder-pretrain-$same.out" "$dir/suder-pretrain-$other.out"
    [[ $(job_field "$same" JobState) == COMPLETED ]] && grep -q "already finished" "$dir/suder-pretrain-$same.out" &&
        [[ $(job_field "$other" JobState) == FAILED ]] &&
        grep -q "started with a different config (pretrain.lr: " "$dir/suder-pretrain-$other.out"
}

test_real_pipeline_summary_matches_mpirun() {
    needs data pretrain suder eval || return 2
    local dir=$work/real-chain
    [[ -s $dir/run/eval/summary.json ]] || { echo "test_real_chain_matches_mpirun left no eval/summary.json"; return 1; }
    comparable_summary "$dir/run/eval/summary.json" >"$dir/slurm.json" &&
        comparable_summary "$work/mpirun/run/eval/summary.json" >"$dir/mpirun.json" || return 1
    cat "$dir/slurm.json"
    diff "$dir/mpirun.json" "$dir/slurm.json"
}

# Pretraining long enough to be signalled mid-run; the uninterrupted reference uses the same settings.
long_pretrain=(pretrain.steps=${SUDER_TEST_PRETRAIN_STEPS:-1000} pretrain.checkpoint_every=100 pretrain.log_every=100)
# The uninterrupted reference of the signalled tests, run once.
long_pretrain_reference() {
    local reference=$work/real-signal-reference
    [[ -e $reference/run/pretrain/DONE ]] && return 0
    mpirun_suder pipeline --until pretrain --config "$tiny" --run-dir "$reference/run" "${long_pretrain[@]}" \
        >"$reference.log" 2>&1 || { tail "$reference.log"; return 1; }
}
# signalled_pretrain_resumes_exactly DIR NODES SBATCH_ARGS: a pretrain job on NODES node(s)
# signalled mid-run checkpoints, requeues, resumes and ends with the uninterrupted run's checkpoint.
signalled_pretrain_resumes_exactly() {
    local dir=$1 nodes=$2 sbatch_args=$3 job log
    long_pretrain_reference || return 1
    mkdir -p "$dir"
    env SUDER_BIN="$suder" SUDER_SBATCH_ARGS="$sbatch_args" "$root/slurm/submit" "$tiny" "$dir/run" \
        --until pretrain "${long_pretrain[@]}" >"$dir/jobs" || return 1
    job=$(chain_job "$dir" pretrain)
    log=$dir/run/suder-pretrain-$job.out
    # Signal once the first checkpoint exists, i.e. mid-run.
    wait_until 900 test -s "$dir/run/pretrain/latest" || return 1
    scancel --signal=USR1 --batch "$job"
    release_when_requeued "$job" 1 || { cat "$log"; echo "finished before the signal? raise SUDER_TEST_PRETRAIN_STEPS"; return 1; }
    wait_final 1200 "$job" || return 1
    cat "$log"
    [[ $(job_field "$job" JobState) == COMPLETED && $(job_field "$job" Restarts) == 1 && $(job_field "$job" NumNodes) == "$nodes" ]] ||
        { echo "state $(job_field "$job" JobState), restarts $(job_field "$job" Restarts), nodes $(job_field "$job" NumNodes)"; return 1; }
    grep -q "job step exited with code 85" "$log" || return 1
    same_final_checkpoint "$work/real-signal-reference/run/pretrain" "$dir/run/pretrain"
}
test_real_signalled_stage_resumes_exactly() {
    needs data pretrain || return 2
    signalled_pretrain_resumes_exactly "$work/real-signal" 1 "${two_tasks[*]}"
}

test_real_sweep_and_gather() {
    needs data pretrain suder eval || return 2
    sweep_seconds=3600 sweep_and_gather "$work/real-sweep" "$suder"
}

# ---- two nodes ----------------------------------------------------------------------------------
# slurm/testing/local-cluster.sh --nodes 2: nodes n1 and n2 of one CPU each in network namespaces,
# own host names, munged, spool and TmpFS; Open MPI between them over TCP only (its env). The
# run directories are on this machine's filesystem, which both nodes see at the same path, as a
# cluster's shared filesystem.

two_node_cluster=("$cluster" --nodes 2)
# One rank on each node, as a multi-node job runs.
two_nodes=(--nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --time=60)

started_two_nodes=0
test_two_node_cluster_start() {
    start_unless_running started_two_nodes "two-node cluster" "${two_node_cluster[@]}" || return 1
    eval "$("${two_node_cluster[@]}" env)"
    "${two_node_cluster[@]}" status && "${two_node_cluster[@]}" check
}

# nothing_left_of_two_nodes: no namespace, link or daemon of the two-node cluster remains.
nothing_left_of_two_nodes() {
    local state=/tmp/suder-slurm-nodes2
    [[ ! -e $state/created ]] || { echo "$state/created still there"; return 1; }
    ! ip netns list | grep -q '^suder-n[12]\b' || { echo "namespaces left: $(ip netns list)"; return 1; }
    ! ip link show suder-br2 >/dev/null 2>&1 || { echo "bridge suder-br2 left"; return 1; }
    ! ip -o link | grep -q 'suder-n[12]h' || { echo "veths left"; return 1; }
}

# A start that fails half-way (here: slurmd cannot start) leaves a record that stop clears.
test_two_node_cluster_stop_after_failed_start() {
    "${two_node_cluster[@]}" status >/dev/null 2>&1 && { skip_reason="the two-node cluster is running"; return 2; }
    local fake_bin=$work/failing-slurmd
    mkdir -p "$fake_bin"
    printf '#!/bin/sh\necho "slurmd: failing on purpose" >&2\nexit 1\n' >"$fake_bin/slurmd"
    chmod +x "$fake_bin/slurmd"
    PATH=$fake_bin:$PATH "${two_node_cluster[@]}" start && { echo "start succeeded with a failing slurmd"; return 1; }
    cat /tmp/suder-slurm-nodes2/created
    ip netns list | grep -q '^suder-n1\b' || { echo "the failed start made no namespace; nothing was tested"; return 1; }
    "${two_node_cluster[@]}" stop && nothing_left_of_two_nodes
}

test_two_node_cluster_stop() {
    local state=/tmp/suder-slurm-nodes2 pids
    [[ -s $state/created ]] || { echo "nothing recorded in $state/created"; return 1; }
    pids=$(awk '$1 == "daemon" {print $3}' "$state/created" | xargs cat 2>/dev/null)
    "${two_node_cluster[@]}" stop && nothing_left_of_two_nodes || return 1
    none_alive $pids || return 1
    echo "stopped pids $(echo $pids); namespaces, veths and bridge removed"
}

# doctor_passed_on_two_hosts FILE: doctor's verdict, and its rank table naming both nodes.
doctor_passed_on_two_hosts() {
    grep -q "all .* checks passed on 2 rank" "$1" || { echo "doctor did not pass on 2 ranks"; return 1; }
    grep -qw n1 "$1" && grep -qw n2 "$1" || { echo "doctor's table does not show hosts n1 and n2"; return 1; }
}

test_two_node_doctor_under_srun() {
    suder_has doctor || { skip_reason="no $suder with a doctor command"; return 2; }
    local out=$work/two-node-doctor.out
    srun "${two_nodes[@]}" --mpi=pmix "$suder" doctor >"$out" 2>&1
    local rc=$?
    cat "$out"
    ((rc == 0)) && doctor_passed_on_two_hosts "$out"
}

# Without an MPI plugin (Slurm's MpiDefault=none, as on this cluster and many sites) srun starts
# two copies that MPI does not join; each would run alone as rank 0 in one run directory.
test_two_node_srun_without_mpi_stops() {
    suder_has doctor || { skip_reason="no $suder with a doctor command"; return 2; }
    local out=$work/two-node-nompi.out rc
    srun "${two_nodes[@]}" "$suder" pretrain --config "$tiny" --run-dir "$work/nompi/run" >"$out" 2>&1
    rc=$?
    cat "$out"
    ((rc != 0)) || { echo "srun exited 0"; return 1; }
    grep -q "srun --mpi=pmix" "$out" || { echo "no message naming srun --mpi=pmix"; return 1; }
    [[ ! -e $work/nompi/run/config.yaml ]] || { echo "the run directory was written"; return 1; }
}

# mpirun without Slurm, started inside n1, its daemon on n2 started through the cluster's rsh
# agent: the collective checks of suder-mpitests and doctor over TCP between the namespaces.
mpirun_two_namespaces() {
    "${two_node_cluster[@]}" exec n1 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        mpirun --host n1,n2 -np 2 --bind-to none "$@"
}
test_two_node_mpirun_across_namespaces() {
    suder_has doctor || { skip_reason="no $suder with a doctor command"; return 2; }
    local out=$work/two-node-mpirun.out check
    mpirun_two_namespaces "$suder" doctor >"$out" 2>&1 || { cat "$out"; echo "doctor failed"; return 1; }
    cat "$out"
    doctor_passed_on_two_hosts "$out" || return 1
    [[ -x $bin_dir/suder-mpitests ]] || { echo "no $bin_dir/suder-mpitests"; return 1; }
    for check in collectives checkpoint; do
        mpirun_two_namespaces "$bin_dir/suder-mpitests" "$check" >"$out" 2>&1 || { cat "$out"; echo "suder-mpitests $check failed"; return 1; }
        cat "$out"
    done
}

# A 2-task sweep, one task per node: the task that holds the array's job id is signalled. It must
# requeue alone (its own array task id), its sibling must run on untouched, and both finish.
test_two_node_sweep_task_requeues_alone() {
    local dir=$work/two-node-sweep job signalled sibling
    mkdir -p "$dir"
    printf 'first  run.seed=1\nsecond run.seed=2\n' >"$dir/two.sweep"
    job=$(env SUDER_BIN="$fake" FAKE_STEPS=4 SUDER_SBATCH_ARGS="--nodes=1 --ntasks-per-node=1 --cpus-per-task=1 --time=60" \
        "$root/slurm/sweep" "$dir/two.sweep" "$tiny" "$dir/runs") || return 1
    wait_until 60 at_least_lines "$dir/runs/first/data/trace.rank0" 1 || return 1
    wait_until 60 at_least_lines "$dir/runs/second/data/trace.rank0" 1 || return 1
    scontrol show job -o "$job" | grep -o 'JobId=[0-9]* ArrayJobId=[0-9]* ArrayTaskId=[0-9]*\|NodeList=[^ ]*'
    # The task whose own job id is the array's id.
    signalled=$(scontrol show job -o "$job" | grep "^JobId=$job " | grep -o 'ArrayTaskId=[0-9]*' | cut -d= -f2)
    [[ -n $signalled ]] || { echo "no task holds job id $job"; return 1; }
    sibling=$((1 - signalled))
    echo "array $job: task $signalled holds the array's id and is signalled; task $sibling runs on"
    scancel --signal=USR1 --batch "${job}_$signalled"
    wait_until 60 restarts_reached "${job}_$signalled" 1 && release_requeued "${job}_$signalled" "$job" || return 1
    wait_final 120 "$job" || return 1
    cat "$dir/runs/suder-sweep-${job}_$signalled.out"
    for task in 0 1; do echo "task $task: $(job_field "${job}_$task" JobState) Restarts=$(job_field "${job}_$task" Restarts)"; done
    [[ $(job_field "${job}_$signalled" JobState) == COMPLETED && $(job_field "${job}_$signalled" Restarts) == 1 ]] || return 1
    [[ $(job_field "${job}_$sibling" JobState) == COMPLETED && $(job_field "${job}_$sibling" Restarts) == 0 ]] ||
        { echo "the sibling was disturbed"; return 1; }
    grep -q "requeueing job ${job}_$signalled (restart 1" "$dir/runs/suder-sweep-${job}_$signalled.out" || return 1
    ! grep -q "SIGTERM" "$dir/runs/suder-sweep-${job}_$sibling.out" || { echo "the sibling got SIGTERM"; return 1; }
    for run in first second; do
        [[ $(tr '\n' ' ' <"$dir/runs/$run/eval/trace.rank0") == "1 2 3 4 " ]] || { echo "$run: eval trace differs"; return 1; }
    done
}

# same_metrics A B: two stage directories logged the same metrics, line for line, apart from what
# is measured rather than computed (times, rates, peak memory).
same_metrics() {
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'PY'
import json, sys
def measured(key):
    return key.startswith("time/") or key.endswith(("_s", "/seconds", "_mb"))
def rows(path):
    return [{k: v for k, v in json.loads(line).items() if not measured(k)} for line in open(path)]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
if a != b:
    for n, (x, y) in enumerate(zip(a, b)):
        if x != y:
            print(f"line {n + 1} differs:\n  {x}\n  {y}")
            break
    sys.exit(f"metrics differ ({len(a)} vs {len(b)} lines)")
print(f"identical metrics: {len(a)} lines of {sys.argv[2]}")
PY
}

# The tiny pipeline through submit, data on one node (its own sbatch options) and the other stages
# on two: the same checkpoints, metrics and eval summary as mpirun -np 2 on one machine.
test_two_node_pipeline_matches_mpirun() {
    needs data pretrain suder eval || return 2
    local dir=$work/two-node-chain stage job
    mkdir -p "$dir"
    env SUDER_BIN="$suder" SUDER_SBATCH_ARGS="${two_nodes[*]}" SUDER_SBATCH_ARGS_DATA="--nodes=1" \
        "$root/slurm/submit" "$tiny" "$dir/run" >"$dir/jobs" || return 1
    cat "$dir/jobs"
    wait_final 1800 $(awk '{print $2}' "$dir/jobs") || return 1
    while read -r stage job; do
        echo "$stage: job $job $(job_field "$job" JobState) on $(job_field "$job" NumNodes) node(s) $(job_field "$job" NodeList)"
        [[ $(job_field "$job" JobState) == COMPLETED ]] || { cat "$dir/run"/*-"$job".out; return 1; }
        [[ $(job_field "$job" NumNodes) == "$([[ $stage == data ]] && echo 1 || echo 2)" ]] || { echo "$stage: wrong node count"; return 1; }
    done <"$dir/jobs"
    for stage in pretrain suder; do
        same_final_checkpoint "$work/mpirun/run/$stage" "$dir/run/$stage" || return 1
        same_metrics "$work/mpirun/run/$stage" "$dir/run/$stage" || return 1
    done
    comparable_summary "$dir/run/eval/summary.json" >"$dir/slurm.json" &&
        comparable_summary "$work/mpirun/run/eval/summary.json" >"$dir/mpirun.json" || return 1
    diff "$dir/mpirun.json" "$dir/slurm.json" && echo "identical eval summaries"
}

# A pretrain job on two nodes signalled mid-run (as the time-limit warning does) checkpoints on
# both, requeues, resumes and ends with the final checkpoint of an uninterrupted mpirun run.
test_two_node_signalled_stage_resumes_exactly() {
    needs data pretrain || return 2
    signalled_pretrain_resumes_exactly "$work/two-node-signal" 2 "${two_nodes[*]}"
}

# Two jobs on one run directory from two nodes: the second (on n2) is refused at once, naming the
# holder on n1 (its host, pid and Slurm job), so the lock does not rely on seeing the holder's pid;
# the first, stopped with the warning signal, checkpoints, exits 85 and leaves no lock behind.
test_two_node_second_job_on_a_run_directory_refused() {
    needs data || return 2
    local dir=$work/two-node-lock out=$work/two-node-lock/second.out first rc first_rc
    mkdir -p "$dir/run" && cp -a "$work/mpirun/run/data" "$dir/run/" || return 1
    local pretrain=("$suder" pretrain --config "$tiny" --run-dir "$dir/run" pretrain.steps=1000000 pretrain.checkpoint_every=1000000 runtime.progress=off)
    srun --nodes=1 --ntasks=1 --nodelist=n1 --cpus-per-task=1 --time=10 --mpi=pmix "${pretrain[@]}" >"$dir/first.out" 2>&1 &
    first=$!
    wait_until 120 grep -q "pretrain: " "$dir/first.out" || { cat "$dir/first.out"; kill $first; return 1; }
    cat "$dir/run/LOCK"
    srun --nodes=1 --ntasks=1 --nodelist=n2 --cpus-per-task=1 --time=5 --mpi=pmix "${pretrain[@]}" >"$out" 2>&1
    rc=$?
    cat "$out"
    kill -USR1 $first
    wait $first
    first_rc=$?
    echo "second job exit $rc; first job exit $first_rc after SIGUSR1"
    ((rc == 2)) && grep -q "is in use by another job (host n1, pid [0-9]*, Slurm job [0-9]*" "$out" || return 1
    ((first_rc == 85)) && [[ ! -e $dir/run/LOCK ]] || { echo "the first job did not stop cleanly or left its lock"; return 1; }
}

# The static build (scripts/build-static) on both nodes with the Swift toolchain's runtime
# directory hidden by an empty mount: doctor still passes, and ldd finds no Swift library.
test_static_build_without_toolchain() {
    suder_has doctor || { skip_reason="no $suder with a doctor command"; return 2; }
    local static toolchain_lib out=$work/static-doctor.out
    "$root/scripts/build-static" >"$work/build-static.log" 2>&1 || { tail -20 "$work/build-static.log"; echo "static build failed"; return 1; }
    static=$(tail -n 1 "$work/build-static.log")
    toolchain_lib=$(dirname "$(ldd "$suder" | awk '/libswiftCore/ {print $3}')")
    [[ -d $toolchain_lib && $toolchain_lib != . ]] || { echo "the dynamic build links no libswiftCore"; return 1; }
    echo "static binary $static; hiding $toolchain_lib"
    srun "${two_nodes[@]}" --mpi=pmix unshare --mount sh -c '
        mount -t tmpfs none "$1" && ! ls "$1"/libswiftCore.so 2>/dev/null || exit 9
        if ldd "$2" | grep -E "swift|Foundation|dispatch"; then echo "links the toolchain"; exit 9; fi
        exec "$2" doctor' sh "$toolchain_lib" "$static" >"$out" 2>&1
    local rc=$?
    cat "$out"
    ((rc == 0)) && doctor_passed_on_two_hosts "$out"
}

# ---- run ----------------------------------------------------------------------------------------

run_test() {
    local name=$1 rc
    [[ $name =~ ${SUDER_SLURM_TESTS:-.} || $name == test_cluster_* || $name == test_two_node_cluster_* ]] || return 0
    skip_reason=
    SECONDS=0
    "$name" >"$work/current.log" 2>&1
    rc=$?
    cp "$work/current.log" "$work/$name.log"
    case $rc in
    0) pass "$name (${SECONDS}s)" ;;
    2) skip "$name" "$skip_reason" ;;
    *) fail "$name" "exit $rc (${SECONDS}s; log $work/$name.log)" ;;
    esac
}

echo "slurm tests: work directory $work"
run_test test_cluster_start
if ((failed == 0)); then
    run_test test_doctor_under_srun
    run_test test_signal_requeue_resume
    run_test test_finished_stage_exits_at_once
    run_test test_mpirun_launcher_requeue
    run_test test_restart_cap
    run_test test_exit_zero_without_done_fails
    run_test test_time_limit_warning
    run_test test_submit_chain
    run_test test_failed_stage_cancels_chain
    run_test test_clean_environment_with_setup_hook
    run_test test_sweep_and_gather
    run_test test_sweep_task_requeues
    probe_stages
    run_test test_real_chain_matches_mpirun
    run_test test_real_pipeline_summary_matches_mpirun
    run_test test_real_signalled_stage_resumes_exactly
    run_test test_real_sweep_and_gather
fi
if ((started_cluster)); then
    run_test test_cluster_stop
fi
failed_one_node=$failed
run_test test_two_node_cluster_stop_after_failed_start
run_test test_two_node_cluster_start
if ((failed == failed_one_node)); then
    run_test test_two_node_doctor_under_srun
    run_test test_two_node_srun_without_mpi_stops
    run_test test_two_node_mpirun_across_namespaces
    run_test test_two_node_sweep_task_requeues_alone
    run_test test_two_node_pipeline_matches_mpirun
    run_test test_two_node_signalled_stage_resumes_exactly
    run_test test_two_node_second_job_on_a_run_directory_refused
    run_test test_static_build_without_toolchain
fi
if ((started_two_nodes)); then
    run_test test_two_node_cluster_stop
fi

# Logs of a failed run stay for a look (and of any run with SUDER_SLURM_KEEP=1).
((failed == 0)) && [[ -z ${SUDER_SLURM_KEEP:-} ]] && rm -rf "$work"
echo "slurm: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
