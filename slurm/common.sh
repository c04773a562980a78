# Shared body of the suder sbatch scripts; sourced by slurm/*.sbatch, never run on its own.
#
# What it does for every job:
#   - launches `suder ...` on every task of the allocation (srun --mpi=pmix, or mpirun),
#     with threads per rank from SLURM_CPUS_PER_TASK;
#   - traps the warning signal Slurm sends before the time limit (--signal=B:USR1@lead), forwards
#     it to the job step, waits for the checkpoint (exit 85) and requeues the job with
#     `scontrol requeue`, at most SUDER_MAX_RESTARTS times;
#   - keeps the run directory given on the command line, so a requeued job resumes in place;
#   - exits at once when the stage is already finished (<run-dir>/<stage>/DONE) with the settings
#     the run directory recorded.

# The site's setup hook (modules, library paths, MPI settings, SUDER_* variables) comes first. On
# sites whose jobs start with a clean environment (--export=NONE) it is the place for all of them:
# it is found through SUDER_HOME or the submit directory, which slurm/submit and slurm/sweep make
# the checkout. Example: slurm/site.sh.example.
# A hook named explicitly must exist: a mistyped path would start the ranks without its modules.
if [[ -n ${SUDER_SETUP:-} && ! -f $SUDER_SETUP ]]; then
    echo "[suder-slurm] SUDER_SETUP names $SUDER_SETUP, which is not a file" >&2
    exit 2
fi
: "${SUDER_SETUP:=${SUDER_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/site.sh}"
if [[ -f $SUDER_SETUP ]]; then
    # shellcheck source=/dev/null
    source "$SUDER_SETUP"
fi
# The ranks get this shell's environment, hook included. A job submitted with --export=NONE (or a
# list) passes that choice on to every srun in it, mpirun's own included, which would start the
# ranks without the modules and settings loaded here.
export SLURM_EXPORT_ENV=ALL

# ---- Change these for your site (or set them in the environment before sbatch/submit) ----------
# Where the suder checkout lives. slurm/submit exports it; a bare `sbatch slurm/x.sbatch` from the
# checkout's root works too, because Slurm starts the job in the submit directory.
: "${SUDER_HOME:=${SLURM_SUBMIT_DIR:-$PWD}}"
# Nodes without the Swift toolchain: scripts/build-static, then SUDER_BIN=$SUDER_HOME/.build-static/release/suder.
: "${SUDER_BIN:=$SUDER_HOME/.build/release/suder}"
# srun (PMIx) is the default. mpirun is the fallback for sites whose Slurm has no PMIx plugin or
# whose MPI was built without Slurm support: OpenMPI's mpirun reads the allocation from Slurm.
: "${SUDER_LAUNCHER:=srun}"
# A stage that keeps checkpointing without finishing stops here instead of requeueing forever.
: "${SUDER_MAX_RESTARTS:=20}"
# srun's --cpu-bind: each rank on its own cores, so BLAS threads of two ranks never share one.
# On SMT nodes also pass --hint=nomultithread (SUDER_SBATCH_ARGS), or --cpus-per-task counts
# hardware threads and a rank gets half the cores it has threads; "none" turns binding off.
: "${SUDER_CPU_BIND:=cores}"
# -------------------------------------------------------------------------------------------------

# The product's exit codes after SIGUSR1/SIGTERM: 85 = checkpointed at a step boundary, please
# requeue; 86 = stopped before it could checkpoint (a second, different stop signal), a requeue
# resumes from the previous checkpoint.
SUDER_EXIT_CHECKPOINTED=85
SUDER_EXIT_STOPPED=86

suder_log() { echo "[suder-slurm $(date +%T.%3N)] $*"; }

# A value that is not a whole number would turn the restart cap off (or to 0) in the arithmetic.
if ! [[ $SUDER_MAX_RESTARTS =~ ^[0-9]+$ ]]; then
    suder_log "SUDER_MAX_RESTARTS must be a whole number of restarts; received '$SUDER_MAX_RESTARTS'"
    exit 2
fi

# The product reads SLURM_CPUS_PER_TASK itself; BLAS and OpenMP pools follow it too, so a rank
# never oversubscribes the cores Slurm gave it.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export OPENBLAS_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

