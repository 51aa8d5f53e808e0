#!/usr/bin/env bash
# Install the Debian packages Strongroom needs, only those that are missing.
#   system-deps.sh run    what `make run` needs (python3-venv)
#   system-deps.sh test   what `make test` needs (PostgreSQL 15, slapd, sshd, Chromium, wrk, ...)
set -euo pipefail
what="${1:-run}"

pkgs=()
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then pkgs+=(python3-venv); fi
if [ "$what" = test ]; then
  for p in postgresql-15 slapd ldap-utils openssh-server chromium iputils-arping iproute2 nftables \
           fonts-dejavu-core procps util-linux vagrant wrk; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || pkgs+=("$p")
  done
fi
[ ${#pkgs[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${pkgs[*]}; run as root or install them with apt-get" >&2
  exit 1
fi
echo "installing system packages: ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
# slapd and PostgreSQL must not start system-wide daemons of their own.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
