#!/usr/bin/env bash
# deployctl benchmarks: its proxy against nginx and direct, memory, switch time, `deployctl deploy`
# against the hand-written bench/deploy.sh, rollback, zero downtime under fixed-rate load, CLI
# startup, and (bench/fleet.sh, sourced) SSH and a 3-host fleet on the test lab. Prints a table and
# writes it to bench/RESULTS.md. Usage: bench/README.md.
#
# Everything runs on loopback or the lab's private bridge; everything started here is stopped on
# exit (trap), including the Docker objects of the unique apps this run deploys (deployctl's and
# deploy.sh's) and the lab of section 8.

set -uo pipefail

ROOT=$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
# nginx lives in /usr/sbin, which a non-login shell may not have on its PATH.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

# Knobs (defaults keep the whole run well under 10 minutes once the release build exists).
WRK_DURATION=${BENCH_WRK_DURATION:-10s}
WRK_WARMUP=${BENCH_WRK_WARMUP:-3s}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNECTIONS:-32}
SWITCHES=${BENCH_SWITCHES:-20}
DEPLOYS=${BENCH_DEPLOYS:-3}          # steady-state deploys of each tool, after each one's first
ZD_SECONDS=${BENCH_ZD_SECONDS:-35}   # deploys and rollbacks start until this much load time passed
ZD_RATE=${BENCH_ZD_RATE:-1000}
ZD_WORKERS=${BENCH_ZD_WORKERS:-32}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}
# Which sections run: empty for all, else a list (commas or spaces) of 1 (runs §1-3), 4 (§4-6),
# 7 and 8; 2, 3, 1b, 5 and 6 name the group they belong to. The rows of the sections not run are
# carried over from the existing results file, each marked with the run it comes from.
ONLY=${BENCH_ONLY:-}
for s in ${ONLY//,/ }; do
    case $s in
    1 | 1b | 2 | 3 | 4 | 5 | 6 | 7 | 8) ;;
    *)
        echo "bench/run.sh: BENCH_ONLY: unknown section '$s' (use a list of 1, 4, 7, 8; 2, 3 run with 1, 5, 6 with 4)" >&2
        exit 2
        ;;
    esac
done

RUN_START_US=0
WORK=$(mktemp -d /tmp/deployctl-bench.XXXXXX)
PIDS=()            # processes this run started, stopped by cleanup
APP_NAME=""        # the deployctl app of sections 4-6, removed by cleanup
APP_DIR=""
SH_APP=""          # the deploy.sh app of section 4, removed by cleanup
SH_ENV=()          # deploy.sh's settings
PROXY_IMAGE=""      # the proxy image deployctl builds from our binary, when this run built it
DCTL_PORT=""       # the deployctl proxy of sections 4-6
ROWS=()            # section|metric|value|target|verdict
NOTES=()
DETAILS=()         # extra markdown blocks for RESULTS.md
USED_PORTS=" "
APT_UPDATED=""
PROXY_THREADS="n/a"
DEPLOY_PEAK_RSS=()  # "version kB" of each deployctl deploy
LAST_GOOD_DCTL=""   # the version a rollback returns to
DEPLOYED=" "        # every version deployctl deployed in this run

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# group_of SECTION: the group of sections that runs together (1: §1-3, 4: §4-6, 7, 8).
group_of() {
    case $1 in
    1 | 1b | 2 | 3) echo 1 ;;
    4 | 5 | 6) echo 4 ;;
    *) echo "$1" ;;
    esac
}
# want GROUP: whether this run measures that group (BENCH_ONLY).
want() {
    [[ -z $ONLY ]] && return 0
    local s
    for s in ${ONLY//,/ }; do
        [[ $(group_of "$s") == "$1" ]] && return 0
    done
    return 1
}

# Section 8 (fleet and SSH on the lab): its functions, knobs and fleet_cleanup.
# shellcheck source-path=SCRIPTDIR source=fleet.sh disable=SC1091 # followed with shellcheck -x
source "$ROOT/bench/fleet.sh"

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
        if (v == "" || v == "n/a" || t == "" || t == "n/a") { print "n/a"; exit }
        if (op == "<") ok = (v + 0 < t + 0)
        else if (op == "<=") ok = (v + 0 <= t + 0)
        else if (op == ">=") ok = (v + 0 >= t + 0)
        else ok = 0
        print (ok ? "met" : "missed")
    }'
}

# median of the arguments (numbers); n/a without any.
median() {
    (($#)) || {
        echo n/a
        return
    }
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.0f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
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
    local ids id
    if [[ -n $SH_APP ]]; then
        log "removing deploy.sh's app $SH_APP and its nginx"
        env "${SH_ENV[@]}" timeout 60 bash "$ROOT/bench/deploy.sh" down >/dev/null 2>&1
        # Should `down` have failed: its nginx (by the pid it wrote) and everything labelled
        # with its unique name.
        pid=$(cat "$WORK/sh-state/logs/nginx.pid" 2>/dev/null)
        [[ -n $pid ]] && kill "$pid" 2>/dev/null
        ids=$(docker ps -aq --filter "label=deployctl.bench=$SH_APP" 2>/dev/null)
        for id in $ids; do docker rm -f "$id" >/dev/null 2>&1; done
        ids=$(docker images -q "$SH_APP" 2>/dev/null | sort -u)
        for id in $ids; do docker rmi -f "$id" >/dev/null 2>&1; done
    fi
    if [[ -n $APP_NAME ]]; then
        log "removing the Docker objects of $APP_NAME"
        if [[ -n $APP_DIR && -f $APP_DIR/deploy.toml ]]; then
            dctl_app remove --yes >/dev/null 2>&1
        fi
        # Whatever `remove` left behind carries our unique app label or name.
        ids=$(docker ps -aq --filter "label=deployctl.app=$APP_NAME" 2>/dev/null)
        for id in $ids; do docker rm -f "$id" >/dev/null 2>&1; done
        ids=$(docker images -q --filter "label=deployctl.app=$APP_NAME" 2>/dev/null | sort -u)
        for id in $ids; do docker rmi -f "$id" >/dev/null 2>&1; done
        docker rm -f "deployctl-lock-$APP_NAME-bench" >/dev/null 2>&1
        docker network rm "deployctl-$APP_NAME-bench" >/dev/null 2>&1
        docker volume rm "deployctl-$APP_NAME-bench-state" >/dev/null 2>&1
        # The proxy image goes too when this run built it; `docker rmi` without -f leaves it
        # when something else uses it.
        [[ -n $PROXY_IMAGE ]] && docker rmi "$PROXY_IMAGE" >/dev/null 2>&1
    fi
    fleet_cleanup
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

# ensure_tool COMMAND DEBIAN_PACKAGE: installs the package when missing and we are root. (Debian
# images ship a policy-rc.d that keeps nginx's package from starting a system nginx; this script
# never uses one.)
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

HAVE_CURL=0 HAVE_JQ=0 HAVE_WRK=0 HAVE_HYPERFINE=0 HAVE_DOCKER=0 HAVE_NGINX=0 HAVE_TIME=0 HAVE_LOADGEN=0
ensure_tool curl curl && HAVE_CURL=1
ensure_tool jq jq && HAVE_JQ=1
want 1 && ensure_tool wrk wrk && HAVE_WRK=1
want 7 && ensure_tool hyperfine hyperfine && HAVE_HYPERFINE=1
{ want 1 || want 4; } && ensure_tool nginx nginx && HAVE_NGINX=1
ensure_tool pgrep procps
# GNU time, not the shell keyword: its -v reports the peak RSS of the command.
if [[ -x /usr/bin/time ]] || ensure_tool /usr/bin/time time; then
    /usr/bin/time -v true >/dev/null 2>&1 && HAVE_TIME=1
fi
command -v docker >/dev/null 2>&1 && timeout 20 docker version >/dev/null 2>&1 && HAVE_DOCKER=1

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
BIN_DIR=$TARGET_DIR/x86_64-unknown-linux-gnu/release
DCTL=$BIN_DIR/deployctl
DEMO=$BIN_DIR/examples/demo-app
LOADGEN=$WORK/loadgen

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
# The fixed-rate load client of section 6: one std-only file, no cargo target of its own.
if rustc --edition 2024 -O -o "$LOADGEN" "$ROOT/bench/loadgen.rs" >"$WORK/loadgen-build.log" 2>&1; then
    HAVE_LOADGEN=1
else
    log "could not compile bench/loadgen.rs: $(tail -n 3 "$WORK/loadgen-build.log")"
fi
RUN_START_US=$(now_us)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n) }'; then
    log "warning: load average $LOAD_START on $(nproc) CPUs: other work is running, figures will be noisy"
