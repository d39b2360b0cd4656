#!/usr/bin/env bash
# Makes sure the system tools the test suites and benchmarks drive are installed: the CNCF distribution
# registry, skopeo and umoci (the oracles), openssl and htpasswd (TLS and basic-auth set-ups).
# Installs them with apt when running as root; otherwise fails naming what is missing. Never skips.
# Usage: ensure-tools.sh [--bench]   (--bench adds containerd for the `ctr` comparison)
set -euo pipefail

declare -A package_of=(
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [umoci]=umoci
  [openssl]=openssl
  [htpasswd]=apache2-utils
  [curl]=curl
  [tar]=tar
  [mkfifo]=coreutils
)
if [[ "${1:-}" == "--bench" ]]; then
  package_of[containerd]=containerd
  package_of[ctr]=containerd
  package_of[hyperfine]=hyperfine
fi

missing_packages=()
missing_commands=()
for command in "${!package_of[@]}"; do
  if ! command -v "$command" >/dev/null 2>&1; then
    missing_commands+=("$command")
    missing_packages+=("${package_of[$command]}")
  fi
done

if [[ ${#missing_commands[@]} -eq 0 ]]; then
  exit 0
fi

mapfile -t unique_packages < <(printf '%s\n' "${missing_packages[@]}" | sort -u)
if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-tools: missing ${missing_commands[*]}; install the Debian packages: ${unique_packages[*]}" >&2
  echo "ensure-tools: (run as root with apt-get available and this script installs them itself)" >&2
  exit 1
fi

echo "ensure-tools: installing ${unique_packages[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq "${unique_packages[@]}" >&2

for command in "${missing_commands[@]}"; do
  if ! command -v "$command" >/dev/null 2>&1; then
    echo "ensure-tools: '$command' is still missing after installing ${unique_packages[*]}" >&2
    exit 1
  fi
done
