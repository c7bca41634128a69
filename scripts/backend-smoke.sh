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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
AUTH=127.0.0.1:$(free_port)
export AUTH_LISTEN=$AUTH AUTH_DATABASE_URL=$URL AUTH_DATA_DIR=$WORK/auth AUTH_ALLOW_REGISTRATION=true RUST_LOG=warn
export BACKEND_LISTEN=127.0.0.1:$(free_port) BACKEND_AUTH_URL=http://$AUTH \
  BACKEND_DATABASE_URL="sqlite://$WORK/backend.db?mode=rwc" \
  BACKEND_AUTH_EMAIL=svc@example.com BACKEND_AUTH_PASSWORD='service passphrase'
AUTH_PID= BACKEND_PID=
trap 'kill -TERM $AUTH_PID $BACKEND_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

fail() { echo "FAIL: $*"; tail -20 "$WORK"/*.log; exit 1; }
start_auth() {
  "$AUTH_BIN" serve >>"$WORK/auth.log" 2>&1 & AUTH_PID=$!
  for _ in $(seq 1 100); do grpcurl -plaintext "$AUTH" list >/dev/null 2>&1 && return; sleep 0.1; done
  fail "auth-server did not start"
}
stop_auth() { kill -TERM "$AUTH_PID"; wait "$AUTH_PID" || true; AUTH_PID=; }
start_backend() {
  "$BACKEND_BIN" >>"$WORK/backend.log" 2>&1 & BACKEND_PID=$!
  for _ in $(seq 1 100); do curl -s "http://$BACKEND_LISTEN/health/sync" >/dev/null && return; sleep 0.1; done
  fail "backend-example did not start"
}
stop_backend() { kill -TERM "$BACKEND_PID"; wait "$BACKEND_PID" || true; BACKEND_PID=; }
rpc() { # rpc METHOD JSON [TOKEN]
  local args=(-plaintext)
  [ -n "${3:-}" ] && args+=(-H "authorization: Bearer $3")
  grpcurl "${args[@]}" -d "$2" "$AUTH" "auth.v1.AuthService/$1"
}
signup() { # signup EMAIL -> access token
  rpc Register "{\"email\":\"$1\",\"password\":\"correct horse battery\"}" >/dev/null
  rpc Login "{\"email\":\"$1\",\"password\":\"correct horse battery\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])'
}
me() { curl -s -o "$WORK/me.json" -w '%{http_code}' -H "authorization: Bearer $1" "http://$BACKEND_LISTEN/me"; }
passed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }

start_auth
echo 'service passphrase' | "$AUTH_BIN" create-user --email svc@example.com --role events.subscriber --password-stdin >/dev/null
start_backend
[ "$(me garbage)" = 401 ] || fail "garbage token"
ok "GET /me with a garbage token: 401"

ANN=$(signup ann@example.com)
[ "$(me "$ANN")" = 200 ] && grep -q '"email":"ann@example.com"' "$WORK/me.json" || fail "new user: $(cat "$WORK/me.json")"
ok "a newly registered user gets 200 with the mirrored email"

ANN2=$(rpc Login '{"email":"ann@example.com","password":"correct horse battery"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
rpc ChangePassword '{"currentPassword":"correct horse battery","newPassword":"a new passphrase"}' "$ANN2" >/dev/null
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

echo "$passed passed, 0 failed"
