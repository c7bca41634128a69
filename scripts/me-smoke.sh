#!/usr/bin/env bash
# Walks issue 15's Done-means with grpcurl (and curl for gRPC-Web's CORS) against a real
# `auth-server serve` with an SMTP sink (scripts/smtp-sink.py): GetMe, ListMySessions,
# RevokeMySessions (the other session's token refused at once), email verification with the
# token from the sink, ChangeEmail (verification to the new address, notice to the old),
# DeleteMyAccount; then a browser preflight from an allowed and from another origin.
#
# usage: scripts/me-smoke.sh [DATABASE_URL]     (default: SQLite in a temp data dir)
# needs: target/debug/auth-server (or AUTH_SERVER_BIN), grpcurl, curl, python3
set -euo pipefail

BIN=${AUTH_SERVER_BIN:-target/debug/auth-server}
WORK=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
ADDR=127.0.0.1:$(free_port)
SMTP_PORT=$(free_port)
ORIGIN=http://127.0.0.1:8123
export AUTH_LISTEN=$ADDR AUTH_DATA_DIR=$WORK/data AUTH_ALLOW_REGISTRATION=true RUST_LOG=warn
export AUTH_SMTP_URL=smtp://127.0.0.1:$SMTP_PORT AUTH_CORS_ALLOW_ORIGINS=$ORIGIN
[ -n "${1:-}" ] && export AUTH_DATABASE_URL=$1
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT

python3 "$(dirname "$0")/smtp-sink.py" "$SMTP_PORT" "$WORK/mail" >>"$WORK/smtp.log" 2>&1 &
PIDS+=($!)
"$BIN" serve >>"$WORK/server.log" 2>&1 &
PIDS+=($!)
wait_up "$ADDR"