suder_launcher() {
    case $SUDER_LAUNCHER in
    # Slurm >= 22.11 no longer passes --cpus-per-task from sbatch to srun, so it is repeated here.
    srun) SUDER_LAUNCH=(srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" --cpu-bind="$SUDER_CPU_BIND") ;;
    # mpirun forwards SIGUSR1 to every rank, as srun does.
    mpirun) SUDER_LAUNCH=(mpirun -np "$SLURM_NTASKS" --bind-to none) ;;
    *)
        suder_log "SUDER_LAUNCHER must be srun or mpirun, not '$SUDER_LAUNCHER'"
        exit 2
        ;;
    esac
}

# Relative paths are taken from the job's working directory (sbatch --chdir, else the submit
# directory), which is the same on every restart.
suder_abs_path() {
    case $1 in
    /*) echo "$1" ;;
    *) echo "$PWD/$1" ;;
    esac
}

_suder_on_signal() {
    _suder_signalled=1
    if [[ $1 == TERM ]]; then
        # scancel, preemption and the hard time limit send SIGTERM to the job step as well, and
        # only KillWait remains before SIGKILL: nothing to relay, nothing to requeue.
        _suder_terminating=1
        suder_log "SIGTERM received: the job step got it too and checkpoints on its own"
    elif [[ -n ${_suder_step_pid:-} ]]; then
        suder_log "SIGUSR1 received: asking the job step to checkpoint"
        # srun and mpirun relay it once to every task; the product checkpoints at the next step
        # boundary and exits 85.
        kill -USR1 "$_suder_step_pid" 2>/dev/null || true
    fi
}

# _suder_requeue EXIT_CODE: requeues this job unless it was cancelled or has used up its restarts;
# otherwise ends it with EXIT_CODE, which fails the job and cancels the jobs that depend on it.
_suder_requeue() {
    local code=$1 restarts=${SLURM_RESTART_COUNT:-0}
    if ((_suder_terminating)); then
        suder_log "stopped by SIGTERM (scancel, preemption or the time limit); not requeueing"
        exit "$code"
    fi
    if ((restarts >= SUDER_MAX_RESTARTS)); then
        suder_log "stopped, but the job was already restarted $restarts times (SUDER_MAX_RESTARTS); giving up"
        exit "$code"
    fi
    # An array task is requeued by its own id: the plain job id of the task that holds the array's
    # id names the whole array, and would requeue (and SIGTERM) every sibling task.
    local job=$SLURM_JOB_ID
    [[ -n ${SLURM_ARRAY_TASK_ID:-} ]] && job=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
    suder_log "requeueing job $job (restart $((restarts + 1)) of at most $SUDER_MAX_RESTARTS)"
    if ! scontrol requeue "$job"; then
        suder_log "scontrol requeue failed; the job ends here and can be resubmitted to resume"
        exit "$code"
    fi
    # Slurm ends this script as part of the requeue; the exit status no longer counts.
    exit 0
}

# suder_run DONE_FILE ARGS...: runs `suder ARGS...` on every task, relays the warning signal, and
# requeues the job when the product checkpoints. Success needs exit 0 and DONE_FILE, because srun
# also exits 0 when the step could not be launched at all.
suder_run() {
    local done_file=$1
    shift
    suder_launcher
    _suder_signalled=0 _suder_terminating=0 _suder_step_pid=
    trap '_suder_on_signal USR1' USR1
    trap '_suder_on_signal TERM' TERM
    suder_log "job ${SLURM_JOB_ID:-?} restart ${SLURM_RESTART_COUNT:-0}: ${SUDER_LAUNCH[*]} $SUDER_BIN $*"
    "${SUDER_LAUNCH[@]}" "$SUDER_BIN" "$@" &
    _suder_step_pid=$!
    local rc
    # `wait` returns early whenever a trapped signal arrives; keep waiting until the step itself ends.
    while :; do
        _suder_signalled=0
        wait "$_suder_step_pid"
        rc=$?
        ((_suder_signalled)) || break
    done
    trap - USR1 TERM
    suder_log "job step exited with code $rc"
    case $rc in
    0)
        [[ -e $done_file ]] && exit 0
        suder_log "the job step exited 0 but $done_file does not exist; failing the job"
        exit 1
        ;;
    "$SUDER_EXIT_CHECKPOINTED") _suder_requeue "$rc" ;;
    "$SUDER_EXIT_STOPPED")
        # Also seen when one rank exits 85 a moment before the others and srun (--kill-on-bad-exit)
        # stops them: the checkpoint was written, and a restart loads the newest complete one.
        suder_log "a rank stopped without checkpointing (exit 86); the requeued job resumes from the newest complete checkpoint"
        _suder_requeue "$rc"
        ;;
    *) exit "$rc" ;;
    esac
}

# suder_finished DONE_FILE ARGS...: whether the work of `suder ARGS...` is already done. The
# product runs once on this host, without a job step: it refuses settings other than those the
# run directory recorded (so a finished run resubmitted with other overrides is an error, not its
# old result under new labels) and finds the work done; its refusal ends the job with its code.
suder_finished() {
    local done_file=$1
    shift
    [[ -e $done_file ]] || return 1
    # One process alone: a step's task count in the environment would make it refuse to start.
    env -u SLURM_STEP_NUM_TASKS "$SUDER_BIN" "$@" >/dev/null || exit $?
}

# suder_run_stage STAGE CONFIG RUN_DIR [key.sub=value ...]
suder_run_stage() {
    if (($# < 3)); then
        suder_log "usage: sbatch slurm/$1.sbatch CONFIG RUN_DIR [key.sub=value ...]"
        exit 2
    fi
    local stage=$1 config run_dir
    config=$(suder_abs_path "$2")
    run_dir=$(suder_abs_path "$3")
    shift 3
    if suder_finished "$run_dir/$stage/DONE" "$stage" --config "$config" --run-dir "$run_dir" "$@"; then
        suder_log "$stage already finished in $run_dir; nothing to do"
        exit 0
    fi
    suder_run "$run_dir/$stage/DONE" "$stage" --config "$config" --run-dir "$run_dir" "$@"
}

# suder_run_pipeline CONFIG RUN_DIR [--until STAGE] [key.sub=value ...]: every stage in one job;
# the product skips the finished ones, so a requeued job resumes where it stopped.
suder_run_pipeline() {
    local config run_dir last=eval i
    config=$(suder_abs_path "$1")
    run_dir=$(suder_abs_path "$2")
    shift 2
    # --until may come anywhere among the overrides, as the product takes it.
    local -a args=("$@")
    for ((i = 0; i < ${#args[@]}; i++)); do
        case ${args[i]} in
        --until) last=${args[i + 1]:-} ;;
        --until=*) last=${args[i]#--until=} ;;
        esac
    done
    if suder_finished "$run_dir/$last/DONE" pipeline --config "$config" --run-dir "$run_dir" "$@"; then
        suder_log "pipeline already finished through $last in $run_dir; nothing to do"
        exit 0
    fi
    suder_run "$run_dir/$last/DONE" pipeline --config "$config" --run-dir "$run_dir" "$@"
}

source "$SUDER_HOME/slurm/sweep-file.sh"

# suder_run_sweep_task SWEEP_FILE CONFIG RUN_ROOT [--until STAGE] [key.sub=value ...]: array task i
# runs the pipeline for line i of the sweep file in RUN_ROOT/NAME, with that line's overrides
# after the shared ones (later overrides win).
suder_run_sweep_task() {
    local sweep_file config run_root entry name overrides_line
    sweep_file=$(suder_abs_path "$1")
    config=$2
    run_root=$(suder_abs_path "$3")
    shift 3
    if [[ -z ${SLURM_ARRAY_TASK_ID:-} ]]; then
        suder_log "slurm/sweep.sbatch runs as a job array, one task per sweep line: submit it with slurm/sweep"
        exit 2
    fi
    entry=$(suder_sweep_entries "$sweep_file" | sed -n "$((SLURM_ARRAY_TASK_ID + 1))p")
    if [[ -z $entry ]]; then
        suder_log "sweep file $sweep_file has no run for array task $SLURM_ARRAY_TASK_ID"
        exit 2
    fi
    local -a overrides
    read -r name overrides_line <<<"$entry"
    read -r -a overrides <<<"${overrides_line:-}"
    suder_log "sweep task $SLURM_ARRAY_TASK_ID: run '$name' with ${overrides[*]:-no overrides}"
    suder_run_pipeline "$config" "$run_root/$name" "$@" "${overrides[@]}"
}
