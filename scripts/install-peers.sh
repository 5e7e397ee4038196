#!/usr/bin/env bash
# Installs the real peers the tests run against, only when they are missing:
# SIPp (Debian package sip-tester), tshark and rtpengine (rtpengine-daemon).
# Non-interactive, so CI can run it.
set -euo pipefail
missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
command -v rtpengine >/dev/null 2>&1 || [ -x /usr/bin/rtpengine ] || missing+=(rtpengine-daemon)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing test peers: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The tests start their own rtpengine on loopback; the packaged service must not start (it would
# take ports 30000-40000 and 2223-2225 and load iptables rules). A policy-rc.d that answers 101
# ("action forbidden") stops invoke-rc.d and deb-systemd-invoke from starting it during install.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *" rtpengine-daemon "* ]]; then
    # ... and it must not start at the next boot either.
    if command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable rtpengine-daemon.service >/dev/null 2>&1 || true
    elif command -v update-rc.d >/dev/null 2>&1; then
        $SUDO update-rc.d rtpengine-daemon disable >/dev/null 2>&1 || true
    fi
fi
