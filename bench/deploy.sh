#!/usr/bin/env bash
# The reference for bench/run.sh: the blue-green deploy script a team writes by hand when it has
# Docker and nginx, doing what `deployctl deploy` does with the docker CLI:
#
#   build the image → start the idle colour → poll its health with curl → point nginx's upstream
#   at it and `nginx -s reload` → wait until nginx serves it → stop the old colour (kept for a
#   rollback) → record which colour is live.
#
# nginx runs on the host (no nginx image can be pulled here) from its own prefix directory; the
# colours publish their port on 127.0.0.1 only. The first deploy writes the nginx configuration and
# starts nginx.
#
# Usage:
#   bench/deploy.sh deploy VERSION    build and roll out VERSION
#   bench/deploy.sh down              stop nginx, remove both colours and the app's images
#
# Settings (environment; a team would write its values in here):
#   APP            app name: containers $APP-blue / $APP-green, images $APP:VERSION (required)
#   CONTEXT        docker build context with its Dockerfile (required for deploy)
#   STATE_DIR      nginx prefix and the script's state (required)
#   LISTEN         address nginx listens on, e.g. 127.0.0.1:8080 (required for the first deploy)
#   BLUE_PORT, GREEN_PORT   loopback ports the colours publish (required)
#   APP_PORT=8080  the port the app listens on inside its container
#   HEALTH_PATH=/health  HEALTH_INTERVAL=0.25  HEALTH_THRESHOLD=2  HEALTH_DEADLINE=30
#   STOP_TIMEOUT=5 LABEL="" (an extra KEY=VALUE label on the containers)
#   NGINX=nginx    TIMINGS_FILE=""   (when set, the phase times in ms go there as key=value lines)
#
# Exit codes: 0 deployed; 1 failed (the live colour kept serving); 2 usage.

set -euo pipefail

: "${APP:?APP is required}"
: "${STATE_DIR:?STATE_DIR is required}"
: "${BLUE_PORT:?BLUE_PORT is required}"
: "${GREEN_PORT:?GREEN_PORT is required}"
APP_PORT=${APP_PORT:-8080}
HEALTH_PATH=${HEALTH_PATH:-/health}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-0.25}
HEALTH_THRESHOLD=${HEALTH_THRESHOLD:-2}
HEALTH_DEADLINE=${HEALTH_DEADLINE:-30}
STOP_TIMEOUT=${STOP_TIMEOUT:-5}
NGINX=${NGINX:-nginx}
LABEL=${LABEL:-}
TIMINGS_FILE=${TIMINGS_FILE:-}

CONF="$STATE_DIR/conf/nginx.conf"
UPSTREAM="$STATE_DIR/conf/upstream.conf"

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'deploy.sh: %s\n' "$*" >&2
    exit 1
}
ms() { # milliseconds since the epoch
    local t=${EPOCHREALTIME/[.,]/}
    printf '%s' "$((10#$t / 1000))"
}
nginx_ctl() { "$NGINX" -p "$STATE_DIR" -c "$CONF" -e "$STATE_DIR/logs/error.log" "$@"; }
nginx_running() { [[ -s $STATE_DIR/logs/nginx.pid ]] && kill -0 "$(cat "$STATE_DIR/logs/nginx.pid")" 2>/dev/null; }
port_of() { if [[ $1 == blue ]]; then echo "$BLUE_PORT"; else echo "$GREEN_PORT"; fi; }

write_upstream() { # port: written next to the live file and renamed, so nginx never reads half
    printf 'upstream app {\n    server 127.0.0.1:%s;\n    keepalive 32;\n}\n' "$1" >"$UPSTREAM.tmp"
    mv -f "$UPSTREAM.tmp" "$UPSTREAM"
}

write_nginx_conf() {
    local listen=${LISTEN:?LISTEN is required for the first deploy}
    mkdir -p "$STATE_DIR/conf" "$STATE_DIR/logs" "$STATE_DIR/tmp"
    cat >"$CONF" <<EOF
worker_processes auto;
pid $STATE_DIR/logs/nginx.pid;
error_log $STATE_DIR/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $STATE_DIR/tmp/body;
    proxy_temp_path $STATE_DIR/tmp/proxy;
    fastcgi_temp_path $STATE_DIR/tmp/fastcgi;
    uwsgi_temp_path $STATE_DIR/tmp/uwsgi;
    scgi_temp_path $STATE_DIR/tmp/scgi;
    include $UPSTREAM;
    server {
        listen $listen;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_next_upstream error timeout;
        }
    }
}
EOF
}

# Polls the health endpoint until HEALTH_THRESHOLD checks in a row pass, or the deadline.
wait_healthy() {
    local port=$1 passes=0 deadline=$(($(ms) + HEALTH_DEADLINE * 1000))
    while (($(ms) < deadline)); do
        if curl -fsS -m 2 "http://127.0.0.1:$port$HEALTH_PATH" 2>/dev/null | grep -q '"status":"ok"'; then
            passes=$((passes + 1))
            ((passes >= HEALTH_THRESHOLD)) && return 0
        else
            passes=0
        fi
        sleep "$HEALTH_INTERVAL"
    done
    return 1
}

