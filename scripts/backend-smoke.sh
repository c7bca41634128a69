#!/usr/bin/env bash
# backend-example end to end with the real binaries and curl: auth-server on PostgreSQL, a
# service account from `create-user`, backend-example from BACKEND_* variables.
#
# usage: scripts/backend-smoke.sh POSTGRES_URL   (an empty database for auth-server)
# needs: target/debug/{auth-server,backend-example}, grpcurl, curl, python3
set -euo pipefail
# Pipes into grep use `grep -c` (reads all input): `grep -q` exits at the first match and the
# writer's SIGPIPE would fail the pipeline under pipefail.

AUTH_BIN=${AUTH_SERVER_BIN:-target/debug/auth-server}
BACKEND_BIN=${BACKEND_BIN:-target/debug/backend-example}
URL=${1:?usage: $0 POSTGRES_URL}
WORK=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
AUTH=127.0.0.1:$(free_port)
export AUTH_LISTEN=$AUTH AUTH_DATABASE_URL=$URL AUTH_DATA_DIR=$WORK/auth AUTH_ALLOW_REGISTRATION=true RUST_LOG=warn
export BACKEND_LISTEN=127.0.0.1:$(free_port) BACKEND_AUTH_URL=http://$AUTH \
  BACKEND_DATABASE_URL="sqlite://$WORK/backend.db?mode=rwc" \
  BACKEND_AUTH_EMAIL=svc@example.com BACKEND_AUTH_PASSWORD='service passphrase'
AUTH_PID= BACKEND_PID=
trap 'kill -TERM $AUTH_PID $BACKEND_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

start_auth() {
  "$AUTH_BIN" serve >>"$WORK/auth.log" 2>&1 & AUTH_PID=$!
  wait_up "$AUTH"
}
stop_auth() { kill -TERM "$AUTH_PID"; wait "$AUTH_PID" || true; AUTH_PID=; }
start_backend() {
  "$BACKEND_BIN" >>"$WORK/backend.log" 2>&1 & BACKEND_PID=$!
  for _ in $(seq 1 100); do curl -s "http://$BACKEND_LISTEN/health/sync" >/dev/null && return; sleep 0.1; done
  fail "backend-example did not start"
}
stop_backend() { kill -TERM "$BACKEND_PID"; wait "$BACKEND_PID" || true; BACKEND_PID=; }
signup() { # signup EMAIL -> access token
  call "$AUTH" Register "{\"email\":\"$1\",\"password\":\"correct horse battery\"}" >/dev/null
  call "$AUTH" Login "{\"email\":\"$1\",\"password\":\"correct horse battery\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])'
}
me() { curl -s -o "$WORK/me.json" -w '%{http_code}' -H "authorization: Bearer $1" "http://$BACKEND_LISTEN/me"; }

start_auth
echo 'service passphrase' | "$AUTH_BIN" create-user --email svc@example.com --role events.subscriber --password-stdin >/dev/null
start_backend
[ "$(me garbage)" = 401 ] || fail "garbage token"
ok "GET /me with a garbage token: 401"

ANN=$(signup ann@example.com)
[ "$(me "$ANN")" = 200 ] && grep -q '"email":"ann@example.com"' "$WORK/me.json" || fail "new user: $(cat "$WORK/me.json")"
ok "a newly registered user gets 200 with the mirrored email"

ANN2=$(call "$AUTH" Login '{"email":"ann@example.com","password":"correct horse battery"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
call "$AUTH" ChangePassword '{"currentPassword":"correct horse battery","newPassword":"a new passphrase"}' "$ANN2" >/dev/null
for i in $(seq 1 20); do [ "$(me "$ANN")" = 401 ] && break; sleep 0.1; done
[ "$(me "$ANN")" = 401 ] || fail "revoked session still accepted after 2 s"
ok "a session revoked by a password change is 401 within 2 s"

BOB=$(signup bob@example.com)
CAROL=$(signup carol@example.com)
[ "$(me "$BOB")" = 200 ] || fail "bob"
stop_auth
[ "$(me "$BOB")" = 200 ] || fail "cached token while auth-server is down"
[ "$(me "$CAROL")" = 503 ] || fail "unseen token while auth-server is down"
ok "auth-server down: cached token 200, unseen token 503"

start_auth
DAVE=$(signup dave@example.com)
[ "$(me "$DAVE")" = 200 ] || fail "user created after auth-server restart"
ok "after an auth-server restart new users reach the mirror"

stop_backend
ERIN=$(signup erin@example.com)
start_backend
[ "$(me "$ERIN")" = 200 ] && grep -q erin@example.com "$WORK/me.json" || fail "user created while backend was down"
curl -sf "http://$BACKEND_LISTEN/health/sync" | grep -c '"last_applied_sequence"' >/dev/null || fail "health"
ok "after a backend restart users created meanwhile reach the mirror; /health/sync 200"

finish
