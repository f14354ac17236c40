#!/usr/bin/env bash
# A real Kubernetes API server (kube-apiserver v1.20.2 + Debian's etcd) on 127.0.0.1, for the
# tests of `twelve k8s apply`. Built offline from Debian's source package: the Go module proxy
# is not needed, only the machine's Debian mirror.
#
#   scripts/kube-apiserver.sh build        build kube-apiserver once and cache it (no-op when cached)
#   scripts/kube-apiserver.sh path         print the cached binary's path (exit 1 when missing)
#   scripts/kube-apiserver.sh start DIR    certs, etcd, kube-apiserver under DIR; waits for /readyz;
#                                          writes DIR/kubeconfig (token user "admin") and pid files
#   scripts/kube-apiserver.sh stop DIR     stops the etcd and kube-apiserver started in DIR
#
# The binary is cached in $TWELVE_CACHE/kube-apiserver (default ~/.cache/twelve), outside the
# work tree: a cold build takes about 3 minutes on 2 cores, a rerun nothing.
# Debian bookworm's source package `kubernetes` (1.20.5+really1.20.2) ships the whole tree with
# vendor/, so Debian's Go builds it in GOPATH mode as debian/rules does. No controller-manager,
# scheduler or kubelet: objects are stored and validated, no pod ever runs.
# Ports: API_PORT (default 16443), ETCD_PORT (23790), ETCD_PEER (23800).
set -euo pipefail

CACHE=${TWELVE_CACHE:-$HOME/.cache/twelve}/kube-apiserver
VERSION=1.20.2
DEBVER=1.20.5+really1.20.2-1.1+deb12u1
BIN=$CACHE/kube-apiserver-$VERSION

