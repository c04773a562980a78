# Shared by the multi-rank shell suites (sourced): counters, verdict lines, and `run`, which
# times a command and checks its exit status. Needs $work (a temp dir) set by the suite.
passed=0 failed=0 skipped=0

pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; sed 's/^/    | /' "$work/out" | tail -25; failed=$((failed + 1)); }
skip() { echo "SKIP $1"; skipped=$((skipped + 1)); }

# run NAME EXPECT(zero|nonzero) MAX_SECONDS CMD...: runs CMD with output in $work/out; sets
# $elapsed_ms and $elapsed (seconds, 3 decimals).
run() {
    local name=$1 expect=$2 limit=$3; shift 3
    local start status
    start=$(date +%s%N)
    timeout -k 5 $((limit + 30)) "$@" >"$work/out" 2>&1
    status=$?
    elapsed_ms=$((($(date +%s%N) - start) / 1000000))
    elapsed=$((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)))
    case $expect in
        zero) [ $status -eq 0 ] || { fail "$name (exit $status, expected 0)"; return 1; } ;;
        nonzero) [ $status -ne 0 ] || { fail "$name (exit 0, expected non-zero)"; return 1; } ;;
    esac
    if [ $elapsed_ms -gt $((limit * 1000)) ]; then fail "$name (took ${elapsed}s, limit ${limit}s)"; return 1; fi
    return 0
}

# no_leftovers [PATH]: processes whose command line names PATH (default "$work/", which the
# suite's mpirun and ranks name in their run directories or scripts); killed by id if found. PATH
# must be absolute: a relative one would also match other checkouts' processes.
no_leftovers() {
    local path=${1:-$work/} pids
    case $path in
        /*) ;;
        *) echo "no_leftovers: $path is not an absolute path" >>"$work/out"; return 1 ;;
    esac
    sleep 0.5
    pids=$(pgrep -f "$path")
    [ -z "$pids" ] && return 0
    ps -o pid,args -p $pids >>"$work/out"
    kill -9 $pids 2>/dev/null
    return 1
}
