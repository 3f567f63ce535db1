#!/usr/bin/env bash
# System tools abdus's tests use: dciodvfy (Debian package dicom3tools) validates the DICOM we write.
set -euo pipefail
if command -v dciodvfy >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing dicom3tools (dciodvfy) with apt-get"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null
else
  echo "note: dciodvfy (dicom3tools) not found and cannot apt-get here; DICOM validation tests will be skipped" >&2
fi