fi

# ---------------------------------------------------------------------------------------------
# Helpers for the proxies on the host
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
    # The request goes on stdin, as deployctl sends it; the health spec is the one the switch enforces.
    req=$(printf '{"target":{"addr":"127.0.0.1:%s","container":"bench-%s","version":"%s","color":"%s"},"health":{"url":"http://127.0.0.1:%s/health","host_header":null,"headers":{},"interval_ms":100,"timeout_ms":2000,"healthy_threshold":1,"unhealthy_threshold":1,"start_period_ms":0,"deadline_ms":2000,"expect_status":[200],"expect_body":null,"expect_json":null},"drain_timeout_ms":1000}' \
        "$2" "$4" "$3" "$4" "$2")
    printf '%s\n' "$req" | timeout 20 "$DCTL" proxy switch --state-dir "$1"
}

# The summed VmRSS (kB) of the given pids.
rss_sum_kb() {
    local p k v _ sum=0
    for p in "$@"; do
        while read -r k v _; do
            [[ $k == VmRSS: ]] && sum=$((sum + v))
        done <"/proc/$p/status" 2>/dev/null
    done
    echo "$sum"
}
rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
kb_to_mb() { awk -v k="$1" 'BEGIN { if (k == "" || k == "n/a") print "n/a"; else printf "%.1f", k / 1024 }'; }

# rss_sampler OUT PID...: every 100 ms the summed VmRSS of the pids; the largest so far in OUT.
rss_sampler() {
    local out=$1 max=0 now
    shift
    while :; do
        now=$(rss_sum_kb "$@")
        if ((now > max)); then
            max=$now
            echo "$max" >"$out"
        fi
        sleep 0.1
    done
}

# nginx_pids MASTER: the master and its workers, on one line.
nginx_pids() { echo "$1" "$(pgrep -P "$1" 2>/dev/null | tr '\n' ' ')"; }

# write_bench_nginx_conf PREFIX LISTEN_PORT APP_PORT: nginx in front of the demo app with the same
# keep-alive behaviour as deployctl's proxy (keep-alive to clients and to the upstream, no
# per-connection request limit, the same forwarding headers, no access log).
write_bench_nginx_conf() {
    local prefix=$1
    mkdir -p "$prefix/logs" "$prefix/tmp"
    cat >"$prefix/nginx.conf" <<EOF
worker_processes auto;
pid $prefix/logs/nginx.pid;
error_log $prefix/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    upstream app {
        server 127.0.0.1:$3;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 90s;
    }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOF
}

# ---------------------------------------------------------------------------------------------
# Sections 1-3: deployctl's proxy and nginx on the host
# ---------------------------------------------------------------------------------------------

