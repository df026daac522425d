#!/usr/bin/env bash
# deployctl benchmarks: proxy vs direct, proxy memory, switch time, real Docker deploy/rollback,
# CLI startup. Prints a table and writes it to bench/RESULTS.md. Usage: bench/README.md.
#
# Everything runs on loopback; everything started here is stopped on exit (trap), including the
# Docker objects of the unique app this run deploys.

set -uo pipefail

ROOT=$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

# Knobs (defaults keep the whole run well under 10 minutes once the release build exists).
WRK_DURATION=${BENCH_WRK_DURATION:-10s}
WRK_WARMUP=${BENCH_WRK_WARMUP:-3s}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNECTIONS:-32}
SWITCHES=${BENCH_SWITCHES:-20}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}

RUN_START_US=0
WORK=$(mktemp -d /tmp/deployctl-bench.XXXXXX)
PIDS=()            # processes this run started, stopped by cleanup
APP_NAME=""        # the Docker app of section 4, removed by cleanup
APP_DIR=""
PROXY_IMAGES_BEFORE=""  # full ids of the proxy images that existed before section 4
PROXY_IMAGE=""          # full id of the image our proxy container runs
ROWS=()            # section|metric|value|target|verdict
NOTES=()
DETAILS=()         # extra markdown blocks for RESULTS.md
USED_PORTS=" "
APT_UPDATED=""

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Microseconds since the epoch, without a process (EPOCHREALTIME; a locale may use a comma).
now_us() {
    local t=${EPOCHREALTIME/[.,]/}
    printf '%s' "$((10#$t))"
}
# Milliseconds between two now_us readings, one decimal.
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

row() { ROWS+=("$1|$2|$3|$4|$5"); }
note() { NOTES+=("$1"); }

# met / missed for "value op limit"; n/a when there is no value.
judge() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        if (v == "" || v == "n/a") { print "n/a"; exit }
        if (op == "<") ok = (v + 0 < t + 0); else if (op == ">=") ok = (v + 0 >= t + 0); else ok = 0
        print (ok ? "met" : "missed")
    }'
}

# free_port VAR: a loopback port nobody listens on and not handed out before in this run (set in
# this shell, not a subshell, so the list of handed-out ports survives).
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    return 1
}

