#!/bin/sh
# Installs Chromium (the Debian package), which tests/test_report_html.py runs headless to open
# the HTML reports. Uses sudo only when not root and sudo exists.
set -e
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then as_root=sudo; else as_root=; fi
$as_root apt-get update -qq
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
