#!/usr/bin/env bash
# The test lab: Docker Engines of the tests' own, on this machine. A lab host is a dockerd in its
# own network namespace with its own address on a private bridge, its own data root (vfs storage
# driver), exec root, socket, config file and cgroup parent. Nothing is pulled: images must be
# built on the host. Tests reach host hN through unix://$LAB_DIR/hN/docker.sock or
# tcp://$NET.1N:2375 (no TLS: the bridge is private to this machine), and its published ports on
# $NET.1N. Restarting or breaking a lab host touches nothing else on the machine.
#
#   hosts.sh up N [--ssh]
#                    start a lab of N hosts (1 to 8); prints one line per host:
#                      <name> <address> unix://<dir>/docker.sock tcp://<address>:2375
#                    On failure it removes what it started, like `down`.
#                    --ssh: an sshd on each host (its netns, <address>:22, user root, log in
#                    <dir>/sshd.log) whose sessions reach that host's engine (SetEnv DOCKER_HOST),
#                    so ssh://root@<address> works as a docker.host. The client side is in the lab
#                    dir, never in ~/.ssh: a key (id_ed25519), an `ssh_config` (use it with
#                    `ssh -F` or DEPLOYCTL_SSH_CONFIG) and a `known_hosts` with each host's real key,
#                    so strict host key checking passes. Port 2222 of each host is the same sshd,
#                    but its sessions run with a PATH that has no `docker` (a remote without it).
#   hosts.sh env     the DOCKER_HOST of each host of the lab
#   hosts.sh down    stop everything the lab started and remove its files; idempotent
#   hosts.sh gc      `down` every lab whose owner (LAB_OWNER at `up`) has exited, such as the lab
#                    of a test binary that was killed before it could clean up
#
# Environment:
#   LAB_ID     names the lab (1 to 6 of [a-z0-9]; default `dev`): files in /tmp/deployctl-lab-$LAB_ID,
#              namespaces dl$LAB_ID-hN, bridge dl${LAB_ID}br. Two labs with different ids coexist.
#   LAB_NET    first three octets of the lab's /24 (default: the first 10.213.X.0/24, X >= 9, that
#              no route of this machine covers or lies in; chosen under a lock, so concurrent labs
#              get different networks). The bridge is $NET.1, the hosts $NET.11 to $NET.18.
#   LAB_OWNER  pid of the process the lab belongs to (for `gc`); none: only `down` removes it.
#
# Needs root and: dockerd (docker.io), ip (iproute2), iptables, nsenter (util-linux), flock;
# with --ssh also sshd (openssh-server), ssh and ssh-keygen (openssh-client).
# Verified on Debian 12, Docker 20.10, cgroup v1 (all hosts report the machine's engine ID, from
# /etc/docker/key.json). Derived from the fleet script in ../shared/lab;
# its Swarm and registry parts come back with the issues that test them.
set -euo pipefail

LAB_ID=${LAB_ID:-dev}
[[ $LAB_ID =~ ^[a-z0-9]{1,6}$ ]] || { echo "hosts.sh: LAB_ID must be 1 to 6 of [a-z0-9], got '$LAB_ID'" >&2; exit 2; }
LAB_ROOT=/tmp
LAB_DIR=$LAB_ROOT/deployctl-lab-$LAB_ID
PREFIX=dl$LAB_ID        # interface names have at most 15 characters: dl<id>h<N>v
BR=${PREFIX}br
CGROUP=deployctl-lab-$LAB_ID
ALLOC_LOCK=/run/lock/deployctl-lab.lock