section_proxy() {
    local app_port proxy_port nginx_port state app_pid proxy_pid nginx_pid="" body i
    if ! free_port app_port || ! free_port proxy_port || ! free_port nginx_port; then
        row 1 "proxy benchmarks" "skipped: no free port" "" ""
        return
    fi
    state="$WORK/proxy-state"
    mkdir -p "$state"

    start_bg "$WORK/app-a.log" env PORT="$app_port" DEPLOYCTL_VERSION=a DEPLOYCTL_COLOR=blue "$DEMO"
    app_pid=$BG_PID
    if ! wait_http "http://127.0.0.1:$app_port/health" 10; then
        row 1 "proxy benchmarks" "skipped: the demo app did not come up ($(tail -n 1 "$WORK/app-a.log"))" "" ""
        return
    fi
    start_bg "$WORK/proxy.log" "$DCTL" proxy run --listen "127.0.0.1:$proxy_port" --state-dir "$state"
    proxy_pid=$BG_PID
    for i in $(seq 1 100); do
        timeout 5 "$DCTL" proxy status --state-dir "$state" >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! proxy_switch "$state" "$app_port" a blue >"$WORK/switch0.json" 2>"$WORK/switch0.err"; then
        row 1 "proxy benchmarks" "skipped: proxy switch failed ($(tail -n 1 "$WORK/switch0.err"))" "" ""
        return
    fi
    body=$(curl -fsS -m 2 "http://127.0.0.1:$proxy_port/" 2>&1)
    if [[ $body != *"version=a "* ]]; then
        row 1 "proxy benchmarks" "skipped: the proxy does not serve the app: $body" "" ""
        return
    fi
    if ((HAVE_NGINX)); then
        local prefix="$WORK/nginx-bench"
        write_bench_nginx_conf "$prefix" "$nginx_port" "$app_port"
        # A plain foreground process with its own prefix, not a system service.
        start_bg "$WORK/nginx-bench.log" nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log" -g 'daemon off;'
        nginx_pid=$BG_PID
        if ! wait_http "http://127.0.0.1:$nginx_port/" 10; then
            note "nginx did not come up: $(tail -n 2 "$WORK/nginx-bench.log" "$prefix/logs/error.log" | tr '\n' ' ')"
            stop_bg "$nginx_pid"
            nginx_pid=""
        fi
    fi
    sleep 1
    PROXY_THREADS=$(rss_kb "$proxy_pid" Threads)

    # Section 2, idle: after start and one switch, before any load.
    local idle_rss idle_hwm nginx_idle="n/a"
    idle_rss=$(kb_to_mb "$(rss_kb "$proxy_pid" VmRSS)")
    idle_hwm=$(kb_to_mb "$(rss_kb "$proxy_pid" VmHWM)")
    local ngx_procs=()
    [[ -n $nginx_pid ]] && read -ra ngx_procs <<<"$(nginx_pids "$nginx_pid")"
    [[ -n $nginx_pid ]] && nginx_idle=$(kb_to_mb "$(rss_sum_kb "${ngx_procs[@]}")")

    if ((!HAVE_WRK)); then
        row 1 "proxy benchmarks" "skipped: wrk is not installed and could not be installed" "" ""
    else
        local direct="http://127.0.0.1:$app_port/" proxied="http://127.0.0.1:$proxy_port/"
        local viangx="http://127.0.0.1:$nginx_port/" sampler load_rss="n/a" nginx_load="n/a"
        ((HAVE_NGINX)) && [[ -z $nginx_pid ]] && row 1 "nginx" "skipped: nginx did not start" "" ""
        ((!HAVE_NGINX)) && row 1 "nginx" "skipped: nginx is not installed and could not be installed" "" ""
        # Unpinned: wrk, the proxy (or nginx) and the app share all cores. The proxy's and
        # nginx's RSS are sampled every 100 ms during their measured run.
        run_wrk warm-direct "$direct" "$WRK_WARMUP" && run_wrk direct "$direct" "$WRK_DURATION"
        run_wrk warm-proxy "$proxied" "$WRK_WARMUP"
        rss_sampler "$WORK/rss-proxy-load" "$proxy_pid" &
        sampler=$!
        PIDS+=("$sampler")
        run_wrk proxy "$proxied" "$WRK_DURATION"
        stop_bg "$sampler"
        load_rss=$(kb_to_mb "$(cat "$WORK/rss-proxy-load" 2>/dev/null)")
        if [[ -n $nginx_pid ]]; then
            run_wrk warm-nginx "$viangx" "$WRK_WARMUP"
            rss_sampler "$WORK/rss-nginx-load" "${ngx_procs[@]}" &
            sampler=$!
            PIDS+=("$sampler")
            run_wrk nginx "$viangx" "$WRK_DURATION"
            stop_bg "$sampler"
            nginx_load=$(kb_to_mb "$(cat "$WORK/rss-nginx-load" 2>/dev/null)")
        fi
        report_wrk 1 "" direct proxy nginx
        local load_hwm
        load_hwm=$(kb_to_mb "$(rss_kb "$proxy_pid" VmHWM)")
        row 2 "deployctl proxy RSS under load (largest 100 ms sample during the unpinned wrk run)" "$load_rss MB (HWM $load_hwm MB)" "—" "—"
        [[ -n $nginx_pid ]] && row 2 "nginx RSS under load, master + workers (same sampling)" "$nginx_load MB" "—" "—"

        # Pinned: wrk on CPU 0, the server side (app, or proxy/nginx + app) on the other CPUs, so
        # every run gives the server side the same CPU budget and wrk never steals from it.
        local ncpu
        ncpu=$(nproc)
        if command -v taskset >/dev/null 2>&1 && ((ncpu >= 2)); then
            local server_cpus=1 p ok=1
            ((ncpu > 2)) && server_cpus="1-$((ncpu - 1))"
            for p in "$app_pid" "$proxy_pid" "${ngx_procs[@]}"; do
                taskset -a -p -c "$server_cpus" "$p" >/dev/null || ok=0
            done
            if ((ok)); then
                run_wrk warm-direct-pinned "$direct" "$WRK_WARMUP" 0 &&
                    run_wrk direct-pinned "$direct" "$WRK_DURATION" 0
                run_wrk warm-proxy-pinned "$proxied" "$WRK_WARMUP" 0 &&
                    run_wrk proxy-pinned "$proxied" "$WRK_DURATION" 0
                if [[ -n $nginx_pid ]]; then
                    run_wrk warm-nginx-pinned "$viangx" "$WRK_WARMUP" 0 &&
                        run_wrk nginx-pinned "$viangx" "$WRK_DURATION" 0
                fi
                report_wrk 1b " (pinned)" direct-pinned proxy-pinned nginx-pinned
                note "Pinned runs (1b): wrk on CPU 0, the server side (the app, deployctl's proxy, nginx's master and workers) on CPU $server_cpus."
            else
                note "The pinned variant (1b) was skipped: taskset could not move the server processes."
            fi
            for p in "$app_pid" "$proxy_pid" "${ngx_procs[@]}"; do
                taskset -a -p -c "0-$((ncpu - 1))" "$p" >/dev/null 2>&1
            done
        else
            note "The pinned variant (1b) was skipped: taskset missing or fewer than 2 CPUs."
        fi
    fi

    row 2 "deployctl proxy RSS idle (after start + switch)" "$idle_rss MB (HWM $idle_hwm MB)" "< 20 MB" "$(judge "$idle_rss" "<" 20)"
    [[ -n $nginx_pid ]] && row 2 "nginx RSS idle, master + workers" "$nginx_idle MB" "—" "—"

    [[ -n $nginx_pid ]] && stop_bg "$nginx_pid"
    section_switch "$state" "$app_port"
}

# fmt_wrk FILE → "N req/s, p50 X ms, p99 Y ms, E errors", or why there is no figure
fmt_wrk() {
    local rps p50 p99 err
    [[ -s $1 ]] || {
        echo "not measured"
        return
    }
    read -r rps p50 p99 err <<<"$(wrk_parse "$1")"
    [[ $rps == n/a ]] && {
        echo "failed: $(tail -n 1 "$1")"
        return
    }
    printf '%.0f req/s, p50 %.2f ms, p99 %.2f ms, %s errors' "$rps" "$p50" "$p99" "$err"
}

