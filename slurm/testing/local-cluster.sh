#!/bin/bash
# A real Slurm cluster on this machine, for testing the sbatch scripts in slurm/: one node, or
# several nodes in network namespaces.
#
#   slurm/testing/local-cluster.sh [--nodes N] start    install packages if missing, start the daemons
#   slurm/testing/local-cluster.sh [--nodes N] stop     cancel this cluster's jobs, remove what start made
#   slurm/testing/local-cluster.sh [--nodes N] status   daemons, nodes and queue
#   slurm/testing/local-cluster.sh [--nodes N] check    sbatch, srun, squeue and scontrol round trip
#   eval "$(slurm/testing/local-cluster.sh [--nodes N] env)"   point Slurm (and Open MPI) at this cluster
#   slurm/testing/local-cluster.sh --nodes N exec NODE CMD...  run CMD inside node NODE (n1, n2, ...)
#
# Debian's slurmctld/slurmd/munge packages, run by hand: no systemd and no cgroups
# (proctrack/linuxproc, task/none), SlurmUser=root. Config, state, logs and pid files live under
# SUDER_SLURM_DIR, and the clients find the config through SLURM_CONF, so nothing in /etc is touched.
#
# One node (the default): every core of this machine, MpiDefault=pmix (Debian's OpenMPI starts
# under `srun --mpi=pmix`; pmi2 does not). SUDER_SLURM_DIR defaults to /tmp/suder-slurm.
#
# N nodes (--nodes 2): nodes n1..nN of one CPU each, bound to one core each (taskset), in network
# namespaces joined by a bridge on a private /24 (SUDER_SLURM_SUBNET, default 10.217.17: the
# nodes are .1, .2, ..., slurmctld and the clients .254 on the bridge). Each node runs in its own
# mount and UTS namespace (nsenter --net, then unshare --mount --uts; `ip netns exec` would remount
# /sys and hide the cgroup tree from slurmd) with its own host name, /etc/hosts, munged (one munged
# for all nodes would reject the second node's job credential as a replay), spool directory and
# TmpFS (PMIx keeps per-step directories there). MpiDefault is Slurm's own default, none, as on
# sites where a plain `srun` starts no MPI. Open MPI uses TCP on the /24 (`env` exports the
# OMPI_MCA_* settings). SUDER_SLURM_DIR defaults to /tmp/suder-slurm-nodesN, the slurmctld port
# to 16817, job ids start at 700000. Every namespace, link and daemon start makes is recorded
# first in SUDER_SLURM_DIR/created; stop removes exactly those, newest first, even after a
# failed start.
set -euo pipefail

NODES=1
if [[ ${1:-} == --nodes ]]; then
    NODES=${2:-}
    shift 2 || true
fi
[[ $NODES =~ ^[1-9]$ ]] || { echo "local-cluster: --nodes takes 1 to 9" >&2; exit 2; }
if ((NODES == 1)); then
    STATE_DIR=${SUDER_SLURM_DIR:-/tmp/suder-slurm}
    CTLD_PORT=${SUDER_SLURM_CTLD_PORT:-6817}
else
    STATE_DIR=${SUDER_SLURM_DIR:-/tmp/suder-slurm-nodes$NODES}
    CTLD_PORT=${SUDER_SLURM_CTLD_PORT:-16817}
fi
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

# runs NAME PID: process PID runs and is NAME (not a reused pid, not a zombie waiting for its parent).
runs() {
    [[ $(awk '/^Name:/ {name = $2} /^State:/ {state = $2} END {print name, state}' "/proc/$2/status" 2>/dev/null) =~ ^$1\ [^Z] ]]
}

# daemon_pid NAME PID_FILE: the pid in PID_FILE if that process runs and is NAME.
daemon_pid() {
    local pid
    # The daemon removes its pid file as it exits, so the file can vanish between test and read.
    pid=$(cat "$2" 2>/dev/null) && [[ -n $pid ]] && runs "$1" "$pid" || return 1
    echo "$pid"
}

# Prints the pid of a daemon this script started, if it is still alive.
running_pid() { daemon_pid "$1" "$(pid_file "$1")"; }

