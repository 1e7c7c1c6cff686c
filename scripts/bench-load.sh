#!/usr/bin/env bash
# Load benchmark of the request path (issue 3), loopback only, bounded in time.
#
# In ONE run, against the same upstream (tests/src/bin/bench_upstream.rs, fixed 201-byte JSON):
#   direct        wrk -> upstream
#   bare proxy    wrk -> tests/src/bin/bare_proxy.rs -> upstream (the baseline)
#   portcullis N  wrk -> portcullis serve, route with N plugins (0, 1, 3 fresh; 3 reuse; 3 built
#                 the default way, fresh) -> upstream
#   portcullis 0, authenticated   the 0-plugin route requiring a bearer token (RS256, verified
#                 against tests/src/bin/dev_idp.rs on loopback; one token reused, as an agent does)
#   portcullis 0, audited   the 0-plugin route with the signed audit log ([audit], durability
#                 "batched", fsync every 100 ms): its CPU per request minus the 0-plugin route's,
#                 within each round, is what the audit log costs a request (issue 6)
#   fixed rate    the audited and the plain 0-plugin routes, and a second plain one, loaded AT
#                 ONCE at the same fixed rate (hey, RATE req/s each), ROUNDS times: the three
#                 share whatever else the host is doing, so audited minus plain within a round
#                 is the audit's CPU per request at equal load, and plain minus plain is what
#                 the method itself reads when there is no difference (run with the audited
#                 route, i.e. the full run and --only-audit)
# each at CONNECTIONS connections (throughput) and at 1 connection (latency), in ROUNDS
# interleaved rounds (the order rotates every round), and prints a markdown table of the
# medians: req/s, req/s ratio to the bare proxy, the serving process's CPU per request at
# CONNECTIONS (the upstream's for direct; from /proc/PID/stat, so it holds up better than req/s
# when wrk and the other processes compete for the cores), p50 at 1 connection, p50 added over
# direct.
# Ratios and added latencies are taken within a round, then the median of rounds is reported.
#
#   scripts/bench-load.sh                   everything (builds what it needs)
#   scripts/bench-load.sh --only-baseline   direct and bare proxy only (no gateway, no plugins)
#   scripts/bench-load.sh --only-audit      the 0-plugin route with and without the audit log
#
# Environment: DURATION (10s per wrk run), WARMUP (2s per target, discarded), ROUNDS (3),
# CONNECTIONS (64), THREADS (2, wrk threads for the CONNECTIONS runs), RATE (3000 req/s per
# route in the fixed-rate runs, from 32 hey workers; 0 skips them), BASE_PORT (18400: the
# gateways listen on BASE_PORT..+4 and +6..+8, the identity provider on BASE_PORT+5),
# SKIP_BUILD=1 (use what is already built),
# CARGO_TARGET_DIR (where the binaries are; default target/), PLUGIN_DIR (the built plugins;
# default target/plugins, where scripts/build-plugins.sh puts them).
#
# It fails, and reports nothing, if any target answers a non-2xx status, if wrk sees a socket
# error or a timeout, or if a response did not come from the upstream. wrk and hey are
# installed with apt when missing. Every process it starts is stopped on exit; logs are kept
# on failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

only_baseline=0
only_audit=0
for arg in "$@"; do
    case "$arg" in
        --only-baseline) only_baseline=1 ;;
        --only-audit) only_audit=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench-load: unknown argument $arg (see --help)" >&2
            exit 2
            ;;
    esac
done

[[ $only_baseline -eq 1 && $only_audit -eq 1 ]] && {
    echo "bench-load: --only-baseline and --only-audit exclude each other" >&2
    exit 2
}

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
RATE="${RATE:-3000}"
[[ "$RATE" =~ ^[0-9]+$ ]] || {
    echo "bench-load: RATE must be a whole number of requests per second" >&2
    exit 2
}
[[ $only_baseline -eq 1 ]] && RATE=0 # the fixed-rate runs need the audited route
BASE_PORT="${BASE_PORT:-18400}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
plugin_dir="${PLUGIN_DIR:-$root/target/plugins}" # where scripts/build-plugins.sh puts them

