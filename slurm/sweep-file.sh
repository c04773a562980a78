# Reading sweep files (format: slurm/sweeps/example.sweep); sourced by slurm/common.sh and by
# scripts/sweep-local, never run on its own.

# suder_sweep_entries FILE: the sweep file's runs, one "NAME key=value ..." line each, without
# comments and blank lines. Line i (from 0) is array task i.
suder_sweep_entries() {
    sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$1"
}

# suder_sweep_check FILE: exits 2 with a message if the file has no runs, a line that is not
# "NAME key=value ...", a name that is not one directory's, or names a run twice (two lines with
# one name would share, and corrupt, one run directory).
suder_sweep_check() {
    local runs duplicates name token
    [[ -f $1 ]] || { echo "sweep file not found: $1" >&2; exit 2; }
    runs=$(suder_sweep_entries "$1" | wc -l)
    ((runs > 0)) || { echo "no runs in $1" >&2; exit 2; }
    while read -r name tokens; do
        if [[ $name == *=* || $name == */* || $name == . || $name == .. || $name == -* ]]; then
            echo "$1: run name '$name' must come first on its line and name one directory (no '=', '/' or leading '-')" >&2
            exit 2
        fi
        for token in $tokens; do
            [[ $token == ?*=* ]] || { echo "$1: run '$name': '$token' is not key=value" >&2; exit 2; }
        done
    done < <(suder_sweep_entries "$1")
    duplicates=$(suder_sweep_entries "$1" | awk '{print $1}' | sort | uniq -d)
    [[ -z $duplicates ]] || { echo "run names used twice in $1: $duplicates" >&2; exit 2; }
}