# mail_to ADDRESS N: the Nth mail (1-based) sent to ADDRESS, waiting up to 10 s.
mail_to() {
  for _ in $(seq 1 100); do
    local found
    found=$(grep -lx "To-Envelope: $1" "$WORK"/mail/*.eml 2>/dev/null | sort -V | sed -n "${2}p" || true)
    [ -n "$found" ] && { cat "$found"; return 0; }
    sleep 0.1
  done
  fail "no mail number $2 to $1"
}
token_in() { grep -oE '\b[A-Za-z0-9_-]{43}\b' | head -1; }

call "$ADDR" Register '{"email":"ann@example.com","password":"correct horse battery"}' | grep -c '"id"' >/dev/null || fail "register"
A=$(call "$ADDR" Login '{"email":"ann@example.com","password":"correct horse battery"}')
B=$(call "$ADDR" Login '{"email":"ann@example.com","password":"correct horse battery"}')
TA=$(field accessToken <<<"$A")
TB=$(field accessToken <<<"$B")
SB=$(field sessionId <<<"$B")

me=$(call "$ADDR" GetMe '{}' "$TA")
[ "$(field user.email <<<"$me")" = ann@example.com ] || fail "GetMe: $me"
grep -c lastLoginAt <<<"$me" >/dev/null || fail "GetMe lacks lastLoginAt: $me"
expect_code 16 "$(call "$ADDR" GetMe '{}')" "GetMe without a token"
sessions=$(call "$ADDR" ListMySessions '{}' "$TA")
[ "$(grep -c '"id"' <<<"$sessions")" = 2 ] || fail "two sessions: $sessions"
[ "$(grep -c '"current": true' <<<"$sessions")" = 1 ] || fail "one current: $sessions"
ok "GetMe and ListMySessions (two sessions, the caller's marked current)"

expect_code 3 "$(call "$ADDR" RevokeMySessions '{}' "$TA")" "neither sessionId nor allButCurrent"
call "$ADDR" RevokeMySessions "{\"sessionId\":\"$SB\"}" "$TA" | grep -c "$SB" >/dev/null || fail "revoke B"
out=$(call "$ADDR" Validate "{\"token\":\"$TB\"}")
expect_code 16 "$out" "the other session's token at once"
grep -c SESSION_REVOKED <<<"$out" >/dev/null || fail "reason SESSION_REVOKED: $out"
call "$ADDR" Validate "{\"token\":\"$TA\"}" | grep -c userId >/dev/null || fail "own token still valid"
ok "RevokeMySessions: the other session's token is refused at once, the caller's is not"

sent=$(call "$ADDR" RequestEmailVerification '{}' "$TA")
[ "$(field email <<<"$sent")" = ann@example.com ] || fail "verification: $sent"
expect_code 8 "$(call "$ADDR" RequestEmailVerification '{}' "$TA")" "a second mail at once (cooldown)"
VTOKEN=$(mail_to ann@example.com 1 | token_in)
[ -n "$VTOKEN" ] || fail "no token in the verification mail"
expect_code 16 "$(call "$ADDR" VerifyEmail '{"token":"nonsense"}')" "garbage verification token"
expect_code 16 "$(call "$ADDR" ResetPassword "{\"resetToken\":\"$VTOKEN\",\"newPassword\":\"another passphrase\"}")" "verification token as a reset token"
v=$(call "$ADDR" VerifyEmail "{\"token\":\"$VTOKEN\"}")
[ "$(field user.emailVerified <<<"$v")" = True ] || fail "verified: $v"
expect_code 16 "$(call "$ADDR" VerifyEmail "{\"token\":\"$VTOKEN\"}")" "verification token twice"
expect_code 9 "$(call "$ADDR" RequestEmailVerification '{}' "$TA")" "already verified"
ok "email verification with the token from the SMTP sink; single use; not a reset token"

call "$ADDR" Register '{"email":"bob@example.com","password":"correct horse battery"}' >/dev/null
expect_code 16 "$(call "$ADDR" ChangeEmail '{"currentPassword":"wrong password","newEmail":"ann2@example.com"}' "$TA")" "ChangeEmail with a wrong password"
expect_code 6 "$(call "$ADDR" ChangeEmail '{"currentPassword":"correct horse battery","newEmail":"bob@example.com"}' "$TA")" "ChangeEmail to a taken address"
expect_code 3 "$(call "$ADDR" ChangeEmail '{"currentPassword":"correct horse battery","newEmail":"no address"}' "$TA")" "ChangeEmail to a malformed address"
changed=$(call "$ADDR" ChangeEmail '{"currentPassword":"correct horse battery","newEmail":"ann2@example.com"}' "$TA")
[ "$(field user.email <<<"$changed")" = ann2@example.com ] || fail "changed: $changed"
[ "$(field verificationSent <<<"$changed")" = True ] || fail "verification sent: $changed"
grep -c emailVerified <<<"$changed" >/dev/null && fail "the new address must be unverified: $changed"
mail_to ann@example.com 2 | grep -c 'ann2@example.com' >/dev/null || fail "notice to the old address"
NTOKEN=$(mail_to ann2@example.com 1 | token_in)
[ "$(field user.emailVerified <<<"$(call "$ADDR" VerifyEmail "{\"token\":\"$NTOKEN\"}")")" = True ] || fail "verify the new address"
expect_code 16 "$(call "$ADDR" Login '{"email":"ann@example.com","password":"correct horse battery"}')" "login with the old address"
ok "ChangeEmail: wrong password, taken and malformed refused; new address verified by mail, old one notified"

expect_code 16 "$(call "$ADDR" DeleteMyAccount '{"currentPassword":"wrong password"}' "$TA")" "DeleteMyAccount with a wrong password"
call "$ADDR" DeleteMyAccount '{"currentPassword":"correct horse battery"}' "$TA" | grep -c revokedSessions >/dev/null || fail "delete my account"
expect_code 16 "$(call "$ADDR" Validate "{\"token\":\"$TA\"}")" "token of a deleted account"
expect_code 16 "$(call "$ADDR" Login '{"email":"ann2@example.com","password":"correct horse battery"}')" "login after delete"
call "$ADDR" Register '{"email":"ann2@example.com","password":"correct horse battery"}' | grep -c '"id"' >/dev/null || fail "address free again"
ok "DeleteMyAccount: wrong password refused; then tokens and login refused, the address free again"

preflight() {
  curl -s -o /dev/null -D - -X OPTIONS "http://$ADDR/auth.v1.AuthService/Login" \
    -H "Origin: $1" -H 'Access-Control-Request-Method: POST' \
    -H 'Access-Control-Request-Headers: content-type,x-grpc-web'
}
allowed=$(preflight "$ORIGIN")
grep -c '^HTTP/1.1 204' <<<"$allowed" >/dev/null || fail "allowed preflight: $allowed"
grep -ic "^access-control-allow-origin: $ORIGIN" <<<"$allowed" >/dev/null || fail "allow-origin: $allowed"
refused=$(preflight http://evil.example)
grep -c '^HTTP/1.1 403' <<<"$refused" >/dev/null || fail "refused preflight: $refused"
grep -ic '^access-control-allow-origin' <<<"$refused" >/dev/null && fail "refused origin got CORS headers: $refused"
ok "gRPC-Web CORS: the allowed origin's preflight 204, another origin 403"

finish
