#!/usr/bin/env bash
# Where a process's kernel time goes, without `perf`: counts kernel tracepoint events (tracefs)
# raised in the context of every thread of PID for SECONDS, and the mean time of each system call
# (paired sys_enter/sys_exit), each also per `sock_send_length` event (one per successful send on
# a socket, i.e. per delivery for a fan-out server). Run it against the server and against
# `fanout-baseline` under the same load to see what the server's kernel does per delivery that
# the baseline's does not. Needs root and tracefs; leaves tracing off and the event set empty.
#
#   tools/kernel-events.sh PID SECONDS [durations]
#     durations: trace only the system calls (less overhead; the per-call times are then the
#     ones to read). Without it: the full event set, for the counts.
set -euo pipefail
pid=$1 secs=$2 mode=${3:-counts}
t=/sys/kernel/tracing
[ -d "$t/events" ] || mount -t tracefs nodev "$t"
out=$(mktemp)
cleanup() {
  echo 0 >"$t/tracing_on"
  echo >"$t/set_event"
  echo >"$t/set_event_pid"
  rm -f "$out"
}
trap cleanup EXIT
echo 0 >"$t/tracing_on"
echo >"$t/set_event"
echo 131072 >"$t/buffer_size_kb"
echo >"$t/trace"
ls "/proc/$pid/task" | tr '\n' ' ' >"$t/set_event_pid"
events="raw_syscalls:sys_enter raw_syscalls:sys_exit"
if [ "$mode" != durations ]; then
  events+=" sock:sock_send_length sock:sock_recv_length sock:sk_data_ready"
  events+=" tcp:tcp_sendmsg_locked tcp:tcp_probe tcp:tcp_rcv_space_adjust tcp:tcp_rcvbuf_grow"
  events+=" skb:consume_skb skb:kfree_skb skb:skb_copy_datagram_iovec"
  events+=" kmem:kmalloc kmem:kfree kmem:kmem_cache_alloc kmem:kmem_cache_free kmem:mm_page_alloc kmem:mm_page_free"
  events+=" exceptions:page_fault_user exceptions:page_fault_kernel"
  events+=" irq:softirq_entry irq:irq_handler_entry ipi:ipi_send_cpu ipi:ipi_send_cpumask"
  events+=" sched:sched_switch sched:sched_wakeup timer:hrtimer_start timer:hrtimer_expire_entry"
  events+=" io_uring:io_uring_submit_req io_uring:io_uring_complete io_uring:io_uring_poll_arm"
  events+=" io_uring:io_uring_task_add io_uring:io_uring_task_work_run io_uring:io_uring_cqring_wait"
  events+=" napi:napi_poll net:net_dev_xmit net:netif_rx"
else
  events+=" sock:sock_send_length"
fi
for e in $events; do echo "$e" >>"$t/set_event" 2>/dev/null || true; done
echo 1 >"$t/tracing_on"
sleep "$secs"
echo 0 >"$t/tracing_on"
cat "$t/trace" >"$out"
python3 - "$out" "$secs" <<'PY'
import collections, re, sys
counts = collections.Counter()
calls = collections.defaultdict(lambda: [0, 0.0])  # syscall nr -> [n, total s]
open_calls = {}
lost = 0
line_re = re.compile(r"^\s*(.+)-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+):\s+(\w+):\s*(.*)$")
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("#"):
        if "entries-in-buffer" in line:
            m = re.search(r"entries-in-buffer/entries-written: (\d+)/(\d+)", line)
            if m:
                lost = int(m.group(2)) - int(m.group(1))
        continue
    m = line_re.match(line)
    if not m:
        continue
    tid, ts, ev, rest = m.group(2), float(m.group(3)), m.group(4), m.group(5)
    counts[ev] += 1
    if ev == "sys_enter":
        nr = rest.split()[1] if rest.startswith("NR") else "?"
        open_calls[tid] = (nr, ts)
    elif ev == "sys_exit" and tid in open_calls:
        nr, t0 = open_calls.pop(tid)
        calls[nr][0] += 1
        calls[nr][1] += ts - t0
sends = counts.get("sock_send_length", 0) or 1
names = {"44": "sendto", "1": "write", "45": "recvfrom", "0": "read", "426": "io_uring_enter",
         "324": "membarrier", "232": "epoll_wait", "20": "writev", "46": "sendmsg", "35": "nanosleep",
         "230": "clock_nanosleep", "202": "futex", "7": "poll", "228": "clock_gettime"}
print(f"window {sys.argv[2]} s, sends (sock_send_length) {counts.get('sock_send_length', 0)}, events lost {lost}")
print(f"{'event':28} {'count':>10} {'per send':>10}")
for ev, n in counts.most_common():
    print(f"{ev:28} {n:10} {n / sends:10.3f}")
print(f"\n{'system call':20} {'calls':>9} {'per send':>9} {'mean µs':>9} {'total ms':>9} {'µs per send':>12}")
for nr, (n, tot) in sorted(calls.items(), key=lambda kv: -kv[1][1]):
    print(f"{names.get(nr, 'nr ' + nr):20} {n:9} {n / sends:9.3f} {tot / n * 1e6:9.2f} {tot * 1e3:9.1f} {tot / sends * 1e6:12.3f}")
PY
