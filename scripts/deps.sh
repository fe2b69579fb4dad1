#!/usr/bin/env bash
# Installs what paddock's sandboxes and tests use from Debian's packages,
# idempotently: nothing is fetched when everything is already there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# python3 and the usual tools are what the built-in "host" variant offers
# inside sandboxes; procps and iproute2 are used by tests (ps, ip);
# python3-venv holds the SDK suite's virtualenv; docker-registry is the
# image tests' local registry and busybox-static their images' userland;
# e2fsprogs makes, checks and resizes volumes' ext4 filesystems (util-linux
# loop-mounts them); nftables enforces VMs' egress policies; knot and
# knot-dnsutils (kdig) are the network tests' DNS server for the outside
# zone and for custom domains' dynamic updates; openssh-client logs in
# through the SSH gateway in the gateway tests; docker.io is the real
# engine (dockerd, the docker CLI) the docker provider's tests start.
# lxcfs serves each container sandbox its own /proc/meminfo, cpuinfo,
# stat, uptime and loadavg; e2fsprogs also formats sandboxes' disks.
# bubblewrap is the benches' floor (`bwrap --unshare-all`). openssl makes
# the certificates of the SDK suite's vault-services upstream. postgresql
# is the shared store the tests also run on (scripts/postgres.sh starts a
# throwaway cluster; the package's own cluster is not started).
packages=(python3 python3-venv procps iproute2 util-linux coreutils bash ca-certificates docker-registry busybox-static e2fsprogs nftables knot knot-dnsutils openssh-client docker.io lxcfs bubblewrap openssl postgresql)
# The microvm provider: qemu (its microvm machine, and virtiofsd from
# qemu-system-common) and Debian's kernel with its modules as the guest's.
# Without their recommends: firmware, GUIs and an initramfs generator the
# guest does not use. fuse2fs reads a microVM's own disk for a snapshot
# in user space (the host kernel never mounts a guest's file system).
# The code interpreter of the E2B surface: a Jupyter kernel with
# matplotlib, which sandboxes of the default variant see in the host's
# /usr (ipykernel, jupyter_client, matplotlib and its inline backend).
# Browser sessions of the VM API: Debian's Chromium, which sandboxes of
# the default variant see in the host's /usr (fonts-dejavu-core: text in
# their screenshots). The built-in devbox templates: NumPy and pandas
# (python-data-science), Node.js (node-dev). Computer-use desktops: a
# display (xvfb), a window manager (openbox), VNC (x11vnc), noVNC and
# websockify, xdotool (mouse, keyboard), ffmpeg (screenshots,
# recordings), xsetroot (x11-xserver-utils). npm fetches the dashboard's
# pinned xterm.js (see the end).
bare_packages=(qemu-system-x86 linux-image-amd64 fuse2fs python3-ipykernel python3-jupyter-client python3-matplotlib python3-matplotlib-inline chromium fonts-dejavu-core python3-numpy python3-pandas nodejs xvfb openbox x11vnc novnc websockify xdotool ffmpeg x11-xserver-utils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
bare_missing=()
for p in "${bare_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || bare_missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] || [ "${#bare_missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  # Nothing installed here may start as a service (a system dockerd
  # would rewrite the host's firewall): the tests start what they use.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d > /dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $sudo apt-get update -qq
  if [ "${#missing[@]}" -gt 0 ]; then
    $sudo apt-get install -y -qq "${missing[@]}"
  fi
  if [ "${#bare_missing[@]}" -gt 0 ]; then
    $sudo apt-get install -y -qq --no-install-recommends "${bare_missing[@]}"
  fi
fi

# The dashboard's terminal: xterm.js and its fit addon at the versions
# pinned in the lock file, which crates/paddock-api/build.rs builds into
# the binary. Only when the lock file changed since the last install.
vendor="$(cd "$(dirname "$0")/.." && pwd)/crates/paddock-api/ui/vendor"
stamp="$vendor/node_modules/.paddock-lock"
if ! cmp -s "$vendor/package-lock.json" "$stamp"; then
  # Debian's nodejs comes without npm; NodeSource's carries its own.
  if ! command -v npm > /dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends npm
  fi
  (cd "$vendor" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  cp "$vendor/package-lock.json" "$stamp"
fi