build() {
  if [ -x "$BIN" ]; then echo "kube-apiserver: cached $BIN"; return 0; fi
  for t in go:golang-go etcd:etcd-server rsync:rsync jq:jq make:make openssl:openssl curl:curl; do
    command -v "${t%%:*}" >/dev/null || {
      echo "kube-apiserver: needs ${t%%:*} (Debian package ${t##*:}; scripts/setup.sh installs it)" >&2
      exit 1
    }
  done
  local work=$CACHE/build
  mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/debsrc" "$work/home"
  # the machine's own Debian mirror, as a source-package list
  local uri
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || uri=http://deb.debian.org/debian
  echo "deb-src $uri bookworm main" >"$work/apt/sources.list"
  local A=(-o "Dir::Etc::sourcelist=$work/apt/sources.list" -o Dir::Etc::sourceparts=/nonexistent
    -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache")
  local orig=$work/debsrc/kubernetes_1.20.5+really1.20.2.orig.tar.gz
  if [ ! -f "$orig" ]; then
    apt-get "${A[@]}" update -qq
    (cd "$work/debsrc" && apt-get "${A[@]}" source --download-only "kubernetes=$DEBVER" >/dev/null)
  fi
  local src=$work/src/kubernetes-$VERSION
  if [ ! -d "$src" ]; then mkdir -p "$work/src" && tar xzf "$orig" -C "$work/src"; fi
  local s
  s=$(date +%s)
  # Kubernetes' own make runs the code generators (zz_generated.openapi.go) before go build.
  (cd "$src" && env KUBE_GIT_VERSION=v$VERSION KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean \
    CGO_ENABLED=0 GOPROXY=off GOFLAGS= GO111MODULE=off HOME="$work/home" \
    make WHAT=cmd/kube-apiserver GOLDFLAGS="-s -w" >"$work/make.log" 2>&1) || {
    echo "kube-apiserver: build failed; see $work/make.log" >&2
    tail -20 "$work/make.log" >&2
    exit 1
  }
  cp "$src/_output/bin/kube-apiserver" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  echo "kube-apiserver: built $BIN in $(($(date +%s) - s)) s, $(stat -c %s "$BIN") bytes"
  # the source tree and Go's build cache are not needed any more (about 2 GB)
  rm -rf "$src" "$work/home"
}

start() {
  local run=${1:?usage: $0 start DIR}
  [ -x "$BIN" ] || { echo "kube-apiserver: no $BIN: run '$0 build' (or scripts/setup.sh)" >&2; exit 1; }
  local api=${API_PORT:-16443} ep=${ETCD_PORT:-23790} epeer=${ETCD_PEER:-23800}
  local token=${KAS_TOKEN:-twelve-admin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')}
  mkdir -p "$run/pki" "$run/logs"
  (
    cd "$run/pki"
    if [ ! -f ca.crt ]; then
      openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=twelve-test-ca" 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >san.ext
      openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 -extfile san.ext 2>/dev/null
      # a client-certificate user in system:masters (kubeconfig user "cert-admin")
      openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/O=system:masters/CN=cert-admin" 2>/dev/null
      printf 'extendedKeyUsage=clientAuth\n' >client.ext
      openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 30 -extfile client.ext 2>/dev/null
      openssl genrsa -out sa.key 2048 2>/dev/null
      openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    fi
    echo "$token,admin,admin-uid,system:masters" >tokens.csv
  )
  etcd --name twelve --data-dir "$run/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ep" --advertise-client-urls "http://127.0.0.1:$ep" \
    --listen-peer-urls "http://127.0.0.1:$epeer" --initial-advertise-peer-urls "http://127.0.0.1:$epeer" \
    --initial-cluster "twelve=http://127.0.0.1:$epeer" >"$run/logs/etcd.log" 2>&1 </dev/null &
  echo $! >"$run/etcd.pid"
  "$BIN" --etcd-servers="http://127.0.0.1:$ep" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api" \
    --tls-cert-file="$run/pki/apiserver.crt" --tls-private-key-file="$run/pki/apiserver.key" \
    --client-ca-file="$run/pki/ca.crt" --token-auth-file="$run/pki/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$run/pki/sa.pub" --service-account-signing-key-file="$run/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none --allow-privileged=false \
    --profiling=false >"$run/logs/kube-apiserver.log" 2>&1 </dev/null &
  echo $! >"$run/kube-apiserver.pid"
  local i
  for i in $(seq 1 600); do
    if curl -sf --cacert "$run/pki/ca.crt" -H "Authorization: Bearer $token" "https://127.0.0.1:$api/readyz" >/dev/null 2>&1; then
      break
    fi
    if ! kill -0 "$(cat "$run/kube-apiserver.pid")" 2>/dev/null; then i=600; break; fi
    sleep 0.1
  done
  if [ "$i" = 600 ]; then
    echo "kube-apiserver: not ready; see $run/logs/kube-apiserver.log" >&2
    tail -20 "$run/logs/kube-apiserver.log" >&2
    stop "$run"
    exit 1
  fi
  cat >"$run/kubeconfig" <<KC
apiVersion: v1
kind: Config
current-context: token
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api
    certificate-authority-data: $(base64 -w0 "$run/pki/ca.crt")
users:
- name: admin
  user:
    token: $token
- name: cert-admin
  user:
    client-certificate-data: $(base64 -w0 "$run/pki/client.crt")
    client-key-data: $(base64 -w0 "$run/pki/client.key")
contexts:
- name: token
  context: {cluster: local, user: admin, namespace: default}
- name: cert
  context: {cluster: local, user: cert-admin, namespace: default}
KC
  echo "kube-apiserver: ready on https://127.0.0.1:$api; KUBECONFIG=$run/kubeconfig"
}

stop() {
  local run=${1:?usage: $0 stop DIR} p pid i
  for p in kube-apiserver etcd; do
    [ -f "$run/$p.pid" ] || continue
    pid=$(cat "$run/$p.pid")
    if kill "$pid" 2>/dev/null; then
      for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$run/$p.pid"
  done
}

case "${1:-}" in
  build) build ;;
  path) [ -x "$BIN" ] && echo "$BIN" ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
