#!/usr/bin/env bash
# Installs Postfix's `smtp-sink` (an SMTP server that accepts and discards mail, the relay the
# benchmark sends to) WITHOUT installing the Postfix mail service: the .deb is downloaded and
# unpacked into a cache folder, never passed to dpkg -i, so no daemon, user or config appears.
# Prints the path of a wrapper that runs it with the bundled libraries; quiet otherwise.
# Idempotent: a second run only prints the path.
#
#   sink=$(scripts/smtp-sink.sh) && "$sink" -u nobody -c 127.0.0.1:2525 1000
#
# (As root, smtp-sink refuses to run without `-u <unprivileged user>`.)
# The cache folder is $SQUEEZE_SMTP_SINK_DIR, default ${XDG_CACHE_HOME:-$HOME/.cache}/squeeze/smtp-sink;
# squeeze-bench looks for the wrapper in the same place.
set -euo pipefail

dir="${SQUEEZE_SMTP_SINK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/squeeze/smtp-sink}"
wrapper="$dir/smtp-sink"
root="$dir/root"

if [[ -x "$wrapper" && -x "$root/usr/sbin/smtp-sink" ]]; then
  echo "$wrapper"
  exit 0
fi

mkdir -p "$dir"
log="$dir/install.log"
: >"$log"
fail() {
  echo "smtp-sink.sh: $1 (details in $log)" >&2
  tail -n 20 "$log" >&2 || true
  exit 1
}

# Downloads into the current folder; apt's sandbox user may not write to it, which apt only
# warns about. `apt-get update` runs only when the package lists do not know postfix yet
# (a fresh machine), since it is slow and needs the network.
cd "$dir"
rm -f postfix_*.deb
if ! apt-get download postfix >>"$log" 2>&1; then
  apt-get update >>"$log" 2>&1 || fail "apt-get update failed"
  apt-get download postfix >>"$log" 2>&1 || fail "apt-get download postfix failed"
fi
deb=$(ls -1 postfix_*.deb 2>/dev/null | head -n 1)
[[ -n "$deb" ]] || fail "apt-get download postfix left no .deb"

rm -rf "$root.tmp"
dpkg -x "$deb" "$root.tmp" >>"$log" 2>&1 || fail "dpkg -x $deb failed"
[[ -x "$root.tmp/usr/sbin/smtp-sink" ]] || fail "$deb has no usr/sbin/smtp-sink"
rm -rf "$root"
mv "$root.tmp" "$root"
rm -f "$deb"

# The binary links against Postfix's private libraries in usr/lib/postfix.
cat >"$wrapper.tmp" <<WRAPPER
#!/bin/sh
LD_LIBRARY_PATH="$root/usr/lib/postfix\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$root/usr/sbin/smtp-sink" "\$@"
WRAPPER
chmod +x "$wrapper.tmp"
mv "$wrapper.tmp" "$wrapper"

# smtp-sink without arguments prints its usage and exits 1: proves the libraries resolve.
if ! "$wrapper" >>"$log" 2>&1 && ! grep -q "usage:" "$log"; then
  fail "the unpacked smtp-sink does not run"
fi
echo "$wrapper"
