#!/bin/sh
# Container entrypoint: runs keeld with the arguments given. When
# KEEL_CLUSTER names a cluster config, it adds
#   --cluster $KEEL_CLUSTER --node-id ID
# where ID is $KEEL_NODE_ID, or else the host name (a StatefulSet pod's name:
# keel-0, keel-1, ...). It must be a member id in that config. It also adds
#   --join
# when ID ends in -N and N >= $KEEL_JOIN_ORDINAL: pods added after the
# cluster was created join it (`keel cluster add-node`) instead of placing
# agents on their own. --join is ignored once the node holds a shard map.
set -eu

if [ -n "${KEEL_CLUSTER:-}" ]; then
  id=${KEEL_NODE_ID:-$(cat /proc/sys/kernel/hostname)}
  set -- "$@" --cluster "$KEEL_CLUSTER" --node-id "$id"
  ordinal=${id##*-}
  case $ordinal in
    "$id" | "" | *[!0-9]*) ;;
    *)
      if [ -n "${KEEL_JOIN_ORDINAL:-}" ] && [ "$ordinal" -ge "$KEEL_JOIN_ORDINAL" ]; then
        set -- "$@" --join
      fi
      ;;
  esac
fi
exec /usr/local/bin/keeld "$@"