# The three plugins of the 3-plugin route: the chain of host/benches/engine.rs
# `chain_of_3_fresh`. Each allows `GET /`: allow-all always; plugin-template blocks only DELETE
# under /admin/**; misbehave does nothing without an `x-misbehave` header or a `mode` config.
chain_plugins=(allow-all plugin-template misbehave)
# The same length with plugins built the default way (`chain_of_3_core_fresh`): misbehave is a
# wasm32-wasip2 build (it probes the WASI sandbox), whose adapter grows memory in every fresh
# instance; deny-operations denies only the operation named in its config.
core_chain_plugins=(allow-all plugin-template deny-operations)

log() { echo "bench-load: $*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

work="$(mktemp -d -t bench-load.XXXXXX)"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $status -eq 0 ]]; then
        rm -rf "$work"
    else
        rm -rf "${work:?}/bin"
        log "logs kept in $work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -------------------------------------------------------------------------------
command -v curl >/dev/null || die "curl is needed"
if ! command -v wrk >/dev/null; then
    command -v apt-get >/dev/null || die "wrk is missing and there is no apt-get to install it"
    log "installing wrk (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
if [[ $RATE -gt 0 ]] && ! command -v hey >/dev/null; then
    command -v apt-get >/dev/null || die "hey is missing and there is no apt-get to install it"
    log "installing hey (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hey >/dev/null
fi

# --- build -------------------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    if [[ $only_baseline -eq 1 ]]; then
        cargo build --release -p portcullis-tests --bins
    elif [[ $only_audit -eq 1 ]]; then
        cargo build --release -p portcullis -p portcullis-tests # no plugins on these routes
    else
        cargo build --release -p portcullis -p portcullis-tests
        marker="$work/plugins-built"
        touch "$marker"
        if ! scripts/build-plugins.sh; then
            # build-plugins.sh copies the Rust guests before it builds the Python ones; accept
            # a later failure (e.g. no componentize-py) only if ours were copied just now.
            for p in "${chain_plugins[@]}" "${core_chain_plugins[@]}"; do
                [[ "$plugin_dir/$p.wasm" -nt "$marker" ]] \
                    || die "scripts/build-plugins.sh failed and $p.wasm was not rebuilt"
            done
            log "scripts/build-plugins.sh failed after building the plugins used here; going on"
        fi
    fi
fi

# Copies, so a concurrent build in a shared target directory cannot swap a binary mid-run.
mkdir -p "$work/bin"
bins=(bench_upstream bare_proxy)
[[ $only_baseline -eq 1 ]] || bins+=(portcullis dev_idp)
for b in "${bins[@]}"; do
    [[ -x "$target_dir/release/$b" ]] || die "$target_dir/release/$b is missing (build it, or unset SKIP_BUILD)"
    cp "$target_dir/release/$b" "$work/bin/$b"
done
if [[ $only_baseline -eq 0 ]]; then
    if [[ $only_audit -eq 0 ]]; then
        for p in "${chain_plugins[@]}" "${core_chain_plugins[@]}"; do
            [[ -f "$plugin_dir/$p.wasm" ]] || die "$plugin_dir/$p.wasm is missing: run scripts/build-plugins.sh"
        done
    fi
    "$work/bin/portcullis" serve --help >/dev/null 2>&1 \
        || die "this portcullis has no \`serve\` subcommand yet: use --only-baseline"
fi

# --- start the targets -------------------------------------------------------------------
# The audited gateway's signing key (and its log, under $work/audit).
if [[ $only_baseline -eq 0 ]]; then
    "$work/bin/portcullis" keygen --name bench.portcullis/audit --out "$work/audit" >/dev/null \
        || die "portcullis keygen failed"