# report_wrk SECTION SUFFIX DIRECT_LABEL PROXY_LABEL NGINX_LABEL
report_wrk() {
    local sec=$1 sfx=$2 label d p n d_rps p_rps n_rps d_p99 p_p99 n_p99
    d="$WORK/wrk-$3.txt" p="$WORK/wrk-$4.txt" n="$WORK/wrk-$5.txt"
    row "$sec" "direct to the app$sfx" "$(fmt_wrk "$d")" "—" "—"
    row "$sec" "through deployctl's proxy$sfx" "$(fmt_wrk "$p")" "—" "—"
    row "$sec" "through nginx$sfx" "$(fmt_wrk "$n")" "—" "—"
    d_rps=n/a p_rps=n/a n_rps=n/a d_p99=n/a p_p99=n/a n_p99=n/a
    [[ -s $d ]] && read -r d_rps _ d_p99 _ <<<"$(wrk_parse "$d")"
    [[ -s $p ]] && read -r p_rps _ p_p99 _ <<<"$(wrk_parse "$p")"
    [[ -s $n ]] && read -r n_rps _ n_p99 _ <<<"$(wrk_parse "$n")"
    local r_ngx r_dir
    r_ngx=$(awk -v a="$p_rps" -v b="$n_rps" 'BEGIN { if (a != "n/a" && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }')
    r_dir=$(awk -v a="$p_rps" -v b="$d_rps" 'BEGIN { if (a != "n/a" && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }')
    row "$sec" "throughput proxy/nginx$sfx" "$r_ngx" "≥ 1.0" "$(judge "$r_ngx" ">=" 1.0)"
    row "$sec" "p99 proxy vs nginx$sfx" "$(printf '%s ms vs %s ms' "$p_p99" "$n_p99")" "proxy ≤ nginx" "$(judge "$p_p99" "<=" "$n_p99")"
    row "$sec" "throughput proxy/direct$sfx (p99 proxy vs direct)" "$r_dir ($p_p99 ms vs $d_p99 ms)" "—" "—"
    for label in "$3" "$4" "$5"; do
        [[ -s $WORK/wrk-$label.txt ]] && DETAILS+=("wrk $label:"$'\n\n```\n'"$(cat "$WORK/wrk-$label.txt")"$'\n```')
    done
}

# Section 3: SWITCHES switches back and forth between the app of section 1 and a second one.
section_switch() {
    local state=$1 port_a=$2 port_b i out t0 t1 swaps=() walls=()
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
    local stats_swap stats_wall sw_med sw_max wa_med wa_max
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
# Section 4: `deployctl deploy` against bench/deploy.sh on the real Docker Engine
# ---------------------------------------------------------------------------------------------

# write_demo_app DIR NAME ENV=LISTEN...: the demo app deployctl deploys in sections 4-6 and 8, as a
# git repository in DIR: deploy.toml (app NAME), one environments/ENV.toml per argument with its
# proxy listen address (more settings for an environment: append to its file, then commit), the
# Dockerfile, the demo-app binary. Git's output goes to DIR.git.log.
write_demo_app() {
    local dir=$1 name=$2 e
    shift 2
    mkdir -p "$dir/environments"
    # Health gating as in the repository's own deploy.toml; no verify window (it would only add
    # its own length to every deploy, and deploy.sh has none). APP_VERSION changes with every
    # deploy, and the Dockerfile uses it before the COPY, so every build really builds.
    cat >"$dir/deploy.toml" <<EOF
[app]
name = "$name"
port = 8080

[git]
require_clean = false

[build]
context = "."
args = { APP_VERSION = "\${BENCH_BUILD_VERSION:-none}" }

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
    for e in "$@"; do
        printf '[proxy]\nlisten = "%s"\n' "${e#*=}" >"$dir/environments/${e%%=*}.toml"
    done
    cat >"$dir/Dockerfile" <<'EOF'
FROM scratch
ARG APP_VERSION=dev
LABEL org.opencontainers.image.version=$APP_VERSION
COPY demo-app /demo-app
ENTRYPOINT ["/demo-app"]
EOF
    cp "$DEMO" "$dir/demo-app"
    printf '.git\n' >"$dir/.dockerignore"
    # deployctl deploys from a git checkout.
    { git -C "$dir" init -q -b main && git_commit "$dir" bench; } >"$dir.git.log" 2>&1
}

git_commit() { # DIR MESSAGE: commits everything in DIR
    git -C "$1" -c user.name=bench -c user.email=bench@deployctl.invalid add -A &&
        git -C "$1" -c user.name=bench -c user.email=bench@deployctl.invalid commit -qm "$2"
}

# deployctl against the temp app; BENCH_TIME_FILE set → under /usr/bin/time -v into that file.
dctl_app() {
    local wrap=()
    [[ -n ${BENCH_TIME_FILE:-} ]] && ((HAVE_TIME)) && wrap=(/usr/bin/time -v -o "$BENCH_TIME_FILE")
    env -u DEPLOYCTL_ENV -u DEPLOYCTL_CONFIG NO_COLOR=1 timeout 180 \
        "${wrap[@]}" "$DCTL" "$@" --env bench --config "$APP_DIR/deploy.toml" </dev/null
}

# `--output json` writes JSON lines: one per event as it happens, then the result document (whose
# `events` array repeats them all) as the last line; `jq -s 'last'` reads that document.
# phase_ms JSON_FILE PHASE → summed elapsed of the finished phases with that name
phase_ms() {
    jq -rs --arg p "$2" 'last | [.events[]? | select(.event == "phase_finished" and .phase == $p) | .elapsed_ms] | add // 0' "$1"
}
phases_of() { jq -rs 'last | [.events[]? | select(.event == "phase_finished") | "\(.phase) \(.elapsed_ms)"] | join(", ")' "$1"; }

D_TOTAL=() D_OVER=() D_NOBUILD=() S_TOTAL=() S_OVER=() S_NOBUILD=()

# dctl_deploy VERSION KIND(first|steady): one timed `deployctl deploy`, with its row.
dctl_deploy() {
    local v=$1 kind=$2 t0 t1 rc wall f="$WORK/deploy-$1.json"
    log "section 4: deployctl deploy --release $v ($APP_NAME)"
    t0=$(now_us)
    BENCH_TIME_FILE="$WORK/time-$v.txt" BENCH_BUILD_VERSION=$v dctl_app deploy --release "$v" --output json >"$f" 2>"$WORK/deploy-$v.err"
    rc=$?
    t1=$(now_us)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) / 1000 }')
    if ((rc != 0)) || [[ $(curl -fsS -m 2 "http://127.0.0.1:$DCTL_PORT/" 2>/dev/null) != *"version=$v "* ]]; then
        row 4 "deployctl deploy $v" "failed (exit $rc): $(jq -rs 'last | .failure.reason // .error // empty' "$f" 2>/dev/null | tr '\n' ' ')$(tail -n 1 "$WORK/deploy-$v.err")" "" "missed"
        return 1
    fi
    local build start health switch over peak
    build=$(phase_ms "$f" build)
    start=$(phase_ms "$f" start)
    health=$(phase_ms "$f" health)
    switch=$(phase_ms "$f" switch)
    over=$((wall - build - start - health))
    peak=$(awk -F': *' '/Maximum resident set size/ { print $2 }' "$WORK/time-$v.txt" 2>/dev/null)
    [[ -n $peak ]] && DEPLOY_PEAK_RSS+=("$v $peak")
    if [[ $kind == steady ]]; then
        D_TOTAL+=("$wall")
        D_OVER+=("$over")
        D_NOBUILD+=("$((wall - build))")
    fi
    row 4 "deployctl deploy $v$([[ $kind == first ]] && echo ' (first: creates network, volume, proxy image and container)')" \
        "total $wall ms = build $build + start→healthy $((start + health)) (start $start, health $health) + overhead $over (of which switch $switch)" "—" "—"
    DETAILS+=("deployctl deploy $v: wall $wall ms; every phase deployctl reports (ms): $(phases_of "$f"); peak RSS ${peak:-n/a} kB")
    LAST_GOOD_DCTL=$CURRENT_DCTL
    CURRENT_DCTL=$v
    DEPLOYED+="$v "
}

