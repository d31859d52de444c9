#!/usr/bin/env bash
# Kernel TLS on a kernel that has it, for a machine whose kernel does not: boots Debian 12's
# cloud kernel (6.1, `tls` as a module) in QEMU (software emulation: no KVM needed) with a
# busybox initramfs holding this checkout's binaries, then
#   1. the transport's kTLS unit test (`kernel_tls_where_the_kernel_has_it`: the kernel seals
#      and opens a handed-off connection's records),
#   2. the server with KERNEL_TLS=auto, then =off, each under `loadgen --tls` (40 overlays and 40
#      spectators for 4 s), with the kernel's /proc/net/tls_stat before and after.
# Prints what the VM printed. Takes ~2 minutes; stops by itself (timeout 10 min).
#
#   tools/ktls-vm.sh
#
# Needs root for apt (qemu-system-x86, and downloads linux-image-*-cloud-amd64 and busybox-static
# into a temporary directory) and `cargo build --release --bin spectra-server --bin loadgen`;
# builds the transport's test binary itself.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-system-x86_64 >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86 >/dev/null
tests=$(cargo test --release -p spectra-transport --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])' | tail -n 1)
[ -x "$tests" ] || { echo "no transport test binary" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
image=$(apt-cache search --names-only '^linux-image-6\.[0-9.]+-[0-9]+-cloud-amd64$' | sort -V | tail -n 1 | cut -d' ' -f1)
apt-get download "$image" busybox-static >/dev/null 2>&1
mkdir k bb root
dpkg-deb -x "$image"_*.deb k
dpkg-deb -x busybox-static_*.deb bb
version=$(ls k/lib/modules)
bb/bin/busybox depmod -b k "$version"
mkdir -p root/{bin,proc,sys,dev,tmp,etc,lib64,lib/x86_64-linux-gnu,main,shared/kit/reference}
cp bb/bin/busybox root/bin/
for a in sh mount modprobe ip cat grep tr head sleep seq kill poweroff mkdir; do ln -s busybox "root/bin/$a"; done
cp -a k/lib/modules root/lib/
for bin in "$tests" "$OLDPWD/target/release/spectra-server" "$OLDPWD/target/release/loadgen"; do
  for lib in $(ldd "$bin" | awk '/=>/ {print $3}'); do cp -L "$lib" root/lib/x86_64-linux-gnu/; done
done
cp -L /lib64/ld-linux-x86-64.so.2 root/lib64/
cp "$tests" root/bin/transport-tests
cp "$OLDPWD/target/release/spectra-server" "$OLDPWD/target/release/loadgen" root/bin/
cp "$OLDPWD/../shared/kit/reference/match.replay" root/shared/kit/reference/
echo "127.0.0.1 localhost" >root/etc/hosts
cat >root/init <<'EOF'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
ip link set lo up
modprobe tls && echo "modprobe tls: ok"
modprobe gcm; modprobe aesni-intel; modprobe chacha20poly1305
echo "available ULPs: $(cat /proc/sys/net/ipv4/tcp_available_ulp)"
ulimit -l unlimited; ulimit -n 65536
cd /main
/bin/transport-tests --test-threads 1 kernel_tls --nocapture >/tmp/out 2>&1
echo "unit test exit $?"; grep -E "^test |kernel TLS" /tmp/out
stat() { echo "tls_stat: $(grep -E 'TlsCurr(Tx|Rx)Sw|TlsTxSw|TlsRxSw' /proc/net/tls_stat | tr -s ' \t\n' ' ')"; }
for kt in auto off; do
  mkdir -p /tmp/r-$kt
  INSECURE=false SERVER_KEY=/tmp/k.pem SERVER_CERT=/tmp/c.pem KERNEL_TLS=$kt /bin/spectra-server \
    --shards 1 --auth-key LGKEY --bind 127.0.0.1 --replay-dir /tmp/r-$kt >/tmp/server-$kt.log 2>&1 &
  pid=$!
  for i in $(seq 1 30); do grep -q ready /tmp/server-$kt.log && break; sleep 1; done
  echo "== KERNEL_TLS=$kt"; grep "tls: " /tmp/server-$kt.log | sed 's/.*INFO //'
  stat
  /bin/loadgen --key LGKEY --json --duration 4 --warmup 1 --overlays 40 --spectators 40 --tls --insecure \
    --metrics https://localhost:5101/metrics >/tmp/lg.out 2>&1
  echo "loadgen exit $?"
  grep '^{' /tmp/lg.out | tr ',' '\n' | grep -E '"valid"|"counts_agree"|"deliveries"|"drops"|"connect_failures"|"handshakes"'
  stat
  kill $pid; sleep 1
done
poweroff -f
EOF
chmod +x root/init
(cd root && find . | ../bb/bin/busybox cpio -o -H newc 2>/dev/null | gzip -1 >../initrd.gz)
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -m 3072 -smp 2 -nographic -no-reboot \
  -kernel "k/boot/vmlinuz-$version" -initrd initrd.gz -append "console=ttyS0 quiet panic=-1" 2>&1 |
  grep -v '^\[' | sed -n '/modprobe tls/,$p'
