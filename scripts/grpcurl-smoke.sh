#!/usr/bin/env bash
# Walks the README's grpcurl session against a real `auth-server serve`, with reflection only
# (no .proto files): list/describe, health, register, duplicate, bad input, login, validate,
# wrong password vs unknown email, tampered token, change password, refresh rotation and reuse,
# logout, and a restart that keeps users and keys.
#
# usage: scripts/grpcurl-smoke.sh [DATABASE_URL]     (default: SQLite in a temp data dir)
# needs: target/debug/auth-server (or AUTH_SERVER_BIN), grpcurl, python3
set -euo pipefail

BIN=${AUTH_SERVER_BIN:-target/debug/auth-server}
WORK=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
ADDR=127.0.0.1:$(free_port)
export AUTH_LISTEN=$ADDR AUTH_DATA_DIR=$WORK/data AUTH_ALLOW_REGISTRATION=true RUST_LOG=warn
[ -n "${1:-}" ] && export AUTH_DATABASE_URL=$1
SERVER_PID=

start() {
  "$BIN" serve >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  wait_up "$ADDR"
}
stop() { [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" && wait "$SERVER_PID" || true; SERVER_PID=; }
trap 'stop; rm -rf "$WORK"' EXIT


start
grpcurl -plaintext "$ADDR" list | grep -c '^auth.v1.AuthService$' >/dev/null || fail "list"
grpcurl -plaintext "$ADDR" describe auth.v1.AuthService | grep -c 'rpc Login' >/dev/null || fail "describe"
grpcurl -plaintext "$ADDR" list | grep -c '^grpc.health.v1.Health$' >/dev/null || fail "health listed"
grpcurl -plaintext "$ADDR" grpc.health.v1.Health/Check | grep -c SERVING >/dev/null || fail "health"
ok "reflection list/describe and health"

out=$(call "$ADDR" Register '{"email":"Ann@Example.com","password":"correct horse battery"}')
grep -q '"email": "ann@example.com"' <<<"$out" || fail "register: $out"
expect_code 6 "$(call "$ADDR" Register '{"email":"ann@example.com","password":"correct horse battery"}')" duplicate
expect_code 3 "$(call "$ADDR" Register '{"email":"not-an-email","password":"correct horse battery"}')" "malformed email"
expect_code 3 "$(call "$ADDR" Register '{"email":"bob@example.com","password":"short"}')" "short password"
ok "register, ALREADY_EXISTS, INVALID_ARGUMENT"

login=$(call "$ADDR" Login '{"email":"ann@example.com","password":"correct horse battery"}')
ACCESS=$(field accessToken <<<"$login") || fail "login: $login"
REFRESH=$(field refreshToken <<<"$login")
call "$ADDR" Validate "{\"token\":\"$ACCESS\"}" | grep -c '"userId"' >/dev/null || fail "validate"
wrong=$(call "$ADDR" Login '{"email":"ann@example.com","password":"wrong password"}')
unknown=$(call "$ADDR" Login '{"email":"nobody@example.com","password":"wrong password"}')
expect_code 16 "$wrong" "wrong password"
[ "$wrong" = "$unknown" ] || fail "unknown email differs from wrong password: $wrong vs $unknown"
TAMPERED="${ACCESS:0:30}$([ "${ACCESS:30:1}" = A ] && echo B || echo A)${ACCESS:31}"
expect_code 16 "$(call "$ADDR" Validate "{\"token\":\"$TAMPERED\"}")" "tampered token"
ok "login, validate, identical wrong-password/unknown-email error, tampered token"

second=$(call "$ADDR" Login '{"email":"ann@example.com","password":"correct horse battery"}')
ACCESS2=$(field accessToken <<<"$second")
expect_code 16 "$(call "$ADDR" ChangePassword '{"currentPassword":"correct horse battery","newPassword":"new password 22"}')" "change password without token"
expect_code 16 "$(call "$ADDR" ChangePassword '{"currentPassword":"wrong one","newPassword":"new password 22"}' "$ACCESS2")" "change password wrong current"
call "$ADDR" ChangePassword '{"currentPassword":"correct horse battery","newPassword":"new password 22"}' "$ACCESS2" | grep -c revokedSessions >/dev/null || fail "change password"
expect_code 16 "$(call "$ADDR" Validate "{\"token\":\"$ACCESS\"}")" "other session revoked by password change"
call "$ADDR" Validate "{\"token\":\"$ACCESS2\"}" | grep -c userId >/dev/null || fail "caller's session kept"
expect_code 16 "$(call "$ADDR" Login '{"email":"ann@example.com","password":"correct horse battery"}')" "old password"
ok "change password revokes the other session, keeps the caller's, old password fails"

third=$(call "$ADDR" Login '{"email":"ann@example.com","password":"new password 22"}')
REFRESH3=$(field refreshToken <<<"$third")
rotated=$(call "$ADDR" Refresh "{\"refreshToken\":\"$REFRESH3\"}")
ACCESS4=$(field accessToken <<<"$rotated") || fail "refresh: $rotated"
[ "$(field refreshToken <<<"$rotated")" != "$REFRESH3" ] || fail "refresh did not rotate"
expect_code 16 "$(call "$ADDR" Refresh "{\"refreshToken\":\"$REFRESH3\"}")" "refresh reuse"
expect_code 16 "$(call "$ADDR" Validate "{\"token\":\"$ACCESS4\"}")" "session dead after reuse"
ok "refresh rotates; reuse is UNAUTHENTICATED and kills the session"

call "$ADDR" Logout '{}' "$ACCESS2" >/dev/null
expect_code 16 "$(call "$ADDR" Validate "{\"token\":\"$ACCESS2\"}")" "logout"
ok "logout kills the token"

fourth=$(call "$ADDR" Login '{"email":"ann@example.com","password":"new password 22"}')
ACCESS5=$(field accessToken <<<"$fourth")
stop
start
call "$ADDR" Validate "{\"token\":\"$ACCESS5\"}" | grep -c userId >/dev/null || fail "token after restart"
call "$ADDR" Login '{"email":"ann@example.com","password":"new password 22"}' | grep -c accessToken >/dev/null || fail "login after restart"
ok "users and tokens survive a restart"

finish