# sh_deploy VERSION KIND: one timed bench/deploy.sh run, with its row.
sh_deploy() {
    local v=$1 kind=$2 t0 t1 rc wall tf="$WORK/sh-timings-$1.txt"
    log "section 4: bench/deploy.sh deploy $v ($SH_APP)"
    t0=$(now_us)
    env "${SH_ENV[@]}" TIMINGS_FILE="$tf" timeout 180 bash "$ROOT/bench/deploy.sh" deploy "$v" \
        </dev/null >"$WORK/sh-$v.log" 2>&1
    rc=$?
    t1=$(now_us)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) / 1000 }')
    if ((rc != 0)) || [[ ! -s $tf ]]; then
        row 4 "deploy.sh $v" "failed (exit $rc): $(tail -n 2 "$WORK/sh-$v.log" | tr '\n' ' ')" "" "missed"
        return 1
    fi
    local build healthy switch stop over
    build=$(awk -F= '$1 == "build_ms" { print $2 }' "$tf")
    healthy=$(awk -F= '$1 == "healthy_ms" { print $2 }' "$tf")
    switch=$(awk -F= '$1 == "switch_ms" { print $2 }' "$tf")
    stop=$(awk -F= '$1 == "stop_ms" { print $2 }' "$tf")
    over=$((wall - build - healthy))
    if [[ $kind == steady ]]; then
        S_TOTAL+=("$wall")
        S_OVER+=("$over")
        S_NOBUILD+=("$((wall - build))")
    fi
    row 4 "deploy.sh $v$([[ $kind == first ]] && echo ' (first: writes the nginx config, starts nginx)')" \
        "total $wall ms = build $build + start→healthy $healthy + overhead $over (of which switch $switch, stop old $stop)" "—" "—"
}