# stop_daemon NAME PID_FILE: SIGTERM, then SIGKILL after 10 s; a daemon already gone is stopped too.
stop_daemon() {
    local pid
    pid=$(daemon_pid "$1" "$2") || return 0
    # It may exit on its own between the check and the signal.
    kill -TERM "$pid" 2>/dev/null || true
    # Wait on the process, not its pid file: some daemons remove the file before they exit.
    for ((i = 0; i < 40; i++)); do runs "$1" "$pid" || break; sleep 0.25; done
    if runs "$1" "$pid"; then
        log "$1 ($pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $1 ($pid)"
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

# The slurm.conf lines both kinds of cluster share.
plugin_and_scheduling_config() {
    cat <<'EOF'
# No systemd, no cgroups: track job processes through /proc and bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SchedulerType=sched/backfill
# Jobs share the nodes by CPU, so a 3-element array runs side by side on a 2-core machine.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# Finished jobs stay visible to scontrol for 10 minutes (the tests read their exit codes).
MinJobAge=600
KillWait=30
EOF
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
$(plugin_and_scheduling_config)
MpiDefault=pmix
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
    local name
    for ((d = ${#DAEMONS[@]} - 1; d >= 0; d--)); do
        name=${DAEMONS[d]}
        stop_daemon "$name" "$(pid_file "$name")"
        rm -f "$(pid_file "$name")"
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

# The nodes and the queue, once every daemon runs.
queue_status() {
    echo "SLURM_CONF=$CONF"
    sinfo -N -o "%N %t %c %m" && squeue
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
    ((rc == 0)) && queue_status
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

# ---- several nodes in network namespaces --------------------------------------------------------

SUBNET=${SUDER_SLURM_SUBNET:-10.217.17}
CREATED=$STATE_DIR/created
BRIDGE=suder-br$NODES
node_ns() { echo "suder-n$1"; }
node_veth() { echo "suder-n$1h"; }
node_dir() { echo "$STATE_DIR/nodes/n$1"; }

# Everything start makes is written here before it is made, so stop can remove it after any failure.
record() { echo "$*" >>"$CREATED"; }


nodes_write_config() {
    mkdir -p "$STATE_DIR"/{ctld,log,munge,spool,tmp}
    chmod 0755 "$STATE_DIR" "$STATE_DIR/munge"
    # One key for every munged, kept outside the munge directory that each node covers with its own.
    [[ -s $STATE_DIR/munge.key ]] || mungekey --create --keyfile="$STATE_DIR/munge.key"
    chmod 0600 "$STATE_DIR/munge.key"
    # Node names resolve without DNS, which would cost ~40 s of timeouts per lookup.
    {
        echo "127.0.0.1 localhost"
        for ((i = 1; i <= NODES; i++)); do echo "$SUBNET.$i n$i"; done
        echo "$SUBNET.254 suder-ctl"
    } >"$STATE_DIR/hosts"
    # Open MPI's launcher when mpirun runs across the nodes without Slurm: like ssh, it runs its
    # command through a shell on the named node.
    {
        echo '#!/bin/sh'
        echo '# Written by slurm/testing/local-cluster.sh: the stand-in for ssh under mpirun --host n1,n2.'
        echo 'host=$1'
        echo 'shift'
        echo "exec '$(realpath "$0")' --nodes $NODES exec \"\$host\" sh -c \"\$*\""
    } >"$STATE_DIR/rsh-agent"
    chmod 0755 "$STATE_DIR/rsh-agent"
    {
        cat <<EOF
# Written by slurm/testing/local-cluster.sh --nodes $NODES: a test cluster. Not for production.
ClusterName=sudernodes$NODES
SlurmctldHost=$(hostname -s)($SUBNET.254)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
FirstJobId=700000
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE_DIR/munge/munge.socket.2
StateSaveLocation=$STATE_DIR/ctld
# Per node: each node mounts its own directory over these.
SlurmdSpoolDir=$STATE_DIR/spool
TmpFS=$STATE_DIR/tmp
SlurmdPidFile=$STATE_DIR/spool/slurmd.pid
SlurmdLogFile=$STATE_DIR/spool/slurmd.log
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
$(plugin_and_scheduling_config)
EOF
        for ((i = 1; i <= NODES; i++)); do
            echo "NodeName=n$i NodeHostName=n$i NodeAddr=$SUBNET.$i CPUs=1 State=UNKNOWN"
        done
        echo "PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP"
    } >"$CONF"
}

nodes_make_network() {
    local i ns veth
    ! ip -4 -o addr | grep -q " $SUBNET\." || die "$SUBNET.0/24 is already in use here; set SUDER_SLURM_SUBNET"
    # Never take over a namespace or link that someone else made.
    ! ip link show "$BRIDGE" >/dev/null 2>&1 || die "link $BRIDGE exists but is not this cluster's"
    record "link $BRIDGE"
    ip link add "$BRIDGE" type bridge
    ip addr add "$SUBNET.254/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for ((i = 1; i <= NODES; i++)); do
        ns=$(node_ns "$i") veth=$(node_veth "$i")
        [[ ! -e /run/netns/$ns ]] || die "network namespace $ns exists but is not this cluster's"
        ! ip link show "$veth" >/dev/null 2>&1 || die "link $veth exists but is not this cluster's"
        record "netns $ns"
        ip netns add "$ns"
        record "link $veth"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" addr add "$SUBNET.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
}

nodes_start_node() {
    local i=$1 dir
    dir=$(node_dir "$i")
    mkdir -p "$dir"/{munge,spool,tmp}
    chmod 0755 "$dir" "$dir/munge"
    record "daemon munged $dir/munge/munged.pid"
    record "daemon slurmd $dir/spool/slurmd.pid"
    # One core per node; the node's own host name, hosts file, munged, spool and TmpFS.
    taskset -c $(((i - 1) % $(nproc))) nsenter --net="/run/netns/$(node_ns "$i")" \
        unshare --mount --uts --propagation private sh -euc '
        node=$1 state=$2 dir=$3 conf=$4
        hostname "$node"
        mount --bind "$state/hosts" /etc/hosts
        for d in munge spool tmp; do mount --bind "$dir/$d" "$state/$d"; done
        munged --socket="$state/munge/munge.socket.2" --key-file="$state/munge.key" \
            --pid-file="$state/munge/munged.pid" --log-file="$state/spool/munged.log" \
            --seed-file="$state/munge/munged.seed"
        for t in $(seq 40); do [ -S "$state/munge/munge.socket.2" ] && break; sleep 0.25; done
        slurmd -c -f "$conf" -N "$node"
    ' sh "n$i" "$STATE_DIR" "$dir" "$CONF" || die "node n$i did not start (logs in $dir/spool)"
    wait_for "munged on n$i" 40 daemon_pid munged "$dir/munge/munged.pid"
    wait_for "slurmd on n$i" 40 daemon_pid slurmd "$dir/spool/slurmd.pid"
}

nodes_idle() { (($(sinfo -h -N -o %t 2>/dev/null | grep -c '^idle') == NODES)); }

nodes_running() {
    local kind name file
    [[ -s $CREATED ]] || return 1
    while read -r kind name file; do
        [[ $kind != daemon ]] || daemon_pid "$name" "$file" >/dev/null || return 1
    done <"$CREATED"
}

nodes_start() {
    install_packages
    command -v ip >/dev/null && command -v nsenter >/dev/null || die "needs iproute2 (ip) and util-linux (nsenter, unshare)"
    if nodes_running; then
        log "already running (SLURM_CONF=$CONF)"
        return 0
    fi
    # Whatever a failed start left behind is removed first; everything below is then this script's.
    nodes_stop
    mkdir -p "$STATE_DIR"
    nodes_write_config
    nodes_make_network
    record "daemon munged $STATE_DIR/munge/munged.pid"
    munged --socket="$STATE_DIR/munge/munge.socket.2" --key-file="$STATE_DIR/munge.key" \
        --pid-file="$STATE_DIR/munge/munged.pid" --log-file="$STATE_DIR/log/munged.log" \
        --seed-file="$STATE_DIR/munge/munged.seed"
    wait_for munged 40 daemon_pid munged "$STATE_DIR/munge/munged.pid"
    record "daemon slurmctld $STATE_DIR/slurmctld.pid"
    slurmctld -c -f "$CONF"
    wait_for slurmctld 40 scontrol ping
    for ((i = 1; i <= NODES; i++)); do nodes_start_node "$i"; done
    wait_for "$NODES idle nodes" 90 nodes_idle
    log "started $NODES nodes; use them with: eval \"\$($0 --nodes $NODES env)\""
}

# Removes what start recorded, newest first: daemons, then links and namespaces.
nodes_stop() {
    [[ -e $CREATED ]] || return 0
    local kind name file
    daemon_pid slurmctld "$STATE_DIR/slurmctld.pid" >/dev/null && cancel_jobs
    while read -r kind name file; do
        case $kind in
        daemon) stop_daemon "$name" "$file" ;;
        link) ! ip link show "$name" >/dev/null 2>&1 || { ip link del "$name" && log "deleted link $name"; } ;;
        netns) [[ ! -e /run/netns/$name ]] || { ip netns del "$name" && log "deleted network namespace $name"; } ;;
        esac
    done < <(tac "$CREATED")
    rm -f "$CREATED"
}

nodes_status() {
    local kind name file pid rc=0
    [[ -s $CREATED ]] || { echo "not started (no $CREATED)"; return 1; }
    while read -r kind name file; do
        case $kind in
        daemon)
            if pid=$(daemon_pid "$name" "$file"); then echo "$name: running (pid $pid)"; else echo "$name: not running ($file)"; rc=1; fi
            ;;
        link) ip link show "$name" >/dev/null 2>&1 && echo "link $name: present" || { echo "link $name: missing"; rc=1; } ;;
        netns) [[ -e /run/netns/$name ]] && echo "network namespace $name: present" || { echo "network namespace $name: missing"; rc=1; } ;;
        esac
    done <"$CREATED"
    ((rc == 0)) && queue_status
}

