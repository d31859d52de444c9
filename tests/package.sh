#!/usr/bin/env bash
# The Debian package (#18): builds it with cargo-deb from the test build, checks its contents,
# extracts it, runs the extracted binary, checks that the settings file names every setting the
# binary knows (and nothing else), checks the maintainer scripts' syntax and verifies the
# systemd unit with systemd-analyze (any warning fails). Run by scripts/test.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "package test: $*" >&2; exit 1; }

# The binaries of the test build (`--profile dev --no-build`: no second, release build in CI;
# `scripts/package` builds the release package).
cargo deb --profile dev --no-build --fast -o "$work/spectra-server.deb" >/dev/null 2>"$work/deb.log" \
  || { cat "$work/deb.log" >&2; fail "cargo deb failed"; }

contents=$(dpkg-deb -c "$work/spectra-server.deb")
for path in ./usr/bin/spectra-server ./usr/bin/spectra-replay \
  ./usr/lib/systemd/system/spectra-server.service ./etc/spectra-server/spectra-server.env \
  ./usr/share/doc/spectra-server/README.md; do
  grep -q " $path\$" <<<"$contents" || fail "$path missing from the package"
done
grep -q -- '-rw-r----- 0/0 .* ./etc/spectra-server/spectra-server.env$' <<<"$contents" \
  || fail "the settings file is not 0640"
dpkg-deb -f "$work/spectra-server.deb" Package | grep -qx spectra-server || fail "package name"
dpkg-deb --ctrl-tarfile "$work/spectra-server.deb" | tar -x -O ./conffiles | grep -qx /etc/spectra-server/spectra-server.env \
  || fail "the settings file is not a conffile (an upgrade would overwrite the operator's settings)"

root="$work/root"
dpkg-deb -x "$work/spectra-server.deb" "$root"
help=$("$root/usr/bin/spectra-server" --help) || fail "the extracted binary's --help failed"
grep -q "TLS_RELOAD_CHECK_SECONDS" <<<"$help" || fail "--help does not list the settings"
"$root/usr/bin/spectra-replay" --help >/dev/null || fail "spectra-replay --help failed"

# The settings file: every setting of --help is there, every line is a known setting.
env_file=deploy/debian/spectra-server.env
known=$(grep -o 'env: [A-Z_]*' <<<"$help" | sed 's/env: //'; printf 'RUST_LOG\nLOG_FORMAT\n')
while read -r name; do
  grep -Eq "^#?$name=" "$env_file" || fail "$name is missing from $env_file"
done <<<"$known"
while read -r line; do
  name=${line#\#}; name=${name%%=*}
  grep -qx "$name" <<<"$known" || fail "$env_file names an unknown setting: $line"
done < <(grep -E '^#?[A-Z_]+=' "$env_file")

dpkg-deb -e "$work/spectra-server.deb" "$work/control"
for script in postinst postrm prerm; do
  [ -f "$work/control/$script" ] || fail "no $script"
  sh -n "$work/control/$script" || fail "$script is not valid sh"
done
grep -q "useradd --system" "$work/control/postinst" || fail "postinst does not create the user"
grep -q "deb-systemd-helper" "$work/control/postinst" || fail "postinst does not enable the unit"

# The unit as installed, with ExecStart pointing at the extracted binary (systemd-analyze checks
# that it is executable); systemd-analyze exits 0 on warnings, so any output fails.
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$work/verify"
  sed "s|/usr/bin/spectra-server|$root/usr/bin/spectra-server|" \
    "$root/usr/lib/systemd/system/spectra-server.service" >"$work/verify/spectra-server.service"
  out=$(systemd-analyze verify "$work/verify/spectra-server.service" 2>&1) || fail "systemd-analyze: $out"
  [ -z "$out" ] || fail "systemd-analyze: $out"
else
  echo "package test: systemd-analyze not installed; unit not verified" >&2
fi
echo "package test: ok ($(du -h "$work/spectra-server.deb" | cut -f1) package; contents, --help, settings, scripts, unit verified)"
