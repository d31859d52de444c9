# Sourced by the tools/bench-*.sh scripts: a private network namespace (loopback only) that is
# deleted when the script exits, after ending the PIDs the script put in `pids`.
#
#   source tools/lib/netns.sh; netns_create NAME   → sets $ns
#   pids+=("$pid")                                  → ended (SIGTERM) on exit
#   NETDEV_BACKLOG=N                                → net.core.netdev_max_backlog is N while the
#                                                     script runs (machine-wide; restored on exit)
ns=""
pids=()
backlog_was=""
netns_cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  if [ -n "$ns" ]; then ip netns del "$ns" 2>/dev/null || true; fi
  if [ -n "$backlog_was" ]; then echo "$backlog_was" > /proc/sys/net/core/netdev_max_backlog; fi
}
netns_create() {
  ns="$1-$$"
  ip netns add "$ns"
  trap netns_cleanup EXIT
  ip netns exec "$ns" ip link set lo up
  # RPS_CPUS=MASK (hex CPU mask, e.g. 2 for CPU 1): the receiving side of loopback TCP runs on
  # those CPUs instead of on the sender's (see BENCHMARKS.md, "Who pays for the receiver").
  if [ -n "${RPS_CPUS:-}" ]; then
    ip netns exec "$ns" sh -c "echo $RPS_CPUS > /sys/class/net/lo/queues/rx-0/rps_cpus"
  fi
  # NETDEV_BACKLOG=N: a CPU's input backlog holds N packets (default 1000). A burst of sends to
  # thousands of loopback sockets steered to one CPU overflows 1000: the drops cost
  # retransmissions and delay those frames by the retransmission timer (loadgen reports
  # `backlog_drops` and `tcp_retransmits`). The setting is not per namespace: it is put back
  # when the script ends.
  if [ -n "${NETDEV_BACKLOG:-}" ]; then
    backlog_was=$(cat /proc/sys/net/core/netdev_max_backlog)
    echo "$NETDEV_BACKLOG" > /proc/sys/net/core/netdev_max_backlog
  fi
  ulimit -n 20000 2>/dev/null || true
}