fi

# start NAME CMD...: run CMD in the background, logs in $work/NAME.{out,err}; sets $pid.
start() {
    local name=$1
    shift
    # Created here: the background job may not have opened them when the caller first looks.
    : >"$work/$name.out"
    : >"$work/$name.err"
    "$@" >>"$work/$name.out" 2>>"$work/$name.err" &
    pid=$!
    pids+=("$pid")
}

# start_announcing NAME CMD...: for our bins, which print their address when ready; sets $addr.
start_announcing() {
    local name=$1
    start "$@"
    addr=""
    for _ in $(seq 100); do
        addr="$(head -n1 "$work/$name.out" || true)"
        [[ -n "$addr" ]] && return 0
        kill -0 "$pid" 2>/dev/null || die "$name exited: $(tail -n5 "$work/$name.err")"
        sleep 0.1
    done
    die "$name did not announce its address in 10 s"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Extra request header per target (the authenticated one sends its token).
declare -A header

# check NAME URL: one request must come back 200 with the upstream's body.
check() {
    local body
    body="$(curl -fsS --max-time 5 -H "${header[$1]:-x-bench: 1}" "$2/")" || die "$1 ($2) does not answer 200"
    [[ "$body" == *'"service":"bench-upstream"'* ]] || die "$1 ($2) answered a body that is not the upstream's: $body"
}

names=()
declare -A url
declare -A proc # the process serving each target, whose CPU is counted

start_announcing upstream "$work/bin/bench_upstream" 0
upstream_url="http://$addr"
if [[ $only_audit -eq 0 ]]; then
    names+=(direct)
    url[direct]="$upstream_url"
    proc[direct]=$pid

    start_announcing bare "$work/bin/bare_proxy" 0 "$upstream_url"
    names+=(bare)
    url[bare]="http://$addr"
    proc[bare]=$pid
fi

if [[ $only_baseline -eq 0 ]]; then
    # gateway_config PORT PLUGIN...: a Portcullis configuration with one route through PLUGIN...
    gateway_config() {
        local port=$1 instance=$2
        shift 2
        local list="" p
        for p in "$@"; do list+="${list:+, }\"$p\""; done
        printf 'plugin_dir = "%s"\n\n[server]\nlisten = "127.0.0.1:%s"\nplaintext = true\n' \
            "$plugin_dir" "$port"
        for p in "$@"; do
            printf '\n[[plugin]]\nname = "%s"\nfile = "%s.wasm"\ninstance = "%s"\n' "$p" "$p" "$instance"
            if [[ "$p" == plugin-template ]]; then
                printf '[plugin.config]\nblocked_methods = ["DELETE"]\npaths = ["/admin/**"]\n'
            fi
            if [[ "$p" == deny-operations ]]; then
                printf '[plugin.config]\noperations = ["DELETE /admin"]\n'
            fi
        done
        printf '\n[[route]]\nname = "bench"\nauthentication = "none"\nupstream = "%s"\nplugins = [%s]\n' "$upstream_url" "$list"
    }
    i=0
    # 0, 1 and 3 plugins in fresh mode; 3r: the same 3 in reuse mode (the engine's best case,
    # for scale: reuse keeps memory between calls, so it is not the default); 3c: 3 plugins
    # built the default way, fresh; 0l: 0 plugins with the audit log; 0b: a second plain
    # 0-plugin gateway, for the fixed-rate runs only. Ports BASE_PORT+0..3, then +6, +7 and +8
    # (4 and 5 are taken below).
    gateways=(0 1 3 3r 3c 0l)
    [[ $only_audit -eq 1 ]] && gateways=(0 0l)
    [[ $RATE -gt 0 ]] && gateways+=(0b)
    for n in "${gateways[@]}"; do
        port=$((BASE_PORT + i))
        [[ $n == 3c ]] && port=$((BASE_PORT + 6))
        [[ $n == 0l ]] && port=$((BASE_PORT + 7))
        [[ $n == 0b ]] && port=$((BASE_PORT + 8))
        i=$((i + 1))
        port_in_use "$port" && die "port $port is in use: set BASE_PORT"
        instance=fresh
        [[ $n == 3r ]] && instance=reuse
        plugins=("${chain_plugins[@]:0:${n%[rclb]}}")
        [[ $n == 3c ]] && plugins=("${core_chain_plugins[@]}")
        {
            gateway_config "$port" "$instance" "${plugins[@]}"
            if [[ $n == 0l ]]; then
                printf '\n[audit]\ndir = "%s"\norigin = "bench.portcullis/audit"\n' "$work/audit"
                printf 'signing_key_file = "%s"\ndurability = "batched"\nfsync_interval = "100ms"\n' \
                    "$work/audit.key"
            fi
        } >"$work/portcullis-$n.toml"
        start "portcullis-$n" "$work/bin/portcullis" serve --config "$work/portcullis-$n.toml"
        # Ready when it answers (plugins compile at start: allow a while).
        for _ in $(seq 600); do
            curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
            kill -0 "$pid" 2>/dev/null \
                || die "portcullis with $n plugins exited: $(tail -n5 "$work/portcullis-$n.err")"
            sleep 0.1
        done
        [[ $n != 0b ]] && names+=("pc$n")
        url[pc$n]="http://127.0.0.1:$port"
        proc[pc$n]=$pid
    done
    [[ $RATE -gt 0 ]] && check pc0b "${url[pc0b]}"

fi
if [[ $only_baseline -eq 0 && $only_audit -eq 0 ]]; then
    # The 0-plugin route again, requiring a verified token from a local identity provider.
    idp_port=$((BASE_PORT + 5))
    port=$((BASE_PORT + 4))
    port_in_use "$idp_port" && die "port $idp_port is in use: set BASE_PORT"
    port_in_use "$port" && die "port $port is in use: set BASE_PORT"
    start dev_idp "$work/bin/dev_idp" "$idp_port" "$work/idp"
    for _ in $(seq 100); do
        [[ -s "$work/idp/agent.jwt" ]] && break
        sleep 0.1
    done
    [[ -s "$work/idp/agent.jwt" ]] || die "dev_idp wrote no token: $(tail -n5 "$work/dev_idp.err")"
    {
        gateway_config "$port" fresh | sed '/^authentication = "none"$/d'
        printf '[[route.access]]\nname = "agents"\nroles = ["agent"]\n'
        printf '\n[[identity_provider]]\nname = "dev"\nissuer = "http://localhost:%s"\n' "$idp_port"
        printf 'audiences = ["api://portcullis-example"]\n'
    } >"$work/portcullis-0a.toml"
    start "portcullis-0a" "$work/bin/portcullis" serve --config "$work/portcullis-0a.toml"
    proc[pc0a]=$pid
    header[pc0a]="Authorization: Bearer $(cat "$work/idp/agent.jwt")"
    for _ in $(seq 600); do
        curl -fsS --max-time 1 -o /dev/null -H "${header[pc0a]}" "http://127.0.0.1:$port/" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null \
            || die "portcullis with authentication exited: $(tail -n5 "$work/portcullis-0a.err")"
        sleep 0.1
    done
    names+=(pc0a)
    url[pc0a]="http://127.0.0.1:$port"
fi

for name in "${names[@]}"; do
    check "$name" "${url[$name]}"
done

# --- measure -----------------------------------------------------------------------------
# wrk's Lua hook prints the summary in a fixed shape (µs); it defines no per-request hook,
# so wrk keeps its fast path.
cat >"$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d rps=%.1f p50=%.1f p99=%.1f connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
LUA

results="$work/results.tsv" # round target load rps p50 p99 cpu-µs-per-request
: >"$results"

# cpu_ticks PID: user + system CPU of a process so far, in clock ticks (fields 14 and 15 of
# /proc/PID/stat, counted after the parenthesised command name).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
clock_ticks="$(getconf CLK_TCK)"

# measure ROUND NAME LOAD: one wrk run; LOAD is "many" (CONNECTIONS) or "one" (1 connection).
measure() {
    local round=$1 name=$2 load=$3 duration=${4:-$DURATION} out line
    local h="${header[$name]:-x-bench: 1}"
    local ticks_before ticks_after
    ticks_before="$(cpu_ticks "${proc[$name]}")"
    if [[ $load == many ]]; then
        out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --timeout 2s -H "$h" \
            -s "$work/report.lua" "${url[$name]}/" 2>&1)" || die "wrk against $name failed: $out"
    else
        out="$(wrk -t1 -c1 -d"$duration" --latency --timeout 2s -H "$h" \
            -s "$work/report.lua" "${url[$name]}/" 2>&1)" || die "wrk against $name failed: $out"
    fi
    ticks_after="$(cpu_ticks "${proc[$name]}")"
    line="$(grep '^RESULT ' <<<"$out")" || die "no result from wrk against $name: $out"
    # Any non-2xx/3xx answer, socket error or timeout voids the run.
    if ! grep -q ' connect=0 read=0 write=0 status=0 timeout=0$' <<<"$line" \
        || grep -q ' requests=0 ' <<<"$line"; then
        die "$name ($load) had errors: $line"$'\n'"$out"
    fi
    [[ $round == warmup ]] && return 0
    awk -v r="$round" -v n="$name" -v l="$load" -v ticks=$((ticks_after - ticks_before)) \
        -v hz="$clock_ticks" '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        print r, n, l, v["rps"], v["p50"], v["p99"], ticks / hz * 1e6 / v["requests"]
    }' <<<"$line" >>"$results"
    log "round $round  $(printf '%-6s %-4s' "$name" "$load")  ${line#RESULT }"
}

