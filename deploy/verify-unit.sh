#!/usr/bin/env bash
# Checks deploy/whipgate.service with `systemd-analyze verify`: the unit as shipped, with its
# ExecStart pointed at a built binary (verify wants the command to exist), in a scratch dir.
#
#   deploy/verify-unit.sh [path/to/whipgate]     default: target/debug/whipgate
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:-target/debug/whipgate}")"
[ -x "$bin" ] || { echo "verify-unit: no binary at $bin (cargo build first)" >&2; exit 2; }
command -v systemd-analyze >/dev/null || { echo "verify-unit: systemd-analyze missing (apt-get install systemd)" >&2; exit 2; }
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
sed "s|^ExecStart=/usr/local/bin/whipgate|ExecStart=$bin|" deploy/whipgate.service > "$scratch/whipgate.service"
# Warnings and errors both fail the check; verify prints nothing for a clean unit.
out="$(systemd-analyze verify --man=no "$scratch/whipgate.service" 2>&1 || echo "exit status $?")"
if [ -n "$out" ]; then
  echo "$out" >&2
  exit 1
fi
echo "verify-unit: deploy/whipgate.service is clean"
