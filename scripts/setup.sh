#!/usr/bin/env bash
# Install what twelve needs to build, test and benchmark on Debian 12.
#
#   scripts/setup.sh              install missing tools (fast no-op when all present)
#   scripts/setup.sh --services   also make sure PostgreSQL, MariaDB, Redis and
#                                 RabbitMQ are running (scripts/services.sh)
#
# Runs as root, or through sudo otherwise. Idempotent: apt-get update and
# apt-get install run only when something is missing. nginx and supervisor are
# installed for the benchmarks, prometheus for the observability tests, etcd and a
# kube-apiserver built from Debian's source for the k8s tests; none of them is ever
# started or enabled as a system service.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
with_services=0
for arg in "$@"; do
  case "$arg" in
    --services) with_services=1 ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "setup: must run as root (or have sudo)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# "test to run" -> Debian package providing it
checks=(
  "command -v go:golang-go"
  "command -v wrk:wrk"
  "command -v hyperfine:hyperfine"
  "test -x /usr/sbin/nginx:nginx"
  "command -v supervisord:supervisor"
  "command -v curl:curl"
  "command -v openssl:openssl"
  "command -v pebble:pebble"
  "command -v psql:postgresql-client"
  "command -v jq:jq"
  "command -v node:nodejs"
  "command -v npm:npm"
  "command -v javac:openjdk-17-jdk-headless"
  # Spring Boot packs: mvn package offline against Debian's Maven repository
  # (/usr/share/maven-repo): the default lifecycle's plugins, fat-jar plugins, and the
  # library examples/spring-boot-maven uses
  "command -v mvn:maven"
  "command -v mh_installpom:maven-repo-helper"
  "test -d /usr/share/maven-repo/org/apache/maven/plugins/maven-resources-plugin/3.3.0:libmaven-resources-plugin-java"
  "test -d /usr/share/maven-repo/org/apache/maven/plugins/maven-compiler-plugin/3.10.1:libmaven-compiler-plugin-java"
  "test -d /usr/share/maven-repo/org/apache/maven/plugins/maven-surefire-plugin/2.22.3:libsurefire-java"
  "test -d /usr/share/maven-repo/org/apache/maven/plugins/maven-jar-plugin/3.3.0:libmaven-jar-plugin-java"
  "test -d /usr/share/maven-repo/org/apache/maven/plugins/maven-install-plugin:libmaven-install-plugin-java"
  "test -d /usr/share/maven-repo/org/apache/maven/plugins/maven-shade-plugin:libmaven-shade-plugin-java"
  "test -d /usr/share/maven-repo/org/apache/maven/plugins/maven-assembly-plugin:libmaven-assembly-plugin-java"
  "test -d /usr/share/maven-repo/org/apache/commons/commons-lang3/3.12.0:libcommons-lang3-java"
  "command -v chromium:chromium"
  "command -v prometheus:prometheus"
  # promtool (check rules/config) comes with Debian's prometheus package
  "command -v promtool:prometheus"
  "dpkg-query -W -f='\${Status}' python3-venv 2>/dev/null | grep -q 'ok installed':python3-venv"
  # the real Kubernetes API server of the k8s tests (scripts/kube-apiserver.sh)
  "command -v etcd:etcd-server"
  "command -v rsync:rsync"
  "command -v make:make"
  # twelve pack --oci and its tests: base layers, unpack, run, push
  "command -v mmdebstrap:mmdebstrap"
  "command -v umoci:umoci"
  "command -v runc:runc"
  "command -v skopeo:skopeo"
  "command -v docker-registry:docker-registry"
)

missing=()
for entry in "${checks[@]}"; do
  test_cmd=${entry%:*}
  pkg=${entry##*:}
  if ! bash -c "$test_cmd" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  for pkg in "${missing[@]}"; do echo "setup: installing $pkg"; done
  # Keep package maintainer scripts from starting nginx/supervisor.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  cleanup() { if [ "$created_policy" = 1 ]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup EXIT
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  cleanup
  trap - EXIT
else
  echo "setup: all tools already installed"
fi

# nginx, supervisor, prometheus, etcd and the registry are for benchmarks and tests only: never leave them enabled.
for svc in nginx supervisor prometheus prometheus-node-exporter etcd docker-registry; do
  if [ -e "/etc/init.d/$svc" ] && command -v update-rc.d >/dev/null 2>&1; then
    "${SUDO[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
done

# The venvs twelve builds use the python3 on PATH (pyenv CPython here).
venv_probe=$(mktemp -d)
if python3 -m venv --without-pip "$venv_probe/v" >/dev/null 2>&1 && python3 -c 'import ensurepip' >/dev/null 2>&1; then
  rm -rf "$venv_probe"
else
  rm -rf "$venv_probe"
  echo "setup: '$(command -v python3) -m venv' cannot create a virtual environment with pip;" >&2
  echo "setup: install the venv/ensurepip modules for that interpreter (Debian: python3-venv)" >&2
  exit 1
fi

# uv (PyPI), which twelve builds Python virtual environments with (pip when it is missing).
# Linked into /usr/local/bin, so that it is found without pyenv's shims too.
if [ ! -x /usr/local/bin/uv ]; then
  if ! python3 -c 'import uv' >/dev/null 2>&1; then
    echo "setup: installing uv (PyPI)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore uv
  fi
  uv_bin=$(python3 -c 'import uv; print(uv.find_uv_bin())')
  "${SUDO[@]}" ln -sf "$uv_bin" /usr/local/bin/uv
fi

# moto (PyPI): a real S3 API on 127.0.0.1 for the backup tests (crates/twelve/tests/backups.rs),
# in a venv of its own under the cache, where the tests look for it.
moto_venv=${TWELVE_CACHE:-$HOME/.cache/twelve}/moto-venv
if [ ! -x "$moto_venv/bin/moto_server" ]; then
  echo "setup: installing moto[server] (PyPI) into $moto_venv"
  mkdir -p "$(dirname "$moto_venv")"
  uv venv -q "$moto_venv"
  uv pip install -q --python "$moto_venv/bin/python" 'moto[server]>=5,<6'
fi

echo "setup: go $(go version | awk '{print $3}'), $(python3 --version), $(uv --version), node $(node --version 2>/dev/null || echo missing), $(java -version 2>&1 | head -1 || echo 'java missing')"

# kubernetes-validate (PyPI) for the k8s tests: rendered objects against current schemas.
kv_venv=${TWELVE_CACHE:-$HOME/.cache/twelve}/kubernetes-validate-venv
if [ ! -x "$kv_venv/bin/kubernetes-validate" ]; then
  echo "setup: installing kubernetes-validate (PyPI) in $kv_venv"
  python3 -m venv "$kv_venv"
  "$kv_venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0
fi

# kube-apiserver for the k8s tests: built once from Debian's source package (about 3
# minutes on 2 cores) and cached in $TWELVE_CACHE/kube-apiserver; a no-op when cached.
TWELVE_CACHE=${TWELVE_CACHE:-$HOME/.cache/twelve} "$here/kube-apiserver.sh" build

if [ "$with_services" = 1 ]; then
  exec "$here/services.sh"
fi