# Waits until nginx answers with the new version (a reload takes effect in new workers).
wait_serving() {
    local version=$1 deadline=$(($(ms) + 10000))
    while (($(ms) < deadline)); do
        [[ $(curl -fsS -m 2 "http://$LISTEN_ADDR/" 2>/dev/null) == *"version=$version "* ]] && return 0
        sleep 0.02
    done
    return 1
}

deploy() {
    local version=$1 t0 t_build t_healthy t_switch t_stop
    [[ $version =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad version: $version"
    : "${CONTEXT:?CONTEXT is required}"
    t0=$(ms)
    mkdir -p "$STATE_DIR/conf"
    local live next
    live=$(cat "$STATE_DIR/live" 2>/dev/null || true)
    if [[ $live == blue ]]; then next=green; else next=blue; fi
    local port
    port=$(port_of "$next")
    local labels=()
    [[ -n $LABEL ]] && labels=(--label "$LABEL")

    say "building $APP:$version"
    docker build -t "$APP:$version" --build-arg "APP_VERSION=$version" "$CONTEXT"
    t_build=$(ms)

    say "starting $APP-$next ($version) on 127.0.0.1:$port"
    # A container of that colour is the release before last: replace it.
    docker rm -f "$APP-$next" >/dev/null 2>&1 || true
    docker run -d --name "$APP-$next" "${labels[@]}" --restart unless-stopped \
        -p "127.0.0.1:$port:$APP_PORT" -e "APP_VERSION=$version" -e "DEPLOYCTL_COLOR=$next" \
        "$APP:$version" >/dev/null
    if ! wait_healthy "$port"; then
        echo "--- last logs of $APP-$next ---" >&2
        docker logs --tail 50 "$APP-$next" >&2 || true
        docker rm -f "$APP-$next" >/dev/null 2>&1 || true
        die "$APP-$next did not become healthy within ${HEALTH_DEADLINE}s; $live keeps serving"
    fi
    t_healthy=$(ms)

    say "switching nginx to $next"
    local previous_upstream=""
    [[ -f $UPSTREAM ]] && previous_upstream=$(cat "$UPSTREAM")
    write_upstream "$port"
    [[ -f $CONF ]] || write_nginx_conf
    LISTEN_ADDR=$(awk '$1 == "listen" { sub(/;$/, "", $2); print $2; exit }' "$CONF")
    if ! nginx_ctl -t -q; then
        # Put the old upstream back; nothing was reloaded.
        if [[ -n $previous_upstream ]]; then printf '%s\n' "$previous_upstream" >"$UPSTREAM"; fi
        docker rm -f "$APP-$next" >/dev/null 2>&1 || true
        die "nginx rejected the new configuration"
    fi
    if nginx_running; then
        nginx_ctl -s reload
    else
        nginx_ctl
    fi
    wait_serving "$version" || die "nginx does not serve $version 10 s after the switch"
    t_switch=$(ms)

    if [[ -n $live ]]; then
        say "stopping $APP-$live (kept for a rollback)"
        docker stop -t "$STOP_TIMEOUT" "$APP-$live" >/dev/null 2>&1 || true
    fi
    echo "$next" >"$STATE_DIR/live"
    echo "$(date -u +%FT%TZ) $version $next" >>"$STATE_DIR/releases"
    t_stop=$(ms)

    say "$version is live on $next ($((t_stop - t0)) ms: build $((t_build - t0)), start→healthy $((t_healthy - t_build)), switch $((t_switch - t_healthy)), stop $((t_stop - t_switch)))"
    if [[ -n $TIMINGS_FILE ]]; then
        printf 'build_ms=%s\nhealthy_ms=%s\nswitch_ms=%s\nstop_ms=%s\ntotal_ms=%s\n' \
            "$((t_build - t0))" "$((t_healthy - t_build))" "$((t_switch - t_healthy))" \
            "$((t_stop - t_switch))" "$((t_stop - t0))" >"$TIMINGS_FILE"
    fi
}

down() {
    if nginx_running; then
        nginx_ctl -s quit || true
    fi
    docker rm -f "$APP-blue" "$APP-green" >/dev/null 2>&1 || true
    local images
    images=$(docker images --format '{{.Repository}}:{{.Tag}}' "$APP" 2>/dev/null || true)
    if [[ -n $images ]]; then
        # shellcheck disable=SC2086 # one image reference per word
        docker rmi $images >/dev/null 2>&1 || true
    fi
    rm -f "$STATE_DIR/live"
}

case ${1:-} in
deploy)
    [[ $# == 2 ]] || {
        echo "usage: $0 deploy VERSION" >&2
        exit 2
    }
    deploy "$2"
    ;;
down) down ;;
*)
    echo "usage: $0 deploy VERSION | down" >&2
    exit 2
    ;;
esac