say() { printf 'hosts.sh[%s]: %s\n' "$LAB_ID" "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { say "'$1' is required ($2)"; exit 2; }; }

# A /24 is free when no route of this machine (other than the default route) covers it or lies
# inside it; a lab's bridge adds such a route, so labs never share a network.
net_free() {
    local r
    r=$( { ip -4 route show match "$1.0/24"; ip -4 route show root "$1.0/24"; } | grep -v '^default' || true)
    [[ -z $r ]]
}

pick_net() {
    if [[ -n ${LAB_NET:-} ]]; then
        net_free "$LAB_NET" || { say "LAB_NET $LAB_NET.0/24 is in use on this machine"; return 1; }
        echo "$LAB_NET"
        return
    fi
    local x
    for x in $(seq 9 254); do
        net_free "10.213.$x" && { echo "10.213.$x"; return; }
    done
    say "no free 10.213.X.0/24 network"
    return 1
}

docker_up() { DOCKER_HOST=unix://$1/docker.sock docker info >/dev/null 2>&1; }

up() {
    local n=${1:-} ssh=0 a
    [[ $n =~ ^[1-8]$ ]] || { say "usage: hosts.sh up N [--ssh] (N from 1 to 8)"; exit 2; }
    shift
    for a in "$@"; do
        case $a in --ssh) ssh=1 ;; *) say "unknown option $a (usage: hosts.sh up N [--ssh])"; exit 2 ;; esac
    done
    [[ $(id -u) == 0 ]] || { say "the lab needs root (network namespaces, a bridge, iptables)"; exit 2; }
    need dockerd "Debian package docker.io"; need docker "Debian package docker.io"
    need ip iproute2; need iptables iptables; need nsenter util-linux; need flock util-linux
    if ((ssh)); then
        PATH=$PATH:/usr/sbin:/sbin
        need sshd "Debian package openssh-server"; need ssh "Debian package openssh-client"
        need ssh-keygen "Debian package openssh-client"
    fi
    # Claiming the directory claims the id: never touch a lab someone else started.
    mkdir -p "$LAB_ROOT"
    mkdir "$LAB_DIR" 2>/dev/null || { say "lab $LAB_ID exists already ($LAB_DIR): \`LAB_ID=$LAB_ID $0 down\` first"; exit 3; }
    trap 'rc=$?; if ((rc != 0)); then say "up failed (exit $rc): removing what it started"; down; fi' EXIT
    printf 'LAB_OWNER=%s\n' "${LAB_OWNER:-}" >"$LAB_DIR/owner"

    local net
    mkdir -p "$(dirname "$ALLOC_LOCK")"
    exec {lock}>"$ALLOC_LOCK"
    flock -w 60 "$lock" || { say "cannot take $ALLOC_LOCK"; exit 1; }
    net=$(pick_net)
    ip link add "$BR" type bridge
    ip addr add "$net.1/24" dev "$BR"
    ip link set "$BR" up
    exec {lock}>&-
    echo "$net" >"$LAB_DIR/net"
    # Docker's FORWARD policy is DROP; let the lab's hosts talk to each other.
    iptables -I FORWARD -i "$BR" -o "$BR" -j ACCEPT

    local i
    for i in $(seq 1 "$n"); do
        local ns=$PREFIX-h$i ip=$net.1$i dir=$LAB_DIR/h$i
        mkdir -p "$dir/data" "$dir/exec"
        ip netns add "$ns"
        ip link add "${PREFIX}h${i}v" type veth peer name "${PREFIX}h${i}p"
        ip link set "${PREFIX}h${i}p" netns "$ns"
        ip link set "${PREFIX}h${i}v" master "$BR"
        ip link set "${PREFIX}h${i}v" up
        ip -n "$ns" addr add "$ip/24" dev "${PREFIX}h${i}p"
        ip -n "$ns" link set "${PREFIX}h${i}p" up
        ip -n "$ns" link set lo up
        ip -n "$ns" route add default via "$net.1"
        # Its own config file: the machine's /etc/docker/daemon.json would clash with these flags.
        printf '{"storage-driver":"vfs","cgroup-parent":"/%s"}\n' "$CGROUP" >"$dir/daemon.json"
        # nsenter --net, not `ip netns exec`: the latter remounts /sys and hides the cgroups.
        # setsid: a Ctrl-C meant for the test must not stop the daemon half-way; gc or down does.
        setsid nsenter --net="/var/run/netns/$ns" dockerd --config-file "$dir/daemon.json" \
            --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
            -H "unix://$dir/docker.sock" -H "tcp://$ip:2375" </dev/null >"$dir/dockerd.log" 2>&1 &
    done
    for i in $(seq 1 "$n"); do
        local dir=$LAB_DIR/h$i t
        for t in $(seq 1 240); do
            docker_up "$dir" && break
            # Fail fast when the daemon has exited instead of waiting out the bound.
            if ((t > 20)) && [[ -z $(ip netns pids "$PREFIX-h$i" 2>/dev/null) ]]; then break; fi
            sleep 0.25
        done
        docker_up "$dir" || { tail -n 30 "$dir/dockerd.log" >&2; say "host h$i did not start (log: $dir/dockerd.log)"; exit 1; }
    done
    ((ssh == 0)) || ssh_up "$n" "$net"
    for i in $(seq 1 "$n"); do
        echo "h$i $net.1$i unix://$LAB_DIR/h$i/docker.sock tcp://$net.1$i:2375"
    done
}

