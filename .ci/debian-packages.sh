#!/usr/bin/env bash
# The Debian packages the test suite runs for real, installed when missing (as root):
# slurm-wlm and munge (the cluster tests' one-node SLURM, .ci/slurm-up.sh) and
# openssh-server (stock OpenSSH as a relay, tests/test_relay.py).
set -euo pipefail
missing=()
command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || missing+=(munge)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "debian-packages: not root; the tests that need ${missing[*]} will skip" >&2
    exit 0
fi
echo "debian-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
