#!/usr/bin/env bash
# What a researcher uses to look at a model, on a tiny run trained here under mpirun: `suder generate`
# (PNGs and grid; 2 ranks = 1 rank; GenEval layout identical to the eval stage's samples and scored
# alike), `suder caption` (and its bad-input errors), and `suder report --html` opened in a real
# headless browser (Debian's chromium). Usage: Tests/report/run.sh BIN_DIR
set -u
# Absolute: the processes started here name this checkout's binaries, whatever the caller's directory.
bin=$(cd "${1:?usage: Tests/report/run.sh BIN_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1
export OMPI_MCA_orte_base_help_aggregate=1
work=$(mktemp -d /tmp/suder-report.XXXXXX)
trap 'rm -rf "$work"' EXIT
source "$root/Tests/mpi/lib.sh"
suder=$bin/suder
# $mpi NP ARGS...: suder under mpirun (a script, so that `timeout` in `run` can start it).
mpi=$work/mpi.sh
printf '#!/usr/bin/env bash\nnp=$1; shift\nexec mpirun -np "$np" %q "$@"\n' "$suder" >"$mpi"
chmod +x "$mpi"

finish() {
    echo
    echo "$passed passed, $failed failed"
    [ $failed -eq 0 ]
    exit
}

# PNG width and height from the IHDR chunk.
png_size() { python3 -c 'import struct,sys; d=open(sys.argv[1],"rb").read(24); print("%dx%d" % struct.unpack(">II", d[16:24]))' "$1"; }

# A tiny run with every eval prompt scored (eval.max_prompts=0, so the eval stage's sample k of
# metadata line i uses the seed `suder generate --metadata` uses for it).
dir=$work/run
if run "tiny pipeline (2 ranks)" zero 600 "$mpi" 2 pipeline --run-dir "$dir" --config "$root/configs/tiny.yaml" \
    data.train_pairs=600 data.train_captions=300 data.train_probes=300 data.unpaired_prompts=40 data.unpaired_images=40 \
    data.eval_prompts_per_category=2 data.eval_images=12 eval.max_prompts=0 eval.images_per_prompt=2 \
    pretrain.eval_every=10 suder.eval_every=1 runtime.progress=off; then
    pass "tiny pipeline (2 ranks) in ${elapsed}s"
else
    finish
fi
metadata=$dir/data/eval/dev/metadata.jsonl

# 1. generate --prompt: PNGs and an enlarged grid; the same images on 2 ranks.
if run "generate --prompt" zero 60 "$suder" generate --checkpoint "$dir/suder" --prompt "a photo of two red circles" --n 6 \
    --out "$work/gen1"; then
    count=$(ls "$work/gen1" | grep -c '^[0-9]\{4\}\.png$')
    size=$(png_size "$work/gen1/grid.png")
    # 6 images of 32 px and 7 gaps of 2 px across, one row, each pixel 8x8.
    if [ "$count" -eq 6 ] && [ "$(png_size "$work/gen1/0000.png")" = 32x32 ] && [ "$size" = 1648x288 ]; then
        pass "generate --prompt: 6 PNGs of 32x32 and a ${size} grid"
    else fail "generate --prompt: $count PNGs, grid $size (expected 6 and 1648x288)"; fi
fi
if run "generate --prompt on 2 ranks" zero 60 "$mpi" 2 generate --checkpoint "$dir/suder/$(ls "$dir/suder" | grep '^step-' | tail -1)" \
    --prompt "a photo of two red circles" --n 6 --out "$work/gen2"; then
    if diff -r "$work/gen1" "$work/gen2" >"$work/out" 2>&1; then pass "generate: 2 ranks write the same 7 files as 1 rank (step-* directory)"
    else fail "generate: 2 ranks differ from 1 rank"; fi
fi
if [ -n "$(cmp -s "$work/gen1/0000.png" "$work/gen1/0001.png" || echo differ)" ]; then pass "generate: samples differ from each other"
else fail "generate: samples 0 and 1 are identical"; fi

# 2. generate --metadata: GenEval's layout, byte-identical to the eval stage's samples for both
# models (1 and 2 ranks), and `suder eval geneval` scores it as the eval stage did.
for model in base:pretrain:1 suder:suder:2; do
    IFS=: read -r name stage np <<<"$model"
    out=$work/meta-$name
    if run "generate --metadata ($name, $np rank(s))" zero 120 "$mpi" "$np" generate --checkpoint "$dir/$stage" --metadata "$metadata" --out "$out"; then
        if diff -r "$out" "$dir/eval/$name" >"$work/out" 2>&1; then
            pass "generate --metadata ($name, $np rank(s)): $(find "$out" -name '*.png' | wc -l) PNGs and metadata identical to the eval stage's"
        else fail "generate --metadata ($name): differs from $dir/eval/$name"; fi
        if run "eval geneval of generate's folder ($name)" zero 60 "$suder" eval geneval --metadata "$metadata" --images "$out" \
            --summary "$work/score-$name.json"; then
            if python3 - "$work/score-$name.json" "$dir/eval/summary.json" "$name" >"$work/out" 2>&1 <<'EOF'
import json, sys
scored, summary = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["models"][sys.argv[3]]["geneval"]
assert scored["images"] == summary["images"], (scored["images"], summary["images"])
assert scored["overall"] == summary["overall"], (scored["overall"], summary["overall"])
for tag, category in summary["categories"].items():
    assert scored["categories"][tag]["correct"] == category["correct"], tag
print("equal:", scored["overall"], scored["images"])
EOF
            then pass "eval geneval of generate's folder ($name): $(tail -1 "$work/out") as the eval stage"
            else fail "eval geneval of generate's folder ($name) differs from the eval stage's GenEval-mini"; fi
        fi
    fi
done

# 3. generate's errors: an unknown word (named once, the vocabulary listed), a non-empty --out
# (left as it was), a missing checkpoint, both --prompt and --metadata.
if run "generate: unknown word" nonzero 30 "$mpi" 2 generate --checkpoint "$dir/suder" --prompt "a photo of a purple dragon" --out "$work/dragon"; then
    if [ "$(grep -c "the word 'dragon' is not in the model's vocabulary" "$work/out")" -eq 1 ] && grep -q "its words are: .*circle" "$work/out" \
        && [ ! -e "$work/dragon" ] && no_leftovers; then
        pass "generate: unknown word named once with the vocabulary, exit non-zero in ${elapsed}s, nothing written"
    else fail "generate: unknown word message"; fi
fi
before=$(cd "$work/gen1" && md5sum ./* | md5sum)
if run "generate: non-empty --out" nonzero 30 "$suder" generate --checkpoint "$dir/suder" --prompt "a photo of a circle" --out "$work/gen1"; then
    if grep -q "already holds 7 entries" "$work/out" && [ "$(cd "$work/gen1" && md5sum ./* | md5sum)" = "$before" ]; then
        pass "generate: a non-empty --out is refused and left unchanged"
    else fail "generate: non-empty --out"; fi
fi
if run "generate: missing checkpoint" nonzero 30 "$suder" generate --checkpoint "$work/nothing" --prompt "a photo of a circle" --out "$work/x"; then
    if grep -q "nothing is not a directory" "$work/out"; then pass "generate: a missing checkpoint is named"; else fail "generate: missing checkpoint message"; fi
fi
mkdir -p "$work/lonely/suder" && cp -a "$dir/suder/$(ls "$dir/suder" | grep '^step-' | tail -1)" "$work/lonely/suder/" && cp "$dir/config.yaml" "$work/lonely/"
if run "generate: no data beside the checkpoint" nonzero 30 "$suder" generate --checkpoint "$work/lonely/suder" --prompt "a photo of a circle" --out "$work/x"; then
    if grep -q "vocabulary and codebook" "$work/out" && grep -q -- "--data DIR" "$work/out"; then pass "generate: missing data says to give --data"
    else fail "generate: missing data message"; fi
fi
if run "generate --data" zero 60 "$suder" generate --checkpoint "$work/lonely/suder" --data "$dir/data" --prompt "a photo of two red circles" \
    --n 6 --out "$work/gen3"; then
    if diff -r "$work/gen1" "$work/gen3" >"$work/out" 2>&1; then pass "generate --data: the same images from a copied checkpoint"
    else fail "generate --data: images differ"; fi
fi
if run "generate: --prompt and --metadata" nonzero 10 "$suder" generate --checkpoint "$dir/suder" --prompt "a circle" --metadata "$metadata" --out "$work/x"; then
    if grep -q "exactly one of --prompt and --metadata" "$work/out"; then pass "generate: --prompt with --metadata refused"; else fail "generate: option clash message"; fi
fi

# 4. caption: ground-truth images of eval prompts; captions with their self-reward, and a probe.
images=("$dir"/data/eval/dev/groundtruth/0000[0-2]/samples/0000.png)
if run "caption" zero 60 "$suder" caption --checkpoint "$dir/suder" --n 2 --temperature 1 --ask "is there a red circle ?" "${images[@]}"; then
    if [ "$(grep -c '  caption: ".*"    self-reward -[0-9.]*' "$work/out")" -eq 6 ] \
        && [ "$(grep -cE '  ask "is there a red circle \?": (yes|no) \(yes 0\.[0-9]+, no 0\.[0-9]+' "$work/out")" -eq 3 ]; then
        pass "caption: 2 captions with a negative self-reward and a yes/no answer for each of 3 images"
    else fail "caption output"; fi
fi
if run "caption on 2 ranks" zero 60 "$mpi" 2 caption --checkpoint "$dir/suder" --n 2 --temperature 1 --ask "is there a red circle ?" "${images[@]}"; then
    cp "$work/out" "$work/caption2"
    run "caption again" zero 60 "$suder" caption --checkpoint "$dir/suder" --n 2 --temperature 1 --ask "is there a red circle ?" "${images[@]}"
    if diff <(grep '^  ' "$work/caption2") <(grep '^  ' "$work/out") >/dev/null; then pass "caption: the same output once on 2 ranks"
    else fail "caption: 2 ranks differ from 1"; fi
fi
mkfifo "$work/pipe.png"
mkdir "$work/folder.png"
for case in "grid.png:$work/gen1/grid.png:is 1648x288 pixels" "metadata:$metadata:not a readable PNG" "directory:$work/folder.png:is a directory" \
    "FIFO:$work/pipe.png:not a regular file"; do
    IFS=: read -r what file problem <<<"$case"
    if run "caption: $what" nonzero 20 "$mpi" 2 caption --checkpoint "$dir/suder" "${images[0]}" "$file"; then
        if [ "$(grep -c "$file" "$work/out")" -eq 1 ] && grep -q "$problem" "$work/out" && grep -q "expected a 32x32 PNG image" "$work/out" && no_leftovers; then
            pass "caption: $what refused in ${elapsed}s, naming the file and the expected image"
        else fail "caption: $what message"; fi
    fi
done

# 5. The HTML report, one run and two overlaid; the Markdown report still written.
cp -a "$dir" "$work/run2"
if run "report --html" zero 60 "$suder" report --run-dir "$dir" --run-dir "$work/run2" --html "$work/report.html" --out "$work/report.md"; then
    if grep -q '^## Evaluation' "$work/report.md" && grep -q '>run: loss/generation<' "$work/report.html" && grep -q '>run2: loss/generation<' "$work/report.html"; then
        pass "report --html: $(wc -c <"$work/report.html") bytes, both runs in the legends, Markdown written too"
    else fail "report --html: legends or Markdown missing"; fi
    # Self-contained: no script, stylesheet link, import or remote URL (the SVG namespace is a name, not a fetch).
    if grep -Eio '<script|<link|@import|url\(|(src|href)="(https?:)?//' "$work/report.html" >"$work/out"; then fail "report --html fetches or runs something"
    else pass "report --html: no script, link or remote reference"; fi
fi

# 6. In a real browser. A copy of the page gets a checking script at its end (the report itself has
# none); Chromium logs every console message as "CONSOLE", which must stay silent.
browser=$(command -v chromium || command -v chromium-browser)
if [ -z "$browser" ]; then
    fail "chromium not installed (scripts/install-deps installs it)"
    finish
fi
chrome() { timeout -k 5 60 "$browser" --headless=new --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --enable-logging=stderr --v=0 \
    --user-data-dir="$work/profile" "$@"; }
check='<script>window.addEventListener("load", function () {
  var charts = document.querySelectorAll("svg.chart"), empty = 0;
  charts.forEach(function (c) { var n = 0; c.querySelectorAll(".series").forEach(function (g) { n += +g.getAttribute("data-points"); }); if (n === 0) empty++; });
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) if (!images[i].complete || images[i].naturalWidth === 0) broken++;
  var out = document.createElement("pre"); out.id = "check";
  out.textContent = "CHECK charts=" + charts.length + " empty=" + empty + " images=" + images.length + " broken=" + broken + " END";
  document.body.appendChild(out);
});</script>'
# browse PAGE: the checked copy's verdict line in $work/verdict, Chromium's console lines in $work/console.
browse() {
    python3 -c 'import sys; page = open(sys.argv[1]).read(); open(sys.argv[2], "w").write(page.replace("</body>", sys.argv[3] + "</body>"))' \
        "$1" "$work/checked.html" "$check"
    chrome --virtual-time-budget=5000 --dump-dom "file://$work/checked.html" >"$work/dom.html" 2>"$work/chrome.log"
    grep -o 'CHECK charts=[0-9]* empty=[0-9]* images=[0-9]* broken=[0-9]* END' "$work/dom.html" >"$work/verdict"
    grep 'CONSOLE' "$work/chrome.log" >"$work/console"
}
browse "$work/report.html"
verdict=$(cat "$work/verdict")
cp "$work/chrome.log" "$work/out"
if [[ $verdict =~ charts=([0-9]+)\ empty=0\ images=([0-9]+)\ broken=0 ]] && [ "${BASH_REMATCH[1]}" -ge 20 ] && [ "${BASH_REMATCH[2]}" -ge 40 ]; then
    pass "browser: ${BASH_REMATCH[1]} SVG charts all with data, ${BASH_REMATCH[2]} images all decoded"
else fail "browser: '$verdict' (expected >= 20 charts, none empty, >= 40 images, none broken)"; fi
if [ ! -s "$work/console" ] && [ -s "$work/verdict" ]; then pass "browser: page loaded with no console message"
else cp "$work/console" "$work/out"; fail "browser: console messages"; fi
# The checks can fail: a broken image and a console error in a control page are caught.
printf '<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA"><script>console.error("control")</script></body></html>' >"$work/control.html"
browse "$work/control.html"
if grep -q 'images=1 broken=1' "$work/verdict" && grep -q '"control"' "$work/console"; then pass "browser: a broken image and a console error are detected in a control page"
else cp "$work/chrome.log" "$work/out"; fail "browser: control page not flagged ('$(cat "$work/verdict")')"; fi

# The screenshot is not blank: many colours and a good share of non-white pixels.
chrome --window-size=1280,2400 --screenshot="$work/screenshot.png" "file://$work/report.html" >"$work/out" 2>&1
if python3 - "$work/screenshot.png" >"$work/out" 2>&1 <<'EOF'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, b""
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, colour = struct.unpack(">IIBB", body[:10])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
channels = {2: 3, 6: 4}[colour]
assert depth == 8
raw, stride = zlib.decompress(idat), width * channels
rows, previous = [], bytearray(stride)
for y in range(height):
    kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - channels] if i >= channels else 0
        b, c = previous[i], previous[i - channels] if i >= channels else 0
        if kind == 1: line[i] = (line[i] + a) & 255
        elif kind == 2: line[i] = (line[i] + b) & 255
        elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(line)
    previous = line
pixels = [bytes(row[x * channels:x * channels + 3]) for row in rows[::4] for x in range(0, width, 4)]
colours, ink = len(set(pixels)), sum(p != b"\xff\xff\xff" for p in pixels) / len(pixels)
print(f"{width}x{height}, {colours} colours, {ink:.1%} non-white")
assert colours >= 20 and ink >= 0.01, "blank screenshot"
EOF
then pass "browser: screenshot $(tail -1 "$work/out")"
else fail "browser: screenshot blank or unreadable"; fi

finish