load_before="$(cut -d' ' -f1 /proc/loadavg)"
runs=$((${#names[@]} * 2 * ROUNDS))
log "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); ${#names[@]} targets x 2 loads x $ROUNDS rounds of $DURATION (+ $WARMUP warm-up each): $runs runs"
for name in "${names[@]}"; do
    measure warmup "$name" many "$WARMUP"
done
count=${#names[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    for load in many one; do
        for ((k = 0; k < count; k++)); do
            measure "$r" "${names[$(((k + r - 1) % count))]}" "$load"
        done
    done
done

# measure_rate ROUND [DURATION]: pc0, pc0b and pc0l at RATE req/s each, all three at once (32
# hey workers each, at RATE/32 req/s per worker).
rate_results="$work/rate.tsv" # round target cpu-µs-per-request req/s
: >"$rate_results"
rate_targets=(pc0 pc0b pc0l)
per_worker="$(awk -v r="$RATE" 'BEGIN { print r / 32 }')" # req/s of each of the 32 hey workers
measure_rate() {
    local round=$1 duration=${2:-$DURATION} name hey_pid ticks served
    local -A ticks_before
    local hey_pids=()
    for name in "${rate_targets[@]}"; do
        ticks_before[$name]="$(cpu_ticks "${proc[$name]}")"
    done
    for name in "${rate_targets[@]}"; do
        hey -z "$duration" -c 32 -q "$per_worker" -t 2 \
            "${url[$name]}/" >"$work/hey-$name.out" 2>&1 &
        hey_pids+=($!)
    done
    for hey_pid in "${hey_pids[@]}"; do
        wait "$hey_pid" || die "hey failed: $(tail -n5 "$work"/hey-*.out)"
    done
    for name in "${rate_targets[@]}"; do
        ticks=$(($(cpu_ticks "${proc[$name]}") - ticks_before[$name]))
        # Every answer must be a 200, with no socket error or timeout.
        if grep -q 'Error distribution' "$work/hey-$name.out" \
            || grep -E '^[[:space:]]*\[[0-9]+\]' "$work/hey-$name.out" | grep -vq '\[200\]'; then
            die "$name (fixed rate) had errors: $(cat "$work/hey-$name.out")"
        fi
        served="$(awk '/\[200\]/ { print $2 }' "$work/hey-$name.out")"
        [[ -n "$served" && "$served" -gt 0 ]] || die "$name (fixed rate) served nothing"
        [[ $round == warmup ]] && continue
        awk -v r="$round" -v n="$name" -v ticks="$ticks" -v hz="$clock_ticks" -v served="$served" \
            '/Requests\/sec:/ { print r, n, ticks / hz * 1e6 / served, $2 }' "$work/hey-$name.out" \
            >>"$rate_results"
    done
    [[ $round == warmup ]] \
        || log "round $round  fixed rate  $(awk -v r="$round" '$1 == r { printf "%s %.1f µs/req at %.0f req/s  ", $2, $3, $4 }' "$rate_results")"
}

if [[ $RATE -gt 0 ]]; then
    log "fixed rate: pc0, pc0b and pc0l at once, $RATE req/s each, $ROUNDS rounds of $DURATION (+ $WARMUP warm-up)"
    measure_rate warmup "$WARMUP"
    for ((r = 1; r <= ROUNDS; r++)); do
        measure_rate "$r"
    done
fi

# --- report ------------------------------------------------------------------------------
printf '%s, kernel %s, %s cores, 1-min load average %s before and %s after; %s\n\n' \
    "$(date -u +%Y-%m-%d)" "$(uname -r)" "$(nproc)" "$load_before" \
    "$(cut -d' ' -f1 /proc/loadavg)" "$(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2)"
# The report's awk helpers: the median of a space-separated list, and its range.
awk_lib='
function median(list,    a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function range(list,    a, n, i, lo, hi) {
    n = split(list, a, " "); lo = a[1]; hi = a[1]
    for (i = 2; i <= n; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
    return sprintf("%.1f to %.1f", lo, hi)
}
'
awk -v rounds="$ROUNDS" -v conns="$CONNECTIONS" -v only=$((only_baseline + only_audit)) -v dur="$DURATION" "$awk_lib"'
{ if ($3 == "many") { rps[$1, $2] = $4; cpu[$1, $2] = $7 } else p50[$1, $2] = $5 }
END {
    split("direct bare pc0 pc0l pc0a pc1 pc3 pc3c pc3r", order, " ")
    label["direct"] = "direct to upstream"; label["bare"] = "bare hyper proxy (baseline)"
    label["pc0"] = "Portcullis, 0 plugins"; label["pc1"] = "Portcullis, 1 plugin"
    label["pc3"] = "Portcullis, 3 plugins"; label["pc3r"] = "Portcullis, 3 plugins, reuse"
    label["pc0a"] = "Portcullis, 0 plugins, token verified"
    label["pc0l"] = "Portcullis, 0 plugins, audited"
    label["pc3c"] = "Portcullis, 3 plugins built the default way"
    printf "| target | req/s @%d | ratio vs bare proxy | CPU per request @%d | p50 @1 | added p50 vs direct |\n", conns, conns
    print "|---|---|---|---|---|---|"
    bare = (1, "bare") in rps; direct = (1, "direct") in rps
    for (k = 1; k <= 9; k++) {
        n = order[k]
        if (!((1, n) in rps)) continue
        r = ""; ra = ""; p = ""; pa = ""; c = ""
        for (i = 1; i <= rounds; i++) {
            r = r " " rps[i, n]; c = c " " cpu[i, n]; p = p " " p50[i, n]
            if (bare) ra = ra " " rps[i, n] / rps[i, "bare"]
            if (direct) pa = pa " " p50[i, n] - p50[i, "direct"]
        }
        ratio[n] = median(ra); added[n] = median(pa)
        printf "| %s | %.0f | %s | %.1f µs | %.0f µs | %s |\n", label[n], median(r),
            (bare ? sprintf("%.2f×", ratio[n]) : "—"), median(c), median(p),
            (n == "direct" || !direct ? "—" : sprintf("%+.0f µs", added[n]))
    }
    printf "\nMedians of %d interleaved rounds of %s per run; ratio and added p50 are taken within each round.\n", rounds, dur
    printf "CPU per request: user + system time of the process serving the target (the upstream for\n"
    printf "direct, the proxy otherwise) during its runs at %d connections, over the requests completed.\n", conns
    if (!only) {
        printf "Goal, 3 plugins >= 0.90x the bare proxy req/s @%d: %.2fx, %s\n", conns, ratio["pc3"],
            (ratio["pc3"] >= 0.9 ? "met" : "NOT met")
        printf "Goal, 3 plugins <= 50 µs p50 added over direct @1: %+.0f µs, %s\n", added["pc3"],
            (added["pc3"] <= 50 ? "met" : "NOT met")
        printf "The same for 3 plugins built the default way: %.2fx, %+.0f µs\n", ratio["pc3c"], added["pc3c"]
    }
    if ((1, "pc0l") in rps && (1, "pc0") in rps) {
        d = ""; lo = ""; hi = ""; l = ""
        for (i = 1; i <= rounds; i++) {
            x = cpu[i, "pc0l"] - cpu[i, "pc0"]; d = d " " x; l = l " " p50[i, "pc0l"] - p50[i, "pc0"]
            if (lo == "" || x < lo) lo = x
            if (hi == "" || x > hi) hi = x
        }
        printf "Audit log (issue 6): CPU per request, audited minus plain 0-plugin route within each round:\n"
        printf "  median %.1f µs (%.1f to %.1f over %d rounds); p50 added @1: %+.0f µs. Goal <= 5 µs: %s\n",
            median(d), lo, hi, rounds, median(l), (median(d) <= 5 ? "met" : "NOT met")
    }
    print "\nPer round (req/s @" conns " / p50 µs @1):"
    for (k = 1; k <= 9; k++) {
        n = order[k]
        if (!((1, n) in rps)) continue
        line = sprintf("  %-30s", label[n])
        for (i = 1; i <= rounds; i++) line = line sprintf("  %8.0f / %6.1f", rps[i, n], p50[i, n])
        print line
    }
}' "$results"
if [[ $RATE -gt 0 ]]; then
    awk -v rounds="$ROUNDS" -v rate="$RATE" -v dur="$DURATION" "$awk_lib"'
{ cpu[$1, $2] = $3; rps[$1, $2] = $4 }
END {
    d = ""; aa = ""; p = ""; l = ""; r0 = ""; rl = ""
    for (i = 1; i <= rounds; i++) {
        d = d " " cpu[i, "pc0l"] - cpu[i, "pc0"]; aa = aa " " cpu[i, "pc0b"] - cpu[i, "pc0"]
        p = p " " cpu[i, "pc0"]; l = l " " cpu[i, "pc0l"]
        r0 = r0 " " rps[i, "pc0"]; rl = rl " " rps[i, "pc0l"]
    }
    printf "\nAt a fixed rate (%s req/s asked of each; served: plain %.0f, audited %.0f), the audited,\n", rate, median(r0), median(rl)
    printf "the plain and a second plain 0-plugin route loaded at once, %d rounds of %s:\n", rounds, dur
    printf "  CPU per request: plain %.1f µs, audited %.1f µs (medians)\n", median(p), median(l)
    printf "  audited minus plain within each round: median %.1f µs (%s). Goal <= 5 µs: %s\n", median(d), range(d), (median(d) <= 5 ? "met" : "NOT met")
    printf "  plain minus plain (the method with nothing to find): median %.1f µs (%s)\n", median(aa), range(aa)
}' "$rate_results"
fi
