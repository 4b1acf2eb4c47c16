#!/bin/sh
# devpop next-hop: the first init container of every module pod runs this script.
#
# It resolves the next hop's Service name (cluster DNS answers with the Service's ClusterIP)
# and writes the pod's hosts file: the hosts file this container was given (the kubelet's, with
# localhost and the pod's own name) plus one line `<address> next-hop`. The module's containers
# mount that file at /etc/hosts (the kubelet then does not mount its own), so `next-hop`
# resolves to the next hop's virtual IP in every container of the pod, with no applier.
#
# Contract (POSIX sh; needs `getent`, as in Alpine's musl-utils and glibc):
#   NEXT_HOP_SERVICE    the name to resolve, e.g. egress.<namespace>.svc.<cluster domain> (required)
#   NEXT_HOP_HOSTS_OUT  the hosts file to write, replaced atomically (required)
#   NEXT_HOP_HOSTS_IN   the hosts file to start from (default /etc/hosts)
#   NEXT_HOP_ATTEMPTS   how many times to try resolving, a second apart (default 60)
# Exit 0 once written; 1 with a message on stderr if the name never resolved (the kubelet
# restarts the init container with back-off, so a Service created later is still found).
set -euf
service="${NEXT_HOP_SERVICE:?NEXT_HOP_SERVICE: the next hop Service name to resolve}"
out="${NEXT_HOP_HOSTS_OUT:?NEXT_HOP_HOSTS_OUT: the hosts file to write}"
in="${NEXT_HOP_HOSTS_IN:-/etc/hosts}"
attempts="${NEXT_HOP_ATTEMPTS:-60}"
case "$attempts" in '' | *[!0-9]*) attempts=60 ;; esac
n=0
address=""
while :; do
  n=$((n + 1))
  # shellcheck disable=SC2046
  set -- $(getent hosts "$service" || true)
  address="${1:-}"
  case "$address" in
    '' | *[!0-9A-Fa-f:.]*) address="" ;;
    *) break ;;
  esac
  if [ "$n" -ge "$attempts" ]; then
    echo "next-hop: cannot resolve $service after $n attempts (is the Service there, and DNS reachable?)" >&2
    exit 1
  fi
  sleep 1
done
{
  cat "$in"
  printf '\n# devpop: the next hop, %s\n%s\tnext-hop\n' "$service" "$address"
} >"$out.tmp"
mv -f "$out.tmp" "$out"
echo "next-hop: $service is $address"