# An sshd per host in its namespace, and the client side (key, ssh_config, known_hosts) in the
# lab dir. Port 2222: the same sshd, its sessions without `docker` on the PATH.
ssh_up() {
    local n=$1 net=$2 i
    mkdir -p /run/sshd
    ssh-keygen -q -t ed25519 -N '' -C "deployctl-lab-$LAB_ID" -f "$LAB_DIR/id_ed25519"
    : >"$LAB_DIR/known_hosts"
    cat >"$LAB_DIR/ssh_config" <<EOF
Host $net.*
  User root
  IdentityFile $LAB_DIR/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $LAB_DIR/known_hosts
  GlobalKnownHostsFile /dev/null
  LogLevel ERROR
EOF
    for i in $(seq 1 "$n"); do
        local ip=$net.1$i dir=$LAB_DIR/h$i key
        mkdir -p "$dir/ssh"
        ssh-keygen -q -t ed25519 -N '' -C "h$i" -f "$dir/ssh/host_key"
        cp "$LAB_DIR/id_ed25519.pub" "$dir/ssh/authorized_keys"
        key=$(cut -d' ' -f1,2 "$dir/ssh/host_key.pub")
        printf '%s %s\n[%s]:2222 %s\n' "$ip" "$key" "$ip" "$key" >>"$LAB_DIR/known_hosts"
        cat >"$dir/ssh/sshd_config" <<EOF
ListenAddress $ip:22
ListenAddress $ip:2222
HostKey $dir/ssh/host_key
AuthorizedKeysFile $dir/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $dir/sshd.pid
LogLevel INFO
SetEnv DOCKER_HOST=unix://$dir/docker.sock
Match LocalPort 2222
  ForceCommand env PATH=/nonexistent /bin/sh -c "\$SSH_ORIGINAL_COMMAND"
EOF
        # sshd puts itself in the background once it listens.
        setsid nsenter --net="/var/run/netns/$PREFIX-h$i" "$(command -v sshd)" \
            -f "$dir/ssh/sshd_config" -E "$dir/sshd.log" </dev/null
    done
    for i in $(seq 1 "$n"); do
        local dir=$LAB_DIR/h$i t
        for t in $(seq 1 100); do
            [[ -s $dir/sshd.pid ]] && (exec 3<>"/dev/tcp/$net.1$i/22") 2>/dev/null && break
            sleep 0.1
        done
        [[ -s $dir/sshd.pid ]] || { cat "$dir/sshd.log" >&2 || true; say "sshd of h$i did not start"; exit 1; }
    done
}

env_lines() {
    local dir
    for dir in "$LAB_DIR"/h*; do
        [[ -S $dir/docker.sock ]] && echo "$(basename "$dir") DOCKER_HOST=unix://$dir/docker.sock"
    done
    return 0
}

