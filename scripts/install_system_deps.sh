#!/usr/bin/env bash
# System tools abdus's tests use:
#   dciodvfy (Debian package dicom3tools) validates the DICOM we write;
#   echoscu, storescu, storescp (dcmtk) talk DICOM to `abdus serve`;
#   Orthanc (orthanc) is the real PACS of the `abdus serve` round-trip test;
#   chromium is the browser the `abdus review` page is tested in (through Playwright, which
#   launches this chromium and downloads no browser of its own).
# Installs only what is missing; quiet and idempotent. The tests start their own Orthanc with
# their own configuration and never rely on the system service the package may start.
set -euo pipefail

# "command:package" pairs.
tools=("dciodvfy:dicom3tools" "echoscu:dcmtk" "storescu:dcmtk" "storescp:dcmtk" "Orthanc:orthanc"
  "chromium:chromium")
missing=()
for pair in "${tools[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 && continue
  package="${pair#*:}"
  [[ " ${missing[*]-} " == *" $package "* ]] || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get"
  log="$(mktemp)"
  # apt's chatter (debconf notes included) goes to a log that is shown only if apt fails.
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    # Say it loudly but let setup finish: the tests that need a missing tool skip and name it.
    cat "$log" >&2; rm -f "$log"
    echo "warning: apt-get could not install ${missing[*]};" \
      "the tests that need them will be skipped" >&2
    exit 0
  fi
  rm -f "$log"
else
  echo "note: ${missing[*]} not found and cannot apt-get here;" \
    "the DICOM validation, DICOM-network and browser tests that need them will be skipped" >&2
fi
