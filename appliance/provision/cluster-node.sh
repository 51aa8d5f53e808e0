#!/usr/bin/env bash
# Provision one VM of the Vagrant cluster (see Vagrantfile) with the operator's commands:
#   cluster-node.sh primary ADDR VIP/PREFIX IFACE   strongroom init --ha, start, join tokens
#   cluster-node.sh witness ADDR PRIMARY_ADDR       strongroom witness --join ...
#   cluster-node.sh standby ADDR PRIMARY_ADDR       strongroom join ..., start
# Join tokens travel through /vagrant/.strongroom (the project folder shared with the VMs).
set -euo pipefail
role="$1"; addr="$2"
src=/vagrant
share="$src/.strongroom"
name="$(hostname -s)"

install_strongroom() {
  export DEBIAN_FRONTEND=noninteractive
  bash "$src/appliance/provision/system-deps.sh" run
  apt-get install -y -q --no-install-recommends postgresql-15 iputils-arping iproute2 \
    nftables python3-venv >/dev/null
  # The node manages its own PostgreSQL; the distribution's cluster must not run.
  systemctl disable --now postgresql >/dev/null 2>&1 || true
  python3 -m venv /opt/strongroom
  /opt/strongroom/bin/pip install -q "$src"
  ln -sf /opt/strongroom/bin/strongroom /usr/local/bin/strongroom
  install -m 0644 "$src/appliance/units/strongroom.service" /etc/systemd/system/
  install -m 0644 "$src/appliance/units/strongroom-witness.service" /etc/systemd/system/
  install -d -m 0755 /etc/strongroom
  systemctl daemon-reload
}

wait_for() {  # wait_for FILE
  for _ in $(seq 1 600); do [ -s "$1" ] && return 0; sleep 1; done
  echo "timed out waiting for $1" >&2; exit 1
}

install_strongroom
case "$role" in
  primary)
    vip="$3"; iface="$4"
    if [ ! -f /var/lib/strongroom/cluster/node.json ]; then
      strongroom init --ha --advertise "$addr" --name "$name" --vip "$vip" --vip-interface "$iface"
    fi
    systemctl enable --now strongroom
    for _ in $(seq 1 120); do strongroom cluster status >/dev/null 2>&1 && break; sleep 1; done
    install -d -m 0700 "$share"
    for who in witness standby; do
      strongroom join-token > "$share/$who.token.tmp"
      mv "$share/$who.token.tmp" "$share/$who.token"
    done
    ;;
  witness|standby)
    primary="$3"
    wait_for "$share/$role.token"
    token="$(awk '/^token:/ {print $2}' "$share/$role.token")"
    ca_hash="$(awk '/^ca-hash:/ {print $2}' "$share/$role.token")"
    if [ "$role" = witness ]; then
      umask 077
      printf 'JOIN_ARGS="--join https://%s:7272 --token %s --ca-hash %s --advertise %s --name %s"\n' \
        "$primary" "$token" "$ca_hash" "$addr" "$name" > /etc/strongroom/witness.env
      systemctl enable --now strongroom-witness
    else
      if [ ! -f /var/lib/strongroom/cluster/node.json ]; then
        strongroom join "https://$primary:7272" --token "$token" --ca-hash "$ca_hash" \
          --advertise "$addr" --name "$name"
      fi
      systemctl enable --now strongroom
    fi
    rm -f "$share/$role.token"
    ;;
  *) echo "usage: $0 primary|witness|standby ADDR ..." >&2; exit 2 ;;
esac
echo "$name provisioned as $role"
