#!/usr/bin/env bash
# Fault test: the Docker daemon restarts while a deployed app serves. The proxy and the live app
# must come back by themselves (restart policy unless-stopped) with the same route (the proxy's
# persisted state), the stopped previous release must stay stopped, and deployctl must work on.
#
# Restarting a daemon stops every container on it for a while, so this refuses to run unless
# asked to. `cargo test --test lab` runs it against a Docker Engine of its own (a lab host, see
# tests/lab/hosts.sh), which touches nothing else on the machine:
#
#   DEPLOYCTL_ALLOW_DAEMON_RESTART=1 DOCKER_HOST=unix:///tmp/deployctl-lab-dev/h1/docker.sock \
#       DOCKERD_PIDFILE=/tmp/deployctl-lab-dev/h1/docker.pid DRT_LISTEN_IP=10.213.9.11 tests/daemon_restart.sh
#
# DOCKER_HOST: the engine to use. When set, deployctl reaches it through `docker.host` in the
#   app's configuration (with DOCKER_HOST removed from its environment), the docker CLI through
#   DOCKER_HOST. Unset: the machine's own daemon.
# DOCKERD_PIDFILE: the pid file of the dockerd that serves DOCKER_HOST, the one restarted. Unset:
#   the machine's only dockerd (refused when there are several), restarted with systemctl when
#   systemd runs it.
# DRT_LISTEN_IP: the address the proxy publishes on and the test connects to (default 127.0.0.1;
#   for a lab host, its address: its loopback is not this machine's).
#
# Binaries: $DEPLOYCTL_BIN (and the demo app next to it in examples/), else the newest of
# <target>/x86_64-unknown-linux-gnu/{release,debug}/deployctl, <target> being $CARGO_TARGET_DIR
# or ./target. Build them first: `cargo build --release --example demo-app` builds both.
#
# Without systemd, the daemon is stopped by SIGTERM and started again with the same command line,
# environment, log file and network namespace. If anything fails after the daemon was stopped,
# the exit trap starts it again.
# Exit status: 0 passed, 1 failed, 2 refused or missing prerequisites.

set -uo pipefail

ROOT=$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
DOCKERD_STOP_WAIT=${DOCKERD_STOP_WAIT:-120}   # seconds for dockerd to stop its containers and exit
DOCKERD_START_WAIT=${DOCKERD_START_WAIT:-60}  # seconds for `docker info` to answer again
SERVE_WAIT=${SERVE_WAIT:-60}                  # seconds for the URL to serve the same version again

log() { printf '[daemon-restart %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}

if [[ ${DEPLOYCTL_ALLOW_DAEMON_RESTART:-} != 1 ]]; then
    echo "refusing to run: this restarts the Docker daemon, which stops every container on it." >&2
    echo "Run it against a daemon nothing else uses (\`cargo test --test lab\` uses a lab host), with DEPLOYCTL_ALLOW_DAEMON_RESTART=1." >&2
    exit 2
fi
LISTEN_IP=${DRT_LISTEN_IP:-127.0.0.1}
for tool in docker curl git; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "$tool is required" >&2
        exit 2
    }
done
docker info >/dev/null 2>&1 || {
    echo "no Docker daemon answers" >&2
    exit 2
}

