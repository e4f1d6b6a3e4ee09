#!/bin/sh
# netns.sh: the private network of the partition tests (tests/reliability/
# partition_tests.erl, kill_storm_tests.erl): N network namespaces on one
# bridge, made, cut, healed and removed by name, touching nothing else.
#
#   netns.sh can                 exit 0 if namespaces can be made here, else print why
#   netns.sh up TAG N            namespaces cnb<TAG>n1..N, each with eth0 at
#                                10.213.7.(1+i)/24 on bridge cnb<TAG>br (no host address)
#   netns.sh down TAG            removes every namespace, veth and bridge of TAG
#   netns.sh cut TAG I           link of namespace I down (I is cut off from all)
#   netns.sh heal TAG I          link of namespace I up again
#   netns.sh block TAG I ADDR    namespace I drops what it sends to ADDR (blackhole route)
#   netns.sh unblock TAG I ADDR  undoes block
#   netns.sh reset TAG           every link of TAG up, every blackhole route gone
#   netns.sh ns TAG I            prints the namespace name
#   netns.sh addr I              prints the address of namespace I
# TAG: letters and digits, at most 6 (interface names are at most 15 bytes).
set -u
PREFIX=10.213.7

ns() { echo "cnb${1}n${2}"; }
hostveth() { echo "cnb${1}h${2}"; }
bridge() { echo "cnb${1}br"; }

need_tag() {
  case "$1" in
    ''|*[!A-Za-z0-9]*) echo "netns.sh: bad TAG '$1'" >&2; exit 2 ;;
  esac
  [ ${#1} -le 6 ] || { echo "netns.sh: TAG '$1' longer than 6" >&2; exit 2; }
}

case "${1:-}" in
  can)
    [ "$(id -u)" = 0 ] || { echo "not root (uid $(id -u))"; exit 1; }
    command -v ip >/dev/null 2>&1 || { echo "no 'ip' command (iproute2)"; exit 1; }
    probe="cnbprobe$$"
    if ! err=$(ip netns add "$probe" 2>&1); then echo "ip netns add failed: $err"; exit 1; fi
    ip netns del "$probe"
    if ! err=$(ip link add "cnbprobe$$" type bridge 2>&1); then echo "ip link add bridge failed: $err"; exit 1; fi
    ip link del "cnbprobe$$"
    exit 0 ;;
  up)
    need_tag "$2"; tag=$2; n=$3
    # Whatever fails part-way is undone by the caller's `down`.
    set -e
    ip link add "$(bridge "$tag")" type bridge
    ip link set "$(bridge "$tag")" up
    i=1
    while [ "$i" -le "$n" ]; do
      s=$(ns "$tag" "$i"); h=$(hostveth "$tag" "$i")
      ip netns add "$s"
      ip link add "$h" type veth peer name "cnb${tag}p${i}"
      ip link set "cnb${tag}p${i}" netns "$s"
      ip -n "$s" link set "cnb${tag}p${i}" name eth0
      ip -n "$s" addr add "$PREFIX.$((1 + i))/24" dev eth0
      ip -n "$s" link set lo up
      ip -n "$s" link set eth0 up
      ip link set "$h" master "$(bridge "$tag")"
      ip link set "$h" up
      i=$((i + 1))
    done ;;
  down)
    need_tag "$2"; tag=$2
    # Our names only: namespaces cnb<TAG>n*, links cnb<TAG>h* and the bridge.
    for s in $(ip netns list | awk '{print $1}' | grep -E "^cnb${tag}n[0-9]+$"); do
      ip netns del "$s"
    done
    for l in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^cnb${tag}(h[0-9]+|br)$"); do
      ip link del "$l" 2>/dev/null
    done
    exit 0 ;;
  cut|heal)
    need_tag "$2"
    if [ "$1" = cut ]; then st=down; else st=up; fi
    exec ip link set "$(hostveth "$2" "$3")" "$st" ;;
  block)
    need_tag "$2"; exec ip -n "$(ns "$2" "$3")" route add blackhole "$4/32" ;;
  unblock)
    need_tag "$2"; exec ip -n "$(ns "$2" "$3")" route del blackhole "$4/32" ;;
  reset)
    need_tag "$2"; tag=$2
    for s in $(ip netns list | awk '{print $1}' | grep -E "^cnb${tag}n[0-9]+$"); do
      ip link set "$(hostveth "$tag" "${s##*n}")" up
      ip -n "$s" route flush type blackhole
    done
    exit 0 ;;
  ns)
    need_tag "$2"; ns "$2" "$3" ;;
  addr)
    echo "$PREFIX.$((1 + $2))" ;;
  *)
    echo "usage: netns.sh can | up TAG N | down TAG | cut|heal TAG I | block|unblock TAG I ADDR | reset TAG | ns TAG I | addr I" >&2
    exit 2 ;;
esac
