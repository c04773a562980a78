#!/bin/bash
# A real one-node Slurm cluster on this machine, for testing the sbatch scripts in slurm/.
#
#   slurm/testing/local-cluster.sh start    install packages if missing, start munged, slurmctld, slurmd
#   slurm/testing/local-cluster.sh stop     cancel this cluster's jobs, stop exactly the daemons started
#   slurm/testing/local-cluster.sh status   daemons, node and queue
#   slurm/testing/local-cluster.sh check    sbatch, srun, squeue and scontrol round trip
#   eval "$(slurm/testing/local-cluster.sh env)"   point the Slurm clients at this cluster
#
# Debian's slurmctld/slurmd/munge packages, run by hand: no systemd and no cgroups
# (proctrack/linuxproc, task/none), one node with every core of this machine, SlurmUser=root,
# MpiDefault=pmix (Debian's OpenMPI starts under `srun --mpi=pmix`; pmi2 does not).
# Config, state, logs and pid files live under SUDER_SLURM_DIR (default /tmp/suder-slurm), and the
# clients find the config through SLURM_CONF, so nothing in /etc is touched.
set -euo pipefail

STATE_DIR=${SUDER_SLURM_DIR:-/tmp/suder-slurm}
CTLD_PORT=${SUDER_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${SUDER_SLURM_SLURMD_PORT:-6818}
CONF=$STATE_DIR/slurm.conf
MUNGE_DIR=$STATE_DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
# Start order; stop goes in reverse.
DAEMONS=(munged slurmctld slurmd)

export SLURM_CONF=$CONF

log() { echo "local-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

pid_file() { echo "$STATE_DIR/$1.pid"; }

# Prints the pid of a daemon this script started, if it is still alive.
running_pid() {
    local file pid
    file=$(pid_file "$1")
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    # A fresh machine has no package lists yet; an up-to-date one skips the download.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
    fi
}

write_config() {
    mkdir -p "$STATE_DIR"/{ctld,spool,log} "$MUNGE_DIR"
    # munged wants its socket directory reachable by everyone and writable only by its owner,
    # and its key readable only by its owner.
    chmod 0755 "$STATE_DIR" "$MUNGE_DIR"
    [[ -s $MUNGE_DIR/munge.key ]] || mungekey --create --keyfile="$MUNGE_DIR/munge.key"
    chmod 0600 "$MUNGE_DIR/munge.key"

    local host node_line
    host=$(hostname -s)
    # slurmd -C reports this machine's real sockets/cores/threads, so slurmd never finds the
    # node "misconfigured" and drains it.
    node_line=$(slurmd -C | head -n 1)
    cat >"$CONF" <<EOF
# Written by slurm/testing/local-cluster.sh: a one-node test cluster. Not for production.
ClusterName=suderlocal
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
# No systemd, no cgroups: track job processes through /proc and bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=pmix
SchedulerType=sched/backfill
# Jobs share the node by CPU, so a 3-element array runs side by side on a 2-core machine.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# Finished jobs stay visible to scontrol for 10 minutes (the tests read their exit codes).
MinJobAge=600
KillWait=30
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_for() {
    local what=$1 tries=$2
    shift 2
    for ((i = 0; i < tries; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "timed out waiting for $what (logs in $STATE_DIR/log)"
}

node_idle() { [[ $(sinfo -h -N -o %t 2>/dev/null) == idle* ]]; }

start() {
    install_packages
    if running_pid slurmctld >/dev/null && running_pid slurmd >/dev/null && running_pid munged >/dev/null; then
        log "already running (SLURM_CONF=$CONF)"
        return 0
    fi
    # A half-started cluster is stopped first, so every daemon below is one this script owns.
    stop_daemons
    write_config

    munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="$(pid_file munged)" --log-file="$STATE_DIR/log/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed"
    wait_for munged 20 running_pid munged
    # -c: start from an empty job table; a test cluster keeps no jobs across restarts.
    slurmctld -c -f "$CONF"
    wait_for slurmctld 40 scontrol ping
    slurmd -c -f "$CONF"
    wait_for "the node to become idle" 60 node_idle
    log "started: munged $(running_pid munged), slurmctld $(running_pid slurmctld), slurmd $(running_pid slurmd)"
    log "use it with: export SLURM_CONF=$CONF"
}

# Stops the daemons named in our pid files, newest first, and nothing else.
stop_daemons() {
    local name pid
    for ((d = ${#DAEMONS[@]} - 1; d >= 0; d--)); do
        name=${DAEMONS[d]}
        pid=$(running_pid "$name") || { rm -f "$(pid_file "$name")"; continue; }
        kill -TERM "$pid"
        for ((i = 0; i < 40 && $(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0); i++)); do sleep 0.25; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$(pid_file "$name")"
        log "stopped $name ($pid)"
    done
}

# Job steps run under slurmstepd processes that slurmd does not own; cancelling this cluster's
# jobs first lets them end on their own before the daemons go.
cancel_jobs() {
    running_pid slurmctld >/dev/null || return 0
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    [[ -n $jobs ]] || return 0
    log "cancelling jobs: $(echo $jobs)"
    scancel $jobs 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do
        [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
        sleep 0.5
    done
    # Wait for the step daemons to finish their cleanup too.
    for ((i = 0; i < 60; i++)); do
        pgrep -x slurmstepd >/dev/null || break
        sleep 0.5
    done
}

stop() {
    cancel_jobs
    stop_daemons
}

status() {
    local name pid rc=0
    for name in "${DAEMONS[@]}"; do
        if pid=$(running_pid "$name"); then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
            rc=1
        fi
    done
    if ((rc == 0)); then
        echo "SLURM_CONF=$CONF"
        sinfo -N -o "%N %t %c %m" || rc=1
        squeue || rc=1
    fi
    return $rc
}

# A small round trip through each client command.
check() {
    local out job state
    out=$(srun -N1 -n2 --mpi=none bash -c 'echo $SLURM_PROCID') || die "srun failed"
    [[ $(sort <<<"$out" | tr '\n' ' ') == "0 1 " ]] || die "srun: expected ranks 0 1, got: $out"
    job=$(sbatch --parsable --output=/dev/null --wrap 'sleep 2') || die "sbatch failed"
    squeue -h -j "$job" -o %i | grep -qx "$job" || die "squeue does not list job $job"
    for ((i = 0; i < 60; i++)); do
        state=$(scontrol show job "$job" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
        [[ $state == COMPLETED ]] && break
        sleep 0.5
    done
    [[ $state == COMPLETED ]] || die "sbatch job $job ended in state ${state:-unknown}"
    echo "check: srun, sbatch, squeue and scontrol work (job $job COMPLETED)"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
check) check ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 start|stop|status|check|env" >&2
    exit 2
    ;;
esac