# Waits until GET url answers 2xx, at most $2 seconds.
wait_http() {
    local url=$1 deadline=$(($(now_us) + ${2:-10} * 1000000))
    while (($(now_us) < deadline)); do
        curl -fsS -m 1 -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

cleanup() {
    local pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    if [[ -n $APP_NAME ]]; then
        log "removing the Docker objects of $APP_NAME"
        [[ -z $PROXY_IMAGE ]] && PROXY_IMAGE=$(docker inspect --format '{{.Image}}' "deployctl-proxy-$APP_NAME-bench" 2>/dev/null)
        if [[ -n $APP_DIR && -f $APP_DIR/deploy.toml ]]; then
            dctl_app remove --yes >/dev/null 2>&1
        fi
        # Whatever `remove` left behind carries our unique app label or name.
        local ids id
        ids=$(docker ps -aq --filter "label=deployctl.app=$APP_NAME" 2>/dev/null)
        for id in $ids; do docker rm -f "$id" >/dev/null 2>&1; done
        ids=$(docker images -q --filter "label=deployctl.app=$APP_NAME" 2>/dev/null | sort -u)
        for id in $ids; do docker rmi -f "$id" >/dev/null 2>&1; done
        docker rm -f "deployctl-lock-$APP_NAME-bench" >/dev/null 2>&1
        docker network rm "deployctl-$APP_NAME-bench" >/dev/null 2>&1
        docker volume rm "deployctl-$APP_NAME-bench-state" >/dev/null 2>&1
        # The proxy image of our proxy container goes too when this run built it (it was not
        # there before); `docker rmi` without -f leaves it when something else uses it.
        if [[ -n $PROXY_IMAGE ]] && ! grep -qx "$PROXY_IMAGE" <<<"$PROXY_IMAGES_BEFORE"; then
            docker rmi "$PROXY_IMAGE" >/dev/null 2>&1
        fi
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# Starts a command in the background, remembers its pid in $BG_PID and for cleanup.
start_bg() {
    local logfile=$1
    shift
    "$@" >"$logfile" 2>&1 &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

stop_bg() {
    local pid=$1 p keep=()
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    for p in "${PIDS[@]}"; do [[ $p != "$pid" ]] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------------------------------------
# Tools and build
# ---------------------------------------------------------------------------------------------

# ensure_tool COMMAND DEBIAN_PACKAGE: installs the package when missing and we are root.
ensure_tool() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        if [[ -z $APT_UPDATED ]]; then
            log "apt-get update"
            timeout 300 apt-get update -qq >"$WORK/apt-update.log" 2>&1 || log "apt-get update failed (see above)"
            APT_UPDATED=1
        fi
        log "installing $2"
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends "$2" \
            >"$WORK/apt-$2.log" 2>&1 || log "could not install $2: $(tail -n 2 "$WORK/apt-$2.log")"
    fi
    command -v "$1" >/dev/null 2>&1
}

HAVE_CURL=0 HAVE_JQ=0 HAVE_WRK=0 HAVE_HYPERFINE=0 HAVE_DOCKER=0
ensure_tool curl curl && HAVE_CURL=1
ensure_tool jq jq && HAVE_JQ=1
ensure_tool wrk wrk && HAVE_WRK=1
ensure_tool hyperfine hyperfine && HAVE_HYPERFINE=1
command -v docker >/dev/null 2>&1 && timeout 20 docker version >/dev/null 2>&1 && HAVE_DOCKER=1

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
BIN_DIR=$TARGET_DIR/x86_64-unknown-linux-gnu/release
DCTL=$BIN_DIR/deployctl
DEMO=$BIN_DIR/examples/demo-app

log "cargo build --release (target dir $TARGET_DIR)"
build_start=$(now_us)
if ! cargo build --release >"$WORK/build.log" 2>&1 || ! cargo build --release --example demo-app >>"$WORK/build.log" 2>&1; then
    tail -n 30 "$WORK/build.log" >&2
    log "the release build failed"
    exit 1
fi
BUILD_S=$(awk -v a="$build_start" -v b="$(now_us)" 'BEGIN { printf "%.0f", (b - a) / 1e6 }')
for bin in "$DCTL" "$DEMO"; do
    [[ -x $bin ]] || {
        log "$bin not found after the build"
        exit 1
    }
done
RUN_START_US=$(now_us)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n) }'; then
    log "warning: load average $LOAD_START on $(nproc) CPUs: other work is running, figures will be noisy"
fi

# ---------------------------------------------------------------------------------------------
# Helpers for the proxy on the host
# ---------------------------------------------------------------------------------------------

# wrk output → "rps p50_ms p99_ms errors"
wrk_parse() {
    awk '
        function ms(s,   n) {
            n = s + 0
            if (s ~ /us$/) return n / 1000
            if (s ~ /ms$/) return n
            if (s ~ /m$/) return n * 60000
            if (s ~ /s$/) return n * 1000
            return n
        }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        END { printf "%s %.3f %.3f %d\n", (rps == "" ? "n/a" : rps), p50, p99, err }
    ' "$1"
}

# run_wrk LABEL URL DURATION [taskset cpu list]
run_wrk() {
    local label=$1 url=$2 dur=$3 cpus=${4:-} out="$WORK/wrk-$1.txt" cmd
    cmd=(wrk "-t$WRK_THREADS" "-c$WRK_CONNS" "-d$dur" --latency "$url")
    [[ -n $cpus ]] && cmd=(taskset -c "$cpus" "${cmd[@]}")
    log "wrk $label: ${cmd[*]}"
    if ! timeout 120 "${cmd[@]}" >"$out" 2>&1; then
        log "wrk $label failed: $(tail -n 3 "$out")"
        return 1
    fi
    return 0
}

proxy_switch() { # state_dir port version color → prints the SwitchResult JSON
    local req
    req=$(printf '{"target":{"addr":"127.0.0.1:%s","container":"bench-%s","version":"%s","color":"%s"},"health_path":"/health","health_host":null,"expect_status":[200],"drain_timeout_ms":1000}' \
        "$2" "$4" "$3" "$4")
    timeout 20 "$DCTL" proxy switch --request "$req" --state-dir "$1"
}

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
kb_to_mb() { awk -v k="$1" 'BEGIN { if (k == "") print "n/a"; else printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------------------------------------
# Sections 1-3: proxy on the host
# ---------------------------------------------------------------------------------------------

section_proxy() {
    local app_port proxy_port state app_pid proxy_pid body i
    if ! free_port app_port || ! free_port proxy_port; then
        row 1 "proxy vs direct" "skipped: no free port" "" ""
        return
    fi
    state="$WORK/proxy-state"
    mkdir -p "$state"

    start_bg "$WORK/app-a.log" env PORT="$app_port" DEPLOYCTL_VERSION=a DEPLOYCTL_COLOR=blue "$DEMO"
    app_pid=$BG_PID
    if ! wait_http "http://127.0.0.1:$app_port/health" 10; then
        row 1 "proxy vs direct" "skipped: the demo app did not come up ($(tail -n 1 "$WORK/app-a.log"))" "" ""
        return
    fi
    start_bg "$WORK/proxy.log" "$DCTL" proxy run --listen "127.0.0.1:$proxy_port" --state-dir "$state"
    proxy_pid=$BG_PID
    for i in $(seq 1 100); do
        timeout 5 "$DCTL" proxy status --state-dir "$state" >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! proxy_switch "$state" "$app_port" a blue >"$WORK/switch0.json" 2>"$WORK/switch0.err"; then
        row 1 "proxy vs direct" "skipped: proxy switch failed ($(tail -n 1 "$WORK/switch0.err"))" "" ""
        return
    fi
    body=$(curl -fsS -m 2 "http://127.0.0.1:$proxy_port/" 2>&1)
    if [[ $body != *"version=a "* ]]; then
        row 1 "proxy vs direct" "skipped: the proxy does not serve the app: $body" "" ""
        return
    fi
    sleep 1

    # Section 2, idle: after start and one switch, before any load.
    local idle_rss idle_hwm
    idle_rss=$(kb_to_mb "$(rss_kb "$proxy_pid" VmRSS)")
    idle_hwm=$(kb_to_mb "$(rss_kb "$proxy_pid" VmHWM)")

    if ((HAVE_WRK)); then
        local direct="http://127.0.0.1:$app_port/" proxied="http://127.0.0.1:$proxy_port/"
        # Unpinned: wrk, proxy and app share all cores.
        run_wrk warm-direct "$direct" "$WRK_WARMUP" && run_wrk warm-proxy "$proxied" "$WRK_WARMUP" &&
            run_wrk direct "$direct" "$WRK_DURATION" && run_wrk proxy "$proxied" "$WRK_DURATION" &&
            report_wrk "1" "" direct proxy
        local load_rss load_hwm
        load_rss=$(kb_to_mb "$(rss_kb "$proxy_pid" VmRSS)")
        load_hwm=$(kb_to_mb "$(rss_kb "$proxy_pid" VmHWM)")

        # Pinned: wrk on CPU 0, the server side (app, or proxy + app) on the other CPUs, so both
        # runs give the server side the same CPU budget and wrk never steals from it.
        local ncpu
        ncpu=$(nproc)
        if command -v taskset >/dev/null 2>&1 && ((ncpu >= 2)); then
            local server_cpus=1
            ((ncpu > 2)) && server_cpus="1-$((ncpu - 1))"
            taskset -a -p -c "$server_cpus" "$app_pid" >/dev/null &&
                taskset -a -p -c "$server_cpus" "$proxy_pid" >/dev/null &&
                run_wrk warm-direct-pinned "$direct" "$WRK_WARMUP" 0 &&
                run_wrk warm-proxy-pinned "$proxied" "$WRK_WARMUP" 0 &&
                run_wrk direct-pinned "$direct" "$WRK_DURATION" 0 &&
                run_wrk proxy-pinned "$proxied" "$WRK_DURATION" 0 &&
                report_wrk "1b" " (pinned: wrk CPU 0, server side CPU $server_cpus)" direct-pinned proxy-pinned
            taskset -a -p -c "0-$((ncpu - 1))" "$app_pid" >/dev/null 2>&1
            taskset -a -p -c "0-$((ncpu - 1))" "$proxy_pid" >/dev/null 2>&1
        else
            note "The pinned variant (1b) was skipped: taskset missing or fewer than 2 CPUs."
        fi
    else
        row 1 "proxy vs direct" "skipped: wrk is not installed and could not be installed" "" ""
    fi

    row 2 "proxy RSS idle (after start + switch)" "$idle_rss MB (HWM $idle_hwm MB)" "< 20 MB" "$(judge "$idle_rss" "<" 20)"
    if ((HAVE_WRK)); then
        row 2 "proxy RSS right after the unpinned load" "$load_rss MB (HWM $load_hwm MB)" "—" "—"
    fi

    section_switch "$state" "$app_port"
}

# report_wrk SECTION SUFFIX DIRECT_LABEL PROXY_LABEL
report_wrk() {
    local sec=$1 sfx=$2 ratio added label d_rps d_p50 d_p99 d_err p_rps p_p50 p_p99 p_err
    read -r d_rps d_p50 d_p99 d_err <<<"$(wrk_parse "$WORK/wrk-$3.txt")"
    read -r p_rps p_p50 p_p99 p_err <<<"$(wrk_parse "$WORK/wrk-$4.txt")"
    row "$sec" "direct to app$sfx: req/s, p50, p99" "$(printf '%.0f req/s, p50 %.2f ms, p99 %.2f ms, %s errors' "$d_rps" "$d_p50" "$d_p99" "$d_err")" "—" "—"
    row "$sec" "through proxy$sfx: req/s, p50, p99" "$(printf '%.0f req/s, p50 %.2f ms, p99 %.2f ms, %s errors' "$p_rps" "$p_p50" "$p_p99" "$p_err")" "—" "—"
    ratio=$(awk -v a="$p_rps" -v b="$d_rps" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "n/a" }')
    added=$(awk -v a="$p_p99" -v b="$d_p99" 'BEGIN { printf "%.2f", a - b }')
    row "$sec" "throughput proxy/direct$sfx" "$ratio" "≥ 0.8" "$(judge "$ratio" ">=" 0.8)"
    row "$sec" "added p99 latency$sfx" "$added ms" "< 1 ms" "$(judge "$added" "<" 1)"
    for label in "$3" "$4"; do
        DETAILS+=("wrk $label:"$'\n\n```\n'"$(cat "$WORK/wrk-$label.txt")"$'\n```')
    done
}

# Section 3: SWITCHES switches back and forth between the app of section 1 and a second one.
section_switch() {
    local state=$1 port_a=$2 port_b i out t0 t1 swaps=() walls=() target
    if ((!HAVE_JQ)); then
        row 3 "switch time" "skipped: jq is not installed and could not be installed" "" ""
        return
    fi
    free_port port_b || {
        row 3 "switch time" "skipped: no free port" "" ""
        return
    }
    start_bg "$WORK/app-b.log" env PORT="$port_b" DEPLOYCTL_VERSION=b DEPLOYCTL_COLOR=green "$DEMO"
    if ! wait_http "http://127.0.0.1:$port_b/health" 10; then
        row 3 "switch time" "skipped: the second demo app did not come up" "" ""
        return
    fi
    log "section 3: $SWITCHES switches"
    for i in $(seq 1 "$SWITCHES"); do
        t0=$(now_us)
        if ((i % 2)); then
            out=$(proxy_switch "$state" "$port_b" b green 2>"$WORK/switch.err")
        else
            out=$(proxy_switch "$state" "$port_a" a blue 2>"$WORK/switch.err")
        fi
        local rc=$?
        t1=$(now_us)
        if ((rc != 0)); then
            row 3 "switch time" "failed at switch $i: $(tail -n 1 "$WORK/switch.err")" "< 200 ms" "missed"
            return
        fi
        swaps+=("$(jq -r '.swap_ms' <<<"$out")")
        walls+=("$(ms_between "$t0" "$t1")")
    done
    local stats_swap stats_wall
    stats_swap=$(printf '%s\n' "${swaps[@]}" | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f %.2f", m, v[NR] }')
    stats_wall=$(printf '%s\n' "${walls[@]}" | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f %.1f", m, v[NR] }')
    read -r sw_med sw_max <<<"$stats_swap"
    read -r wa_med wa_max <<<"$stats_wall"
    row 3 "swap_ms median ($SWITCHES switches)" "$sw_med ms" "< 200 ms" "$(judge "$sw_med" "<" 200)"
    row 3 "swap_ms max" "$sw_max ms" "< 200 ms" "$(judge "$sw_max" "<" 200)"
    row 3 "\`proxy switch\` wall time median (process start → exit)" "$wa_med ms" "< 200 ms" "$(judge "$wa_med" "<" 200)"
    row 3 "\`proxy switch\` wall time max" "$wa_max ms" "< 200 ms" "$(judge "$wa_max" "<" 200)"
}

# ---------------------------------------------------------------------------------------------
# Section 4: real Docker
# ---------------------------------------------------------------------------------------------

# deployctl against the temp app of section 4.
dctl_app() {
    env -u DEPLOYCTL_ENV -u DEPLOYCTL_CONFIG NO_COLOR=1 timeout 180 \
        "$DCTL" "$@" --env bench --config "$APP_DIR/deploy.toml" </dev/null
}

# phase_ms JSON_FILE PHASE → summed elapsed of the finished phases with that name
phase_ms() {
    jq -r --arg p "$2" '[.events[]? | select(.event == "phase_finished" and .phase == $p) | .elapsed] | add // 0' "$1"
}

# deploy_split LABEL JSON WALL_MS: one row with the phase split of a deploy
deploy_split() {
    local label=$1 f=$2 wall=$3 build start health switch verify proxy overhead
    build=$(phase_ms "$f" build)
    start=$(phase_ms "$f" start)
    health=$(phase_ms "$f" health)
    switch=$(phase_ms "$f" switch)
    verify=$(phase_ms "$f" verify)
    proxy=$(phase_ms "$f" proxy)
    overhead=$(awk -v w="$wall" -v a="$build" -v b="$start" -v c="$health" -v d="$switch" -v e="$verify" \
        'BEGIN { printf "%.0f", w - a - b - c - d - e }')
    row 4 "$label wall time" "$(printf '%.0f ms' "$wall")" "—" "—"
    DETAILS+=("$label, every phase (ms): $(jq -r '[.events[]? | select(.event == "phase_finished") | "\(.phase) \(.elapsed)"] | join(", ")' "$f")")
    row 4 "$label split" "build $build ms, start→healthy $((start + health)) ms (start $start + health $health), switch $switch ms, verify $verify ms, other $overhead ms (of which proxy phase $proxy ms)" "—" "—"
}

section_docker() {
    if ((!HAVE_DOCKER)); then
        row 4 "real Docker deploy/rollback" "skipped: no Docker Engine answers \`docker version\`" "" ""
        return
    fi
    if ((!HAVE_JQ || !HAVE_CURL)); then
        row 4 "real Docker deploy/rollback" "skipped: jq and curl are needed" "" ""
        return
    fi
    local port
    free_port port || {
        row 4 "real Docker deploy/rollback" "skipped: no free port" "" ""
        return
    }
    APP_DIR="$WORK/app"
    mkdir -p "$APP_DIR/environments"
    PROXY_IMAGES_BEFORE=$(docker images -q --no-trunc --filter "label=deployctl.role=proxy" 2>/dev/null | sort -u)
    APP_NAME="dcbench-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
    # Health gating as in the repository's own deploy.toml; no verify window (it would only add
    # its own length to every deploy).
    cat >"$APP_DIR/deploy.toml" <<EOF
[app]
name = "$APP_NAME"
port = 8080

[git]
require_clean = false

[build]
context = "."

[deploy]
stop_timeout = "5s"
drain_timeout = "10s"

[health]
path = "/health"
expect_status = [200]
expect_json = { pointer = "/status", equals = "ok" }
interval = "250ms"
timeout = "2s"
healthy_threshold = 2
deadline = "30s"

[verify]
window = "0s"
EOF
    printf '[proxy]\nlisten = "127.0.0.1:%s"\n' "$port" >"$APP_DIR/environments/bench.toml"
    printf 'FROM scratch\nCOPY demo-app /demo-app\nENTRYPOINT ["/demo-app"]\n' >"$APP_DIR/Dockerfile"
    cp "$DEMO" "$APP_DIR/demo-app"
    local url="http://127.0.0.1:$port/" v t0 t1 wall
    for v in b1 b2; do
        log "section 4: deploy --version $v ($APP_NAME)"
        t0=$(now_us)
        dctl_app deploy --version "$v" --output json >"$WORK/deploy-$v.json" 2>"$WORK/deploy-$v.err"
        local rc=$?
        t1=$(now_us)
        wall=$(ms_between "$t0" "$t1")
        [[ -z $PROXY_IMAGE ]] && PROXY_IMAGE=$(docker inspect --format '{{.Image}}' "deployctl-proxy-$APP_NAME-bench" 2>/dev/null)
        if ((rc != 0)) || [[ $(curl -fsS -m 2 "$url" 2>/dev/null) != *"version=$v "* ]]; then
            row 4 "deploy $v" "failed (exit $rc): $(jq -r '.error // empty' "$WORK/deploy-$v.json" 2>/dev/null | head -n 1)$(tail -n 1 "$WORK/deploy-$v.err")" "" "missed"
            return
        fi
        deploy_split "deploy $v$([[ $v == b1 ]] && echo ' (first: creates network, volume, proxy)')" "$WORK/deploy-$v.json" "$wall"
    done

    # Rollback: a poller GETs / every 10 ms from the moment the command starts and notes when b1
    # answers.
    log "section 4: rollback"
    local seen="$WORK/b1-seen" poll_pid
    t0=$(now_us)
    (
        end=$((t0 + 30000000))
        while (($(now_us) < end)); do
            if [[ $(curl -s -m 1 "$url" 2>/dev/null) == *"version=b1 "* ]]; then
                now_us >"$seen"
                exit 0
            fi
            sleep 0.01
        done
    ) &
    poll_pid=$!
    PIDS+=("$poll_pid")
    dctl_app rollback --output json >"$WORK/rollback.json" 2>"$WORK/rollback.err"
    local rc=$?
    t1=$(now_us)
    wait "$poll_pid" 2>/dev/null
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p != "$poll_pid" ]] && keep+=("$p"); done
    PIDS=("${keep[@]}")
    if ((rc != 0)) || [[ ! -s $seen ]]; then
        row 4 "rollback" "failed (exit $rc): $(jq -r '.error // empty' "$WORK/rollback.json" 2>/dev/null | head -n 1)$(tail -n 1 "$WORK/rollback.err")" "< 1 s" "missed"
        return
    fi
    local serving cmd_wall
    serving=$(ms_between "$t0" "$(cat "$seen")")
    cmd_wall=$(ms_between "$t0" "$t1")
    row 4 "rollback: command start → b1 serving" "$serving ms" "< 1000 ms" "$(judge "$serving" "<" 1000)"
    row 4 "rollback: command wall time" "$cmd_wall ms" "< 1000 ms" "$(judge "$cmd_wall" "<" 1000)"
    local rb="$WORK/rollback.json" rb_start rb_health rb_switch
    rb_start=$(phase_ms "$rb" start)
    rb_health=$(phase_ms "$rb" health)
    rb_switch=$(phase_ms "$rb" switch)
    row 4 "rollback split" "start $rb_start ms, health $rb_health ms, switch $rb_switch ms, other $(awk -v w="$cmd_wall" -v a="$rb_start" -v b="$rb_health" -v c="$rb_switch" 'BEGIN { printf "%.0f", w - a - b - c }') ms" "—" "—"
    DETAILS+=("rollback, every phase (ms): $(jq -r '[.events[]? | select(.event == "phase_finished") | "\(.phase) \(.elapsed)"] | join(", ")' "$rb")")
}

# ---------------------------------------------------------------------------------------------
# Section 5: CLI startup
# ---------------------------------------------------------------------------------------------

section_cli() {
    if ((!HAVE_HYPERFINE || !HAVE_JQ)); then
        row 5 "CLI startup" "skipped: hyperfine and jq are needed" "" ""
        return
    fi
    local shell_opt=()
    # -N runs the command without a shell (no shell start-up to correct for), hyperfine ≥ 1.13.
    hyperfine --help 2>/dev/null | grep -q -- '--shell' && hyperfine -N --runs 1 true >/dev/null 2>&1 && shell_opt=(-N)
    local name cmd target
    for name in help dryrun; do
        if [[ $name == help ]]; then
            cmd="$DCTL --help"
            target=20
        else
            cmd="$DCTL deploy --env staging --dry-run --version bench"
            target=300
        fi
        log "hyperfine: $cmd"
        if ! (cd "$ROOT" && env -u DEPLOYCTL_ENV -u DEPLOYCTL_CONFIG NO_COLOR=1 timeout 180 \
            hyperfine "${shell_opt[@]}" --warmup 3 --style basic --export-json "$WORK/hf-$name.json" "$cmd" \
            >"$WORK/hf-$name.txt" 2>&1); then
            row 5 "\`${cmd#"$BIN_DIR"/}\`" "failed: $(tail -n 2 "$WORK/hf-$name.txt" | tr '\n' ' ')" "< $target ms" "missed"
            continue
        fi
        local mean sd
        mean=$(jq -r '.results[0].mean * 1000 | . * 100 | round / 100' "$WORK/hf-$name.json")
        sd=$(jq -r '.results[0].stddev * 1000 | . * 100 | round / 100' "$WORK/hf-$name.json")
        row 5 "\`${cmd#"$BIN_DIR"/}\` mean ± σ" "$mean ± $sd ms" "< $target ms" "$(judge "$mean" "<" "$target")"
    done
}

# ---------------------------------------------------------------------------------------------
# Run and report
# ---------------------------------------------------------------------------------------------

if ((HAVE_CURL)); then
    section_proxy
else
    row 1 "proxy sections 1-3" "skipped: curl is not installed and could not be installed" "" ""
fi
section_docker
section_cli

RUN_S=$(awk -v a="$RUN_START_US" -v b="$(now_us)" 'BEGIN { printf "%.0f", (b - a) / 1e6 }')

version_of() { "$@" 2>&1 | head -n 1; }
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
DOCKER_V=$( ((HAVE_DOCKER)) && docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo "not reachable")
# `wrk -v` exits 1 after printing its version.
WRK_V=$( ((HAVE_WRK)) && { wrk -v 2>&1 || true; } | head -n 1 | sed 's/ Copyright.*//' || echo "not installed")
HF_V=$( ((HAVE_HYPERFINE)) && hyperfine --version || echo "not installed")

note "On a 2-core machine wrk, the proxy and the app compete for the same CPUs in the unpinned runs (1): the proxied path does roughly twice the server-side work (proxy + app) on the cores wrk also needs, so the ratio there is a CPU-bound worst case. Variant 1b pins wrk to CPU 0 and the server side to the rest, so direct and proxied runs get the same server CPU budget."
note "The demo app answers GET / in microseconds, so in 1 and 1b the proxy's per-request work is compared with an app that does almost nothing: the ratio is a worst case; with an app that spends real time per request the proxy's share shrinks."
note "wrk: $WRK_THREADS threads, $WRK_CONNS connections, $WRK_DURATION per measured run after a $WRK_WARMUP warm-up of each URL; keep-alive GET / of the demo app (a ~40-byte body)."
note "Section 3 switches between two demo apps on the host through the control socket; swap_ms includes the proxy's one health probe of the new target. The wall time is the whole \`deployctl proxy switch\` process (start, connect, probe, swap, drain of an idle target, print)."
note "Section 4 uses the real Docker Engine with a FROM scratch image of the demo app, health gating as in the repository's deploy.toml (interval 250ms, 2 consecutive passes) and verify.window 0s. A rollback restarts the stopped previous container and health-gates it before the switch, so its time is bounded below by the health interval. The poller GETs / every 10 ms with curl, so 'b1 serving' is accurate to ~10-20 ms. 'other' in a deploy split = wall time − build − start − health − switch − verify (Docker connection, lock, proxy check, ledger records, stopping the old release, process start). In the first deploy, 'other' also holds building the proxy image out of the deployctl binary, which deployctl does outside any reported phase; the Details list every phase it reports."
note "A negative 'added p99' means the direct run had the longer tail (the demo app runs one thread per connection, and with 32 connections on a busy CPU its tail is set by the scheduler); it is reported as measured."
note "Load average (1, 5, 15 min) at the start of the benchmarks: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg). Above $(nproc), other work was competing for the CPUs and the figures are noisier than on an idle machine."

{
    echo "# deployctl benchmark results"
    echo
    echo "Produced by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); the benchmarks took ${RUN_S} s (plus ${BUILD_S} s for the release build)."
    echo
    echo "## Machine and versions"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| CPU | $CPU_MODEL |"
    echo "| nproc | $(nproc) |"
    echo "| memory | $MEM |"
    echo "| kernel | $(uname -r) |"
    echo "| deployctl | $(version_of "$DCTL" --version) |"
    echo "| rustc | $(version_of rustc --version) |"
    echo "| Docker Engine | $DOCKER_V |"
    echo "| wrk | $WRK_V |"
    echo "| hyperfine | $HF_V |"
    echo
    echo "## Results"
    echo
    echo "| § | measure | value | target | verdict |"
    echo "|---|---|---|---|---|"
    for r in "${ROWS[@]}"; do
        IFS='|' read -r s m v t j <<<"$r"
        echo "| $s | $m | $v | ${t:-—} | ${j:-—} |"
    done
    echo
    echo "## Notes"
    echo
    for n in "${NOTES[@]}"; do echo "- $n"; done
    if ((${#DETAILS[@]})); then
        echo
        echo "## Details"
        echo
        for d in "${DETAILS[@]}"; do
            echo "$d"
            echo
        done
    fi
} >"$WORK/RESULTS.md"

cp "$WORK/RESULTS.md" "$RESULTS"
# The console gets everything up to the details (raw wrk output, phase lists).
sed '/^## Details/,$d' "$WORK/RESULTS.md"
echo
echo "Written to ${RESULTS#"$ROOT"/}"