section_deploy() {
    if ((!HAVE_DOCKER)); then
        row 4 "deploy benchmarks" "skipped: no Docker Engine answers \`docker version\`" "" ""
        return 1
    fi
    if ((!HAVE_JQ || !HAVE_CURL)); then
        row 4 "deploy benchmarks" "skipped: jq and curl are needed" "" ""
        return 1
    fi
    local sh_listen sh_blue sh_green
    if ! free_port DCTL_PORT || ! free_port sh_listen || ! free_port sh_blue || ! free_port sh_green; then
        row 4 "deploy benchmarks" "skipped: no free port" "" ""
        return 1
    fi
    APP_DIR="$WORK/app"
    APP_NAME="dcbench-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
    if ! write_demo_app "$APP_DIR" "$APP_NAME" "bench=127.0.0.1:$DCTL_PORT"; then
        row 4 "deploy benchmarks" "skipped: could not make the app a git repository: $(tail -n 1 "$APP_DIR.git.log")" "" ""
        return 1
    fi

    if ((!HAVE_NGINX)); then
        row 4 "deploy.sh" "skipped: nginx is not installed and could not be installed" "" ""
    else
        SH_APP="$APP_NAME-sh"
        SH_ENV=(APP="$SH_APP" CONTEXT="$APP_DIR" STATE_DIR="$WORK/sh-state" LISTEN="127.0.0.1:$sh_listen"
            BLUE_PORT="$sh_blue" GREEN_PORT="$sh_green" HEALTH_PATH=/health HEALTH_INTERVAL=0.25
            HEALTH_THRESHOLD=2 HEALTH_DEADLINE=30 STOP_TIMEOUT=5 LABEL="deployctl.bench=$SH_APP")
    fi

    # The proxy image deployctl builds out of this binary (named by the binary's size and mtime,
    # as the dry-run plan shows): removed at the end unless it was there before.
    local proxy_image
    proxy_image=$(dctl_app deploy --dry-run --release b1 --output json 2>/dev/null |
        jq -rs 'last | [.. | objects | .image? // empty | strings | select(startswith("deployctl-proxy:"))][0] // empty')
    if [[ -n $proxy_image ]] && ! docker image inspect "$proxy_image" >/dev/null 2>&1; then
        PROXY_IMAGE=$proxy_image
    fi

    # First deploys of each, then DEPLOYS steady-state deploys of each, interleaved so both see
    # the same machine load.
    CURRENT_DCTL=""
    dctl_deploy b1 first || return 1
    [[ -n $SH_APP ]] && sh_deploy s1 first
    local i
    for i in $(seq 2 $((DEPLOYS + 1))); do
        dctl_deploy "b$i" steady || return 1
        [[ -n $SH_APP ]] && sh_deploy "s$i" steady
    done

    # deployctl hands its labels to the build API, which Docker's legacy builder turns into one
    # LABEL step per label; the history of the last image of each shows the steps each build ran.
    local d_steps s_steps
    d_steps=$(docker history -q "$APP_NAME:$CURRENT_DCTL" 2>/dev/null | wc -l)
    if [[ -n $SH_APP ]]; then
        s_steps=$(docker history -q "$SH_APP:s$((DEPLOYS + 1))" 2>/dev/null | wc -l)
        row 4 "image history entries (one per build step) of the last build: deployctl vs deploy.sh" "$d_steps vs $s_steps" "—" "—"
        DETAILS+=("history of $APP_NAME:$CURRENT_DCTL (deployctl):"$'\n\n```\n'"$(docker history --format '{{.CreatedBy}}' "$APP_NAME:$CURRENT_DCTL" 2>&1 | cut -c1-100)"$'\n```')
    fi

    local d_med s_med do_med so_med
    d_med=$(median "${D_TOTAL[@]}")
    s_med=$(median "${S_TOTAL[@]}")
    do_med=$(median "${D_OVER[@]}")
    so_med=$(median "${S_OVER[@]}")
    row 4 "deployctl tool overhead = total − build − start→healthy, median of ${#D_OVER[@]} steady deploys" \
        "$do_med ms (each: $(printf '%s ' "${D_OVER[@]}")ms)" "< 500 ms" "$(judge "$do_med" "<" 500)"
    row 4 "deploy.sh overhead, same definition, median of ${#S_OVER[@]}" "$so_med ms (each: $(printf '%s ' "${S_OVER[@]}")ms)" "—" "—"
    row 4 "total, median of the steady deploys: deployctl vs deploy.sh" "$d_med ms vs $s_med ms" "deployctl < deploy.sh" "$(judge "$d_med" "<" "$s_med")"
    row 4 "total − build, median of the steady deploys: deployctl vs deploy.sh" "$(median "${D_NOBUILD[@]}") ms vs $(median "${S_NOBUILD[@]}") ms" "—" "—"

    local peak_max=0 e each=""
    for e in "${DEPLOY_PEAK_RSS[@]}"; do
        ((${e#* } > peak_max)) && peak_max=${e#* }
        each+="${each:+, }${e% *} $(kb_to_mb "${e#* }")"
    done
    if ((HAVE_TIME && peak_max > 0)); then
        row 2 "deployctl peak RSS during a deploy (/usr/bin/time -v; b1 also builds the proxy image out of its own binary)" "largest $(kb_to_mb "$peak_max") MB (each in MB: $each)" "—" "—"
    else
        row 2 "deployctl peak RSS during a deploy" "not measured: GNU time (/usr/bin/time) is missing" "" ""
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------
# Section 5: rollback
# ---------------------------------------------------------------------------------------------

section_rollback() {
    local want=$LAST_GOOD_DCTL url="http://127.0.0.1:$DCTL_PORT/"
    # A poller GETs / every 10 ms from the moment the command starts and notes when the previous
    # release answers.
    log "section 5: rollback (to $want)"
    local seen="$WORK/rb-seen" poll_pid t0 t1 rc
    t0=$(now_us)
    (
        end=$((t0 + 30000000))
        while (($(now_us) < end)); do
            if [[ $(curl -s -m 1 "$url" 2>/dev/null) == *"version=$want "* ]]; then
                now_us >"$seen"
                exit 0
            fi
            sleep 0.01
        done
    ) &
    poll_pid=$!
    PIDS+=("$poll_pid")
    dctl_app rollback --output json >"$WORK/rollback.json" 2>"$WORK/rollback.err"
    rc=$?
    t1=$(now_us)
    wait "$poll_pid" 2>/dev/null
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p != "$poll_pid" ]] && keep+=("$p"); done
    PIDS=("${keep[@]}")
    if ((rc != 0)) || [[ ! -s $seen ]]; then
        row 5 "rollback" "failed (exit $rc): $(jq -rs 'last | .failure.reason // .error // empty' "$WORK/rollback.json" 2>/dev/null | tr '\n' ' ')$(tail -n 1 "$WORK/rollback.err")" "< 1 s" "missed"
        return
    fi
    local serving cmd_wall
    serving=$(ms_between "$t0" "$(cat "$seen")")
    cmd_wall=$(ms_between "$t0" "$t1")
    row 5 "rollback ($CURRENT_DCTL → $want, old colour present but stopped): command start → $want serving" "$serving ms" "< 1000 ms" "$(judge "$serving" "<" 1000)"
    row 5 "rollback: command wall time (start → exit)" "$cmd_wall ms" "—" "—"
    local rb="$WORK/rollback.json" rb_start rb_health rb_switch
    rb_start=$(phase_ms "$rb" start)
    rb_health=$(phase_ms "$rb" health)
    rb_switch=$(phase_ms "$rb" switch)
    row 5 "rollback split" "start $rb_start ms, health $rb_health ms, switch $rb_switch ms, other $(awk -v w="$cmd_wall" -v a="$rb_start" -v b="$rb_health" -v c="$rb_switch" 'BEGIN { printf "%.0f", w - a - b - c }') ms" "—" "—"
    DETAILS+=("rollback, every phase (ms): $(phases_of "$rb")")
    CURRENT_DCTL=$want
}

# ---------------------------------------------------------------------------------------------
# Section 6: zero downtime under fixed-rate load
# ---------------------------------------------------------------------------------------------

section_zero_downtime() {
    if ((!HAVE_LOADGEN)); then
        row 6 "zero downtime" "skipped: bench/loadgen.rs did not compile (rustc)" "" ""
        return
    fi
    local stop="$WORK/zd-stop" out="$WORK/zd-load.txt" fails="$WORK/zd-failures.txt" lg_pid
    local versions=$DEPLOYED ops=() n_dep=0 n_rb=0 op_fail=0 i=1 t0 t1 rc start_us
    log "section 6: $ZD_RATE req/s through deployctl's proxy while deploying and rolling back"
    "$LOADGEN" --addr "127.0.0.1:$DCTL_PORT" --rate "$ZD_RATE" --workers "$ZD_WORKERS" --fresh-every 4 \
        --expect "demo-app version=" --stop-file "$stop" --max-seconds $((ZD_SECONDS + 300)) \
        >"$out" 2>"$fails" &
    lg_pid=$!
    PIDS+=("$lg_pid")
    start_us=$(now_us)
    sleep 2
    # Deploys and rollbacks back to back until ZD_SECONDS of load passed (at least two of each).
    while :; do
        local elapsed_s=$((($(now_us) - start_us) / 1000000))
        ((elapsed_s >= ZD_SECONDS && n_dep >= 2 && n_rb >= 2)) && break
        local v="z$i"
        versions+="$v "
        t0=$(now_us)
        BENCH_BUILD_VERSION=$v dctl_app deploy --release "$v" --output json >"$WORK/zd-deploy-$v.json" 2>&1
        rc=$?
        t1=$(now_us)
        ops+=("$(ms_between "$start_us" "$t0" | awk '{ printf "%.1f", $1 / 1000 }')–$(ms_between "$start_us" "$t1" | awk '{ printf "%.1f", $1 / 1000 }') s deploy $v (exit $rc)")
        n_dep=$((n_dep + 1))
        ((rc != 0)) && op_fail=$((op_fail + 1))
        t0=$(now_us)
        dctl_app rollback --output json >"$WORK/zd-rollback-$i.json" 2>&1
        rc=$?
        t1=$(now_us)
        ops+=("$(ms_between "$start_us" "$t0" | awk '{ printf "%.1f", $1 / 1000 }')–$(ms_between "$start_us" "$t1" | awk '{ printf "%.1f", $1 / 1000 }') s rollback (exit $rc)")
        n_rb=$((n_rb + 1))
        ((rc != 0)) && op_fail=$((op_fail + 1))
        i=$((i + 1))
    done
    sleep 2
    touch "$stop"
    wait "$lg_pid"
    local lg_rc=$? keep=() p
    for p in "${PIDS[@]}"; do [[ $p != "$lg_pid" ]] && keep+=("$p"); done
    PIDS=("${keep[@]}")
    if ((lg_rc != 0)) || ! grep -q '^sent=' "$out"; then
        row 6 "zero downtime" "the load client failed (exit $lg_rc): $(tail -n 2 "$fails" | tr '\n' ' ')" "" "missed"
        return
    fi
    kv() { awk -F= -v k="$1" '$1 == k { print $2 }' "$out"; }
    local sent failed planned seconds unexpected=0 vn
    sent=$(kv sent) failed=$(kv failed) planned=$(kv planned) seconds=$(kv seconds)
    # Bodies of a version this run never deployed count as failures too.
    for vn in $(kv versions | tr ',' ' '); do
        [[ $versions == *" ${vn%%:*} "* ]] || unexpected=$((unexpected + ${vn##*:}))
    done
    local bad=$((failed + unexpected))
    local verdict=missed
    ((bad == 0 && sent >= 30000)) && verdict=met
    row 6 "requests during $n_dep deploys + $n_rb rollbacks ($seconds s at $ZD_RATE req/s target): failed / sent" \
        "$bad / $sent (planned $planned; connect $(kv connect_errors), io $(kv io_errors), timeout $(kv timeouts), non-200 $(kv non_200), bad body $(kv bad_body), unknown version $unexpected)" \
        "0 of ≥ 30,000" "$verdict"
    row 6 "load client: achieved rate, latency, lateness" \
        "$(kv achieved_rate) req/s; p50 $(kv p50_ms) ms, p99 $(kv p99_ms) ms, max $(kv max_ms) ms; $(kv late) sent > 10 ms late (max $(kv max_late_ms) ms); $(kv new_connections) connections opened" "—" "—"
    row 6 "deploy/rollback commands that exited non-zero" "$op_fail of $((n_dep + n_rb))" "—" "—"
    DETAILS+=("zero downtime, responses per version: $(kv versions); statuses: $(kv statuses)")
    DETAILS+=("zero downtime, operations (seconds since the load started):"$'\n\n'"$(printf -- '- %s\n' "${ops[@]}")")
    if [[ -s $fails ]]; then
        DETAILS+=("zero downtime, first failures (of $bad):"$'\n\n```\n'"$(head -n 30 "$fails")"$'\n```')
    fi
}

# ---------------------------------------------------------------------------------------------
# Section 7: CLI startup
# ---------------------------------------------------------------------------------------------

section_cli() {
    if ((!HAVE_HYPERFINE || !HAVE_JQ)); then
        row 7 "CLI startup" "skipped: hyperfine and jq are needed" "" ""
        return
    fi
    local shell_opt=()
    # -N runs the command without a shell (no shell start-up to correct for), hyperfine ≥ 1.13.
    hyperfine --help 2>/dev/null | grep -q -- '--shell' && hyperfine -N --runs 1 true >/dev/null 2>&1 && shell_opt=(-N)
    local name cmd target extra
    for name in help dryrun check; do
        extra=()
        if [[ $name == help ]]; then
            cmd="$DCTL --help"
            target=20
        elif [[ $name == dryrun ]]; then
            cmd="$DCTL deploy --env staging --dry-run --release bench"
            target=300
        else
            # Every prerequisite check of this repository (was a wall-clock bound in
            # tests/prereq.rs); a failing check is a result here, not a benchmark failure.
            cmd="$DCTL check --env staging"
            target=300
            extra=(-i)
        fi
        log "hyperfine: $cmd"
        if ! (cd "$ROOT" && env -u DEPLOYCTL_ENV -u DEPLOYCTL_CONFIG NO_COLOR=1 timeout 180 \
            hyperfine "${shell_opt[@]}" "${extra[@]}" --warmup 3 --style basic --export-json "$WORK/hf-$name.json" "$cmd" \
            >"$WORK/hf-$name.txt" 2>&1); then
            row 7 "\`${cmd#"$BIN_DIR"/}\`" "failed: $(tail -n 2 "$WORK/hf-$name.txt" | tr '\n' ' ')" "< $target ms" "missed"
            continue
        fi
        local mean sd
        mean=$(jq -r '.results[0].mean * 1000 | . * 100 | round / 100' "$WORK/hf-$name.json")
        sd=$(jq -r '.results[0].stddev * 1000 | . * 100 | round / 100' "$WORK/hf-$name.json")
        row 7 "\`${cmd#"$BIN_DIR"/}\` mean ± σ" "$mean ± $sd ms" "< $target ms" "$(judge "$mean" "<" "$target")"
    done
}

# ---------------------------------------------------------------------------------------------
# Run and report
# ---------------------------------------------------------------------------------------------

if want 1; then
    if ((HAVE_CURL)); then
        section_proxy
    else
        row 1 "proxy sections 1-3" "skipped: curl is not installed and could not be installed" "" ""
    fi
fi
if want 4; then
    if section_deploy; then
        section_rollback
        section_zero_downtime
    else
        row 5 "rollback" "skipped: section 4 did not deploy" "" ""
        row 6 "zero downtime" "skipped: section 4 did not deploy" "" ""
    fi
fi
want 7 && section_cli
want 8 && section_fleet
fleet_cleanup

RUN_S=$(awk -v a="$RUN_START_US" -v b="$(now_us)" 'BEGIN { printf "%.0f", (b - a) / 1e6 }')

version_of() { "$@" 2>&1 | head -n 1; }
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
DOCKER_V=$( ((HAVE_DOCKER)) && docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}}), CLI {{.Client.Version}}' 2>/dev/null || echo "not reachable")
# `wrk -v` exits 1 after printing its version.
WRK_V=$( ((HAVE_WRK)) && { wrk -v 2>&1 || true; } | head -n 1 | sed 's/ Copyright.*//' || echo "not installed")
HF_V=$( ((HAVE_HYPERFINE)) && hyperfine --version || echo "not installed")
NGINX_V=$( ((HAVE_NGINX)) && nginx -v 2>&1 | sed 's/^nginx version: //' || echo "not installed")
DPKG_V() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo "?"; }

want 1 && note "Proxy runs (1, 1b): wrk $WRK_THREADS threads, $WRK_CONNS connections, $WRK_DURATION per measured run after a $WRK_WARMUP warm-up of each URL; keep-alive GET / of the demo app (a ~40-byte body), run in the order direct, deployctl's proxy, nginx. The proxy is \`deployctl proxy run\` as a host process ($PROXY_THREADS threads at idle; its tokio runtime has 2 workers); nginx runs as a plain process with its own prefix and \`worker_processes auto\` (= $(nproc) here), upstream keepalive 64, \`proxy_http_version 1.1\`, \`proxy_set_header Connection \"\"\`, no per-connection request limit on either side, the same X-Forwarded-* headers deployctl's proxy sets, no access log."
want 1 && note "On a 2-core machine wrk, the proxy and the app compete for the same CPUs in the unpinned runs (1), so those are CPU-bound; 1b gives the server side the same CPU in every run. The demo app answers in microseconds with one thread per connection, so a proxy's own per-request cost dominates the proxied figures: a worst case for both proxies alike."
want 4 && note "Deploys (4): the same FROM scratch demo-app image built from the same context directory by both tools (Docker's legacy builder in both: deployctl through the API, deploy.sh through the docker CLI, which has no buildx here). Every deploy passes a new APP_VERSION build argument that the Dockerfile's LABEL uses before the COPY, so no deploy reuses a cached layer of the app: every build really copies the binary and commits its layers (FROM scratch pulls nothing). Both gate on GET /health answering {\"status\":\"ok\"} twice in a row at a 250 ms interval; deployctl checks from inside its proxy container, deploy.sh with curl on the published loopback port. Wall time is measured around each command, from process start to exit; the split comes from deployctl's --output json phases and from deploy.sh's own timestamps. overhead = total − build − start→healthy (switch, stopping the old colour, Docker connection, lock, ledger, process start). deployctl's verify window is 0s (deploy.sh has none). The first deploy of each is shown apart; the verdicts use the median of the $DEPLOYS steady-state deploys that follow, deployctl and deploy.sh interleaved."
want 4 && note "Build steps (4): deployctl passes its labels (app, env, role, version, git sha, created) through the build API's labels parameter, and Docker's legacy builder runs one LABEL step, with its own intermediate container, per label; that time is part of deployctl's build phase, not of its overhead. The 'image history entries' row shows how many steps each tool's last build ran."
want 4 && note "Rollback (5) restarts the stopped previous container and health-gates it before the switch, so its time is bounded below by a container start and one health interval (250 ms). The poller GETs / every 10 ms with curl, so 'serving' is accurate to ~10-20 ms."
want 4 && note "Zero downtime (6): bench/loadgen.rs, $ZD_WORKERS threads sharing $ZD_RATE req/s on fixed schedules (3 of 4 on keep-alive connections, 1 of 4 opening a new connection per request; nothing is retried; a late slot is sent at once, none is skipped) through deployctl's proxy container on 127.0.0.1:$DCTL_PORT, while the real binary deploys (real builds) and rolls back back to back. A request fails on a connect/read/write error, a 5 s timeout, a status other than 200, or a body that is not the demo app's; a body of a version this run never deployed counts as failed too."
{ want 1 || want 4; } && note "Memory (2): VmRSS/VmHWM from /proc; deployctl's peak RSS per deploy is GNU time's \"Maximum resident set size\"."
note "Load average (1, 5, 15 min) at the start of the benchmarks: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg). Above $(nproc), other work (here: other builds and test suites on the same machine) was competing for the CPUs and the figures are noisier than on an idle machine."

# A partial run (BENCH_ONLY) keeps the other sections' rows, and their notes, of the results file
# it replaces, each marked with the run it was measured in (a mark already there stays).
CARRIED=0
if [[ -n $ONLY && -s $RESULTS ]]; then
    # shellcheck disable=SC2016 # the backquotes are literal
    prev_run=$(sed -n 's/^Produced by `bench\/run.sh` on \([^;]*\);.*/\1/p' "$RESULTS" | head -n 1)
    prev_git=$(sed -n 's/^| deployctl | .*(git \([0-9a-f?]*\)) |$/\1/p' "$RESULTS" | head -n 1)
    tag="[from the run of ${prev_run:-?}, git ${prev_git:-?}]"
    in_table=0
    while IFS= read -r line; do
        [[ $line == "## Results" ]] && in_table=1 && continue
        [[ $line == "## "* ]] && in_table=0
        ((in_table)) && [[ $line == "| "* && $line != "| § |"* ]] || continue
        line=${line#| }
        line=${line% |}
        s=${line%% | *} rest=${line#* | }
        want "$(group_of "$s")" && ! [[ $s == 2 && $rest == "deployctl peak RSS during a deploy"* ]] && continue
        # §2's peak RSS row comes from §4's deploys.
        [[ $s == 2 && $rest == "deployctl peak RSS during a deploy"* ]] && want 4 && continue
        [[ $rest == "[from the run of "* ]] || rest="$tag $rest"
        IFS='|' read -r m v t j <<<"${rest// | /|}"
        row "$s" "$m" "$v" "$t" "$j"
        CARRIED=$((CARRIED + 1))
    done <"$RESULTS"
    in_notes=0
    NOTE_LABEL='^(\[from the run of [^]]*\] )?[^(]{0,40}\(([0-9]+)'
    while IFS= read -r line; do
        [[ $line == "## Notes" ]] && in_notes=1 && continue
        [[ $line == "## "* ]] && in_notes=0
        ((in_notes)) && [[ $line == "- "* ]] || continue
        line=${line#- }
        # A note about sections this run measured is replaced by this run's own: its label is
        # the first parenthesised section number, as in "Deploys (4): …".
        [[ $line =~ $NOTE_LABEL ]] && want "$(group_of "${BASH_REMATCH[2]}")" && continue
        [[ $line == "[from the run of "* ]] || line="$tag $line"
        NOTES+=("$line")
    done <"$RESULTS"
fi

{
    echo "# deployctl benchmark results"
    echo
    echo "Produced by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); the benchmarks took ${RUN_S} s (plus ${BUILD_S} s for the release build)."
    if [[ -n $ONLY ]]; then
        echo
        ran=""
        want 1 && ran+="§1–3, "
        want 4 && ran+="§4–6, "
        want 7 && ran+="§7, "
        want 8 && ran+="§8, "
        echo "A partial run (BENCH_ONLY=$ONLY): only ${ran%, } measured now;" \
            "the $CARRIED rows marked \"[from the run of …]\" (and the notes so marked) are carried over unchanged from the results file this run replaced. Their raw data is in that file's git history."
    fi
    echo
    echo "## Machine and versions"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| CPU | $CPU_MODEL |"
    echo "| nproc | $(nproc) |"
    echo "| memory | $MEM |"
    echo "| kernel | $(uname -r) |"
    echo "| OS | $(awk -F= '$1 == "PRETTY_NAME" { gsub(/"/, "", $2); print $2 }' /etc/os-release 2>/dev/null) |"
    echo "| deployctl | $(version_of "$DCTL" --version) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')) |"
    echo "| rustc | $(version_of rustc --version) |"
    echo "| Docker | $DOCKER_V |"
    echo "| nginx | $NGINX_V (Debian $(DPKG_V nginx)) |"
    echo "| wrk | $WRK_V |"
    echo "| hyperfine | $HF_V |"
    echo "| curl | $(version_of curl --version | cut -d' ' -f1-2) |"
    echo "| GNU time | $( ((HAVE_TIME)) && echo "Debian package time $(DPKG_V time)" || echo "not installed") |"
    echo
    echo "## Results"
    echo
    echo "| § | measure | value | target | verdict |"
    echo "|---|---|---|---|---|"
    for sec in 1 1b 2 3 4 5 6 7 8; do
        for r in "${ROWS[@]}"; do
            IFS='|' read -r s m v t j <<<"$r"
            [[ $s == "$sec" ]] || continue
            echo "| $s | $m | $v | ${t:-—} | ${j:-—} |"
        done
    done
    echo
    echo "## Targets missed"
    echo
    missed=0
    for sec in 1 1b 2 3 4 5 6 7 8; do
        for r in "${ROWS[@]}"; do
            IFS='|' read -r s m v t j <<<"$r"
            if [[ $s == "$sec" && $j == missed ]]; then
                echo "- §$s $m: $v (target $t)"
                missed=$((missed + 1))
            fi
        done
    done
    ((missed)) || echo "None."
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