# --- binaries -------------------------------------------------------------------------------
DCTL=${DEPLOYCTL_BIN:-}
if [[ -z $DCTL ]]; then
    target=${CARGO_TARGET_DIR:-$ROOT/target}
    [[ $target == /* ]] || target=$ROOT/$target
    # The newest of the release and debug builds.
    for candidate in "$target"/x86_64-unknown-linux-gnu/{release,debug}/deployctl; do
        [[ -x $candidate && ( -z $DCTL || $candidate -nt $DCTL ) ]] && DCTL=$candidate
    done
fi
DEMO=$(dirname -- "${DCTL:-.}")/examples/demo-app
if [[ -z $DCTL || ! -x $DCTL || ! -x $DEMO ]]; then
    echo "deployctl and the demo app are needed: cargo build --release --example demo-app (or set DEPLOYCTL_BIN)" >&2
    exit 2
fi
log "deployctl: $DCTL"

# --- how the daemon runs ----------------------------------------------------------------------
# A process that exited but was not reaped yet (a zombie) counts as gone: an init that does not
# reap would otherwise keep it in /proc forever.
alive() {
    local state
    state=$(grep '^State:' "/proc/$1/status" 2>/dev/null) || return 1
    [[ $state != *zombie* ]]
}
live_dockerd_pids() {
    local pid
    for pid in $(ps -o pid= -C dockerd); do
        alive "$pid" && echo "$pid"
    done
}
if [[ -n ${DOCKERD_PIDFILE:-} ]]; then
    DOCKERD_PID=$(cat "$DOCKERD_PIDFILE" 2>/dev/null) || {
        echo "cannot read DOCKERD_PIDFILE $DOCKERD_PIDFILE" >&2
        exit 2
    }
    [[ $DOCKERD_PID =~ ^[0-9]+$ && $(cat "/proc/$DOCKERD_PID/comm" 2>/dev/null) == dockerd ]] || {
        echo "$DOCKERD_PIDFILE does not name a running dockerd ($DOCKERD_PID)" >&2
        exit 2
    }
else
    mapfile -t DOCKERD_PIDS < <(live_dockerd_pids)
    if ((${#DOCKERD_PIDS[@]} != 1)); then
        echo "expected exactly one dockerd process, found ${#DOCKERD_PIDS[@]}: not restarting anything (set DOCKERD_PIDFILE)" >&2
        exit 2
    fi
    DOCKERD_PID=${DOCKERD_PIDS[0]}
fi
USE_SYSTEMD=0
NSENTER=()
if [[ -z ${DOCKERD_PIDFILE:-} && $(cat /proc/1/comm 2>/dev/null) == systemd ]] && command -v systemctl >/dev/null 2>&1 &&
    systemctl is-active --quiet docker 2>/dev/null; then
    USE_SYSTEMD=1
    log "dockerd (pid $DOCKERD_PID) runs under systemd: systemctl restart docker"
else
    # Its exact argv, environment, working directory and log file, to start it the same way.
    mapfile -d '' -t DOCKERD_ARGS <"/proc/$DOCKERD_PID/cmdline"
    mapfile -d '' -t DOCKERD_ENV <"/proc/$DOCKERD_PID/environ"
    # dockerd finds containerd and runc through PATH.
    printf '%s\n' "${DOCKERD_ENV[@]}" | grep -q '^PATH=' ||
        DOCKERD_ENV+=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    DOCKERD_CWD=$(readlink "/proc/$DOCKERD_PID/cwd" || echo /)
    DOCKERD_LOG=$(readlink "/proc/$DOCKERD_PID/fd/2" || true)
    # A daemon in another network namespace (a lab host) starts again in that one: this open file
    # keeps the namespace for nsenter after the daemon exited.
    if [[ $(readlink "/proc/$DOCKERD_PID/ns/net") != $(readlink /proc/self/ns/net) ]]; then
        command -v nsenter >/dev/null 2>&1 || {
            echo "nsenter (util-linux) is required to restart a dockerd in another network namespace" >&2
            exit 2
        }
        exec {NETNS_FD}<"/proc/$DOCKERD_PID/ns/net"
        NSENTER=(nsenter "--net=/proc/self/fd/$NETNS_FD")
    fi
    # A terminal or pipe of the old process cannot be reopened: log to a file then.
    [[ -f $DOCKERD_LOG ]] || DOCKERD_LOG=/tmp/deployctl-daemon-restart-dockerd.log
    ((${#DOCKERD_ARGS[@]} > 0)) || {
        echo "cannot read the command line of dockerd (pid $DOCKERD_PID)" >&2
        exit 2
    }
    log "dockerd (pid $DOCKERD_PID): ${DOCKERD_ARGS[*]} (log: $DOCKERD_LOG)"
fi

# --- the app ----------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/deployctl-daemon-restart.XXXXXX)
APP_NAME="dcdrt-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
APP_DIR=$WORK/app
DAEMON_DOWN=0 # set while this script has the daemon stopped

dctl() {
    env -u DEPLOYCTL_ENV -u DEPLOYCTL_CONFIG -u DOCKER_HOST NO_COLOR=1 timeout 180 \
        "$DCTL" "$@" --env drt --config "$APP_DIR/deploy.toml" </dev/null
}

start_dockerd() {
    if ((USE_SYSTEMD)); then
        systemctl start docker
    else
        # Nothing of this script's stdout or stderr may stay open in the daemon: whoever reads
        # them (a test harness) would wait for the daemon to exit.
        (
            cd "$DOCKERD_CWD" || exit 1
            exec env -i "${DOCKERD_ENV[@]}" "${NSENTER[@]}" nohup setsid "${DOCKERD_ARGS[@]}"
        ) >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
}

wait_docker_info() {
    local end=$((SECONDS + DOCKERD_START_WAIT))
    while ((SECONDS < end)); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    docker info >/dev/null 2>&1
}

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    trap - EXIT INT TERM
    if ((DAEMON_DOWN)) && ! docker info >/dev/null 2>&1; then
        # An interrupted shutdown is let finish first: never two daemons on one data root.
        local end=$((SECONDS + DOCKERD_STOP_WAIT))
        while alive "$DOCKERD_PID" && ((SECONDS < end)); do sleep 0.5; done
        if [[ -z $(live_dockerd_pids) ]]; then
            log "starting the Docker daemon again"
            start_dockerd
        fi
        wait_docker_info || log "the Docker daemon does not answer: check $([[ $USE_SYSTEMD == 1 ]] && echo 'journalctl -u docker' || echo "$DOCKERD_LOG")"
    fi
    if [[ -f $APP_DIR/deploy.toml ]]; then
        dctl remove --yes >/dev/null 2>&1
        # Whatever `remove` left carries the unique app label or name.
        local id
        for id in $(docker ps -aq --filter "label=deployctl.app=$APP_NAME" 2>/dev/null); do
            docker rm -f "$id" >/dev/null 2>&1
        done
        for id in $(docker images -q --filter "label=deployctl.app=$APP_NAME" 2>/dev/null | sort -u); do
            docker rmi -f "$id" >/dev/null 2>&1
        done
        docker rm -f "deployctl-lock-$APP_NAME.drt" >/dev/null 2>&1
        docker network rm "deployctl-$APP_NAME.drt" >/dev/null 2>&1
        docker volume rm "deployctl-$APP_NAME.drt-state" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/$LISTEN_IP/$1") 2>/dev/null; }
PORT=""
for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if port_free "$p"; then
        PORT=$p
        break
    fi
done
[[ -n $PORT ]] || fail "no free port"
URL="http://$LISTEN_IP:$PORT/"

mkdir -p "$APP_DIR/environments"
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
drain_timeout = "5s"

[health]
path = "/health"
expect_json = { pointer = "/status", equals = "ok" }
interval = "250ms"
timeout = "2s"
healthy_threshold = 2
deadline = "30s"

[verify]
window = "1s"
EOF
printf '[proxy]\nlisten = "%s:%s"\n' "$LISTEN_IP" "$PORT" >"$APP_DIR/environments/drt.toml"
# deployctl finds the engine through its configuration (dctl removes DOCKER_HOST).
[[ -z ${DOCKER_HOST:-} ]] || printf '\n[docker]\nhost = "%s"\n' "$DOCKER_HOST" >>"$APP_DIR/environments/drt.toml"
printf 'FROM scratch\nCOPY demo-app /demo-app\nENTRYPOINT ["/demo-app"]\n' >"$APP_DIR/Dockerfile"
cp "$DEMO" "$APP_DIR/demo-app"
# Deploys run from a git checkout.
(cd "$APP_DIR" && git init -q -b main && git add -A &&
    git -c user.name=deployctl-tests -c user.email=tests@deployctl.invalid commit -qm app) ||
    fail "git repository of the app"

serving() { curl -fsS -m 2 "$URL" 2>/dev/null | grep -o 'version=[^ ]*' | cut -d= -f2; }

# v1 on blue, then v2 on green: the route to restore is not the default colour, and blue stays
# stopped (a manual stop that the restart policy must respect).
for v in v1 v2; do
    log "deploy $v ($APP_NAME on $LISTEN_IP:$PORT)"
    dctl deploy --release "$v" >"$WORK/deploy-$v.log" 2>&1 || {
        cat "$WORK/deploy-$v.log" >&2
        fail "deploy $v"
    }
done
[[ $(serving) == v2 ]] || fail "v2 does not serve before the restart"
PROXY="deployctl-proxy-$APP_NAME.drt"
BLUE="$APP_NAME.drt-blue"
GREEN="$APP_NAME.drt-green"
running() { docker inspect --format '{{.State.Running}}' "$1" 2>/dev/null; }
[[ $(running "$BLUE") == false && $(running "$GREEN") == true ]] || fail "unexpected containers before the restart"

# --- restart ----------------------------------------------------------------------------------
t0=$SECONDS
DAEMON_DOWN=1
if ((USE_SYSTEMD)); then
    log "systemctl restart docker"
    systemctl restart docker || fail "systemctl restart docker"
else
    log "SIGTERM to dockerd (pid $DOCKERD_PID), waiting up to ${DOCKERD_STOP_WAIT}s for it to exit"
    kill -TERM "$DOCKERD_PID" || fail "cannot signal dockerd"
    end=$((SECONDS + DOCKERD_STOP_WAIT))
    while alive "$DOCKERD_PID" && ((SECONDS < end)); do sleep 0.5; done
    # Never start a second daemon next to one still shutting down.
    alive "$DOCKERD_PID" && fail "dockerd (pid $DOCKERD_PID) did not exit within ${DOCKERD_STOP_WAIT}s"
    log "dockerd exited after $((SECONDS - t0))s; starting it again"
    start_dockerd
fi
wait_docker_info || fail "the daemon did not answer within ${DOCKERD_START_WAIT}s"
DAEMON_DOWN=0
log "daemon back after $((SECONDS - t0))s"

# --- the same route comes back ----------------------------------------------------------------
end=$((SECONDS + SERVE_WAIT))
got=""
while ((SECONDS < end)); do
    got=$(serving)
    [[ $got == v2 ]] && break
    sleep 0.5
done
[[ $got == v2 ]] || fail "the URL did not serve v2 again within ${SERVE_WAIT}s (last: '${got:-no answer}')"
log "v2 serves again $((SECONDS - t0))s after the restart began"
[[ $(running "$PROXY") == true ]] || fail "the proxy is not running"
[[ $(running "$GREEN") == true ]] || fail "the live container $GREEN is not running"
[[ $(running "$BLUE") == false ]] || fail "the stopped previous release $BLUE was started by the restart"

status=$(dctl status 2>&1) || {
    echo "$status" >&2
    fail "status exits non-zero after the restart"
}
grep -q "live: *v2 (green)" <<<"$status" || {
    echo "$status" >&2
    fail "status does not show v2 on green live"
}
grep -q "previous: v1" <<<"$status" || {
    echo "$status" >&2
    fail "status lost the release ledger"
}

# deployctl keeps working on the restored proxy, network and ledger.
log "deploy v3 and roll back after the restart"
dctl deploy --release v3 >"$WORK/deploy-v3.log" 2>&1 || {
    cat "$WORK/deploy-v3.log" >&2
    fail "deploy v3 after the restart"
}
[[ $(serving) == v3 ]] || fail "v3 does not serve"
dctl rollback >"$WORK/rollback.log" 2>&1 || {
    cat "$WORK/rollback.log" >&2
    fail "rollback after the restart"
}
[[ $(serving) == v2 ]] || fail "the rollback did not go back to v2"

log "PASSED: proxy and live app came back with the same route; deployctl works on"
exit 0
