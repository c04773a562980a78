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

# Processes whose command line names anything under $work (ranks and mpirun); killed by id if found.
no_leftovers() {
    sleep 0.5
    local pids
    pids=$(pgrep -f "$work/")
    [ -z "$pids" ] && return 0
    ps -o pid,args -p $pids >>"$work/out"
    kill -9 $pids 2>/dev/null
    return 1
}