# Every process of the lab: those in its network namespaces (dockerd, containerd, shims,
# docker-proxy) and those in its cgroups (the containers, which have namespaces of their own).
lab_pids() {
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep -x "$PREFIX-h[0-9]" || true); do
        ip netns pids "$ns" 2>/dev/null || true
    done
    find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -path "*/$CGROUP/*" -name cgroup.procs -exec cat {} + 2>/dev/null || true
    find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -path "*/$CGROUP" -type d -exec cat {}/cgroup.procs \; 2>/dev/null || true
}

wait_gone() { # wait_gone SECONDS PID...: true when every PID has exited within SECONDS
    local end=$((SECONDS + $1)) p left
    shift
    while :; do
        left=0
        for p in "$@"; do [[ -d /proc/$p ]] && ! grep -q '^State:.*zombie' "/proc/$p/status" 2>/dev/null && left=1; done
        ((left == 0)) && return 0
        ((SECONDS >= end)) && return 1
        sleep 0.2
    done
}

down() {
    trap - EXIT
    local dir pid pids=()
    # sshd first: its sessions end (they are in the namespaces too, and go below if left).
    for dir in "$LAB_DIR"/h*; do
        [[ -f $dir/sshd.pid ]] || continue
        pid=$(cat "$dir/sshd.pid" 2>/dev/null || true)
        [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == sshd ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
    done
    # The daemons, politely: they stop their containers and their containerd.
    for dir in "$LAB_DIR"/h*; do
        [[ -f $dir/docker.pid ]] || continue
        pid=$(cat "$dir/docker.pid" 2>/dev/null || true)
        [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] || continue
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    done
    ((${#pids[@]} == 0)) || wait_gone 60 "${pids[@]}" || say "dockerd did not stop within 60s: killing the lab's processes"
    # Then whatever is left, by force.
    mapfile -t pids < <(lab_pids | sort -u)
    if ((${#pids[@]} > 0)); then
        kill -KILL "${pids[@]}" 2>/dev/null || true
        wait_gone 20 "${pids[@]}" || say "processes still running: ${pids[*]}"
    fi
    find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -path "*/$CGROUP" -type d 2>/dev/null |
        while read -r cg; do find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
    local ns
    # The machine's end of each veth first: deleting it removes both ends at once, while the end
    # left to a deleted namespace goes away only when the kernel gets round to it.
    local link
    for link in $(ip -o link | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -x "${PREFIX}h[0-9]v" || true); do
        ip link del "$link" 2>/dev/null || true
    done
    for ns in $(ip netns list | awk '{print $1}' | grep -x "$PREFIX-h[0-9]" || true); do ip netns del "$ns" || true; done
    while iptables -C FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null; do iptables -D FORWARD -i "$BR" -o "$BR" -j ACCEPT; done
    ip link del "$BR" 2>/dev/null || true
    # Containers' mounts (shm, bind mounts) live in the machine's mount namespace.
    if [[ -d $LAB_DIR ]]; then
        awk -v d="$LAB_DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
        rm -rf "$LAB_DIR"
    fi
}

gc() {
    local dir owner
    for dir in "$LAB_ROOT"/deployctl-lab-*; do
        [[ -f $dir/owner ]] || continue
        owner=$(sed -n 's/^LAB_OWNER=//p' "$dir/owner")
        [[ $owner =~ ^[0-9]+$ ]] || continue
        [[ -d /proc/$owner ]] && continue
        say "removing lab ${dir##*-} (its owner $owner has exited)"
        LAB_ID=${dir##*deployctl-lab-} bash "$0" down
    done
}

case ${1:-} in
up) shift; up "$@" ;;
env) env_lines ;;
down) down ;;
gc) gc ;;
*)
    sed -n '2,37p' "$0"
    exit 2
    ;;
esac