nodes_check() {
    local out expected
    out=$(srun -N "$NODES" --ntasks-per-node=1 --mpi=none hostname) || die "srun across $NODES nodes failed"
    expected=$(for ((i = 1; i <= NODES; i++)); do echo "n$i"; done)
    [[ $(sort <<<"$out") == "$expected" ]] || die "srun: expected hosts $(echo $expected), got: $(echo $out)"
    echo "check: srun ran one task on each of $(echo $out)"
}

# nodes_exec NODE CMD...: CMD in NODE's network, mount and UTS namespaces (those of its slurmd).
nodes_exec() {
    local node=${1:?usage: $0 --nodes N exec NODE CMD...} pid
    shift
    [[ $node =~ ^n([1-9])$ ]] && ((BASH_REMATCH[1] <= NODES)) || die "no node '$node' (nodes n1..n$NODES)"
    pid=$(daemon_pid slurmd "$(node_dir "${BASH_REMATCH[1]}")/spool/slurmd.pid") || die "node $node is not running"
    exec nsenter -t "$pid" --net --mount --uts --wd="$PWD" -- "$@"
}

nodes_env() {
    echo "export SLURM_CONF=$CONF"
    # Open MPI between the nodes: TCP on the cluster's /24 only (ob1, shared memory within a node).
    echo "export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=$SUBNET.0/24 OMPI_MCA_oob_tcp_if_include=$SUBNET.0/24"
    echo "export OMPI_MCA_plm_rsh_agent=$STATE_DIR/rsh-agent"
}

if ((NODES > 1)); then
    case ${1:-} in
    start) nodes_start ;;
    stop) nodes_stop ;;
    status) nodes_status ;;
    check) nodes_check ;;
    env) nodes_env ;;
    exec) shift; nodes_exec "$@" ;;
    *)
        echo "usage: $0 --nodes $NODES start|stop|status|check|env|exec NODE CMD..." >&2
        exit 2
        ;;
    esac
    exit
fi

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
check) check ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 [--nodes N] start|stop|status|check|env" >&2
    exit 2
    ;;
esac
