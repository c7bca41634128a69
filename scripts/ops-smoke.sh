#!/usr/bin/env bash
# Walks the operations Done-means against the real binaries: `curl /metrics` shows per-method
# counters and /readyz answers; `auth-server keys rotate` on a running two-replica deployment
# (one PostgreSQL database, shared data dir) logs no one out and both replicas sign with the new
# key; grpcurl over TLS with -cacert works, plaintext is refused, and mTLS demands a client
# certificate.
#
# usage: scripts/ops-smoke.sh POSTGRES_URL    (an empty database)
# needs: target/debug/auth-server and target/debug/examples/devcerts (or AUTH_SERVER_BIN,
#        DEVCERTS_BIN), grpcurl, curl, python3
set -euo pipefail

BIN=${AUTH_SERVER_BIN:-target/debug/auth-server}
DEVCERTS=${DEVCERTS_BIN:-target/debug/examples/devcerts}
URL=${1:?usage: ops-smoke.sh POSTGRES_URL}
WORK=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
A=127.0.0.1:$(free_port); B=127.0.0.1:$(free_port); T=127.0.0.1:$(free_port); M=127.0.0.1:$(free_port); MT=127.0.0.1:$(free_port)
export AUTH_DATABASE_URL=$URL AUTH_DATA_DIR=$WORK/data AUTH_ALLOW_REGISTRATION=true RUST_LOG=warn
export AUTH_KEY_REFRESH_SECS=1 AUTH_ARGON2_MEMORY_KIB=1024 AUTH_ARGON2_ITERATIONS=1
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT

serve() { # serve NAME ADDR [ARGS...]
  local name=$1 addr=$2; shift 2
  "$BIN" serve --listen "$addr" "$@" >>"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}
kid() { python3 -c 'import base64,json,sys; t=sys.argv[1]; f=t.rsplit(".",1)[1]; print(json.loads(base64.urlsafe_b64decode(f+"="*(-len(f)%4)))["kid"])' "$1"; }

# Two replicas on one database; A also serves metrics.
serve a "$A" --metrics-listen "$M"
wait_up "$A"
serve b "$B"
wait_up "$B"

call "$A" Register '{"email":"ops@example.com","password":"ops passphrase 1"}' | grep -c '"id"' >/dev/null || fail register
BEFORE=$(call "$A" Login '{"email":"ops@example.com","password":"ops passphrase 1"}' | field accessToken)
call "$A" Validate "{\"token\":\"$BEFORE\"}" | grep -c userId >/dev/null || fail validate
call "$A" Login '{"email":"ops@example.com","password":"wrong"}' >/dev/null
metrics=$(curl -fsS "http://$M/metrics")
grep -c 'auth_rpc_requests_total{method="/auth.v1.AuthService/Login",code="OK"} 1' <<<"$metrics" >/dev/null || fail "Login counter: $metrics"
grep -c 'auth_rpc_requests_total{method="/auth.v1.AuthService/Login",code="UNAUTHENTICATED"} 1' <<<"$metrics" >/dev/null || fail "failed Login counter"
grep -c 'auth_rpc_requests_total{method="/auth.v1.AuthService/Validate",code="OK"} 1' <<<"$metrics" >/dev/null || fail "Validate counter"
grep -c 'auth_logins_total{outcome="failure"} 1' <<<"$metrics" >/dev/null || fail "login outcomes"
case "$(curl -fsS "http://$M/readyz")" in "ready: database PostgreSQL "*) ;; *) fail readyz ;; esac
[ "$(curl -fsS "http://$M/livez")" = ok ] || fail livez
ok "curl /metrics shows per-method counters; /readyz and /livez answer"

OLD_KID=$(kid "$BEFORE")
"$BIN" keys rotate --activate-in-secs 3 | grep -c '^rotated: pending' >/dev/null || fail "keys rotate"
"$BIN" keys list | grep -c "^signing.*$OLD_KID" >/dev/null || fail "old key still signs until the new one starts"
sleep 5
"$BIN" keys list | grep -c "^verifying.*$OLD_KID" >/dev/null || fail "old key verifying after the switch"
for addr in "$A" "$B"; do
  call "$addr" Validate "{\"token\":\"$BEFORE\"}" | grep -c userId >/dev/null || fail "token from before the rotation refused on $addr"
done
AFTER_A=$(call "$A" Login '{"email":"ops@example.com","password":"ops passphrase 1"}' | field accessToken)
AFTER_B=$(call "$B" Login '{"email":"ops@example.com","password":"ops passphrase 1"}' | field accessToken)
[ "$(kid "$AFTER_A")" != "$OLD_KID" ] && [ "$(kid "$AFTER_A")" = "$(kid "$AFTER_B")" ] || fail "replicas do not both sign with the new key"
call "$B" Validate "{\"token\":\"$AFTER_A\"}" | grep -c userId >/dev/null || fail "B refuses A's new token"
call "$A" Validate "{\"token\":\"$AFTER_B\"}" | grep -c userId >/dev/null || fail "A refuses B's new token"
ok "keys rotate on two running replicas: old tokens valid, both sign with the new kid, no restart"

"$DEVCERTS" "$WORK/certs" >/dev/null
C=$WORK/certs
serve tls "$T" --tls-cert "$C/server.pem" --tls-key "$C/server.key"
for _ in $(seq 1 100); do grpcurl -cacert "$C/ca.pem" -servername localhost "$T" list >/dev/null 2>&1 && break; sleep 0.1; done
grpcurl -cacert "$C/ca.pem" -servername localhost "$T" grpc.health.v1.Health/Check | grep -c SERVING >/dev/null || fail "grpcurl over TLS"
grpcurl -cacert "$C/ca.pem" -servername localhost -d "{\"token\":\"$AFTER_A\"}" "$T" auth.v1.AuthService/Validate | grep -c userId >/dev/null || fail "Validate over TLS"
grpcurl -plaintext "$T" list >/dev/null 2>&1 && fail "plaintext accepted on the TLS port"
ok "grpcurl over TLS with -cacert works; plaintext is refused"

serve mtls "$MT" --tls-cert "$C/server.pem" --tls-key "$C/server.key" --tls-client-ca "$C/ca.pem"
for _ in $(seq 1 100); do grpcurl -cacert "$C/ca.pem" -cert "$C/client.pem" -key "$C/client.key" -servername localhost "$MT" list >/dev/null 2>&1 && break; sleep 0.1; done
grpcurl -cacert "$C/ca.pem" -servername localhost "$MT" list >/dev/null 2>&1 && fail "mTLS let a client without a certificate in"
grpcurl -cacert "$C/ca.pem" -cert "$C/client.pem" -key "$C/client.key" -servername localhost "$MT" grpc.health.v1.Health/Check | grep -c SERVING >/dev/null || fail "mTLS with a client certificate"
ok "mTLS demands a client certificate and serves one that has it"

finish
