#!/usr/bin/env bash
# Walks the AdminService and account-protection Done-means with grpcurl against a real
# `auth-server serve` (reflection only): an admin made with `create-admin` creates, lists
# (paged), updates, disables (live token then fails Validate, login fails), enables and deletes
# users and reads the audit trail; a plain user gets PERMISSION_DENIED; six wrong passwords then
# the right one stay UNAUTHENTICATED until UnlockUser; a reset token works once; a TOTP-enabled
# login needs the second step.
#
# usage: scripts/grpcurl-admin.sh [DATABASE_URL]     (default: SQLite in a temp data dir)
# needs: target/debug/auth-server (or AUTH_SERVER_BIN), grpcurl, python3
set -euo pipefail

BIN=${AUTH_SERVER_BIN:-target/debug/auth-server}
WORK=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
ADDR=127.0.0.1:$(free_port)
export AUTH_LISTEN=$ADDR AUTH_DATA_DIR=$WORK/data AUTH_ALLOW_REGISTRATION=true RUST_LOG=warn
# ~25 password calls from one address in a few seconds: above the default burst of 20.
export AUTH_RATE_LIMIT_BURST=100
[ -n "${1:-}" ] && export AUTH_DATABASE_URL=$1
SERVER_PID=
trap '[ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

totp() { # totp BASE32 STEP_OFFSET -> the 6-digit code
  python3 - "$1" "$2" <<'PY'
import base64, hashlib, hmac, struct, sys, time
secret, offset = sys.argv[1], int(sys.argv[2])
key = base64.b32decode(secret + "=" * (-len(secret) % 8))
digest = hmac.new(key, struct.pack(">Q", int(time.time()) // 30 + offset), hashlib.sha1).digest()
o = digest[-1] & 15
print("%06d" % ((struct.unpack(">I", digest[o:o + 4])[0] & 0x7FFFFFFF) % 1000000))
PY
}

echo 'root passphrase 1' | "$BIN" create-admin --email root@example.com --password-stdin >/dev/null
"$BIN" serve >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do grpcurl -plaintext "$ADDR" list >/dev/null 2>&1 && break; sleep 0.1; done
grpcurl -plaintext "$ADDR" list | grep -c '^auth.v1.AdminService$' >/dev/null || fail "AdminService listed"

ADMIN=$(call "$ADDR" AuthService/Login '{"email":"root@example.com","password":"root passphrase 1"}' | field accessToken)
out=$(call "$ADDR" AdminService/CreateUser '{"email":"Alice@Example.com","password":"alice passphrase","displayName":"Alice","roles":["support"]}' "$ADMIN")
ALICE=$(field user.id <<<"$out") || fail "create: $out"
for i in 1 2 3; do
  call "$ADDR" AdminService/CreateUser "{\"email\":\"user$i@example.com\",\"password\":\"user passphrase\"}" "$ADMIN" | grep -c '"id"' >/dev/null
done
page=$(call "$ADDR" AdminService/ListUsers '{"pageSize":2}' "$ADMIN")
NEXT=$(field nextPageToken <<<"$page") || fail "paging: $page"
seen=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["users"]))' <<<"$page")
while [ -n "$NEXT" ]; do
  page=$(call "$ADDR" AdminService/ListUsers "{\"pageSize\":2,\"pageToken\":\"$NEXT\"}" "$ADMIN")
  seen=$((seen + $(python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("users",[])))' <<<"$page")))
  NEXT=$(python3 -c 'import json,sys; print(json.load(sys.stdin).get("nextPageToken",""))' <<<"$page")
done
[ "$seen" = 5 ] || fail "paged listing saw $seen users, wanted 5"
out=$(call "$ADDR" AdminService/UpdateUser "{\"userId\":\"$ALICE\",\"displayName\":\"Alice A.\",\"email\":\"ignored@example.com\",\"updateMask\":{\"paths\":[\"display_name\"]},\"expectedVersion\":1}" "$ADMIN")
[ "$(field user.displayName <<<"$out")" = "Alice A." ] && [ "$(field user.email <<<"$out")" = alice@example.com ] || fail "update: $out"
expect_code 10 "$(call "$ADDR" AdminService/UpdateUser "{\"userId\":\"$ALICE\",\"displayName\":\"x\",\"updateMask\":{\"paths\":[\"displayName\"]},\"expectedVersion\":1}" "$ADMIN")" "stale version ABORTED"
ok "create, list (paged), update with a field mask, stale version ABORTED"

ALICE_TOKEN=$(call "$ADDR" AuthService/Login '{"email":"alice@example.com","password":"alice passphrase"}' | field accessToken)
expect_code 7 "$(call "$ADDR" AdminService/ListUsers '{}' "$ALICE_TOKEN")" "plain user"
expect_code 16 "$(call "$ADDR" AdminService/ListUsers '{}')" "no token"
ok "a plain user gets PERMISSION_DENIED, no token UNAUTHENTICATED"

call "$ADDR" AdminService/DisableUser "{\"userId\":\"$ALICE\"}" "$ADMIN" | grep -c '"revokedSessions": 1' >/dev/null || fail "disable"
expect_code 16 "$(call "$ADDR" AuthService/Validate "{\"token\":\"$ALICE_TOKEN\"}")" "disabled user's live token"
expect_code 16 "$(call "$ADDR" AuthService/Login '{"email":"alice@example.com","password":"alice passphrase"}')" "disabled login"
call "$ADDR" AdminService/EnableUser "{\"userId\":\"$ALICE\"}" "$ADMIN" | grep -c '"email": "alice@example.com"' >/dev/null || fail "enable"
call "$ADDR" AuthService/Login '{"email":"alice@example.com","password":"alice passphrase"}' | grep -c accessToken >/dev/null || fail "login after enable"
ok "disable kills the live token and login; enable restores login"

for _ in 1 2 3 4 5 6; do
  expect_code 16 "$(call "$ADDR" AuthService/Login '{"email":"alice@example.com","password":"wrong guess"}')" "wrong password"
done
expect_code 16 "$(call "$ADDR" AuthService/Login '{"email":"alice@example.com","password":"alice passphrase"}')" "right password while locked"
call "$ADDR" AdminService/GetUser "{\"userId\":\"$ALICE\"}" "$ADMIN" | grep -c lockedUntil >/dev/null || fail "GetUser shows the lock"
call "$ADDR" AdminService/UnlockUser "{\"userId\":\"$ALICE\"}" "$ADMIN" | grep -c '"wasLocked": true' >/dev/null || fail "unlock"
call "$ADDR" AuthService/Login '{"email":"alice@example.com","password":"alice passphrase"}' | grep -c accessToken >/dev/null || fail "login after unlock"
ok "six wrong passwords lock; the right one is UNAUTHENTICATED until UnlockUser"

RESET=$(call "$ADDR" AdminService/IssuePasswordReset "{\"userId\":\"$ALICE\"}" "$ADMIN" | field resetToken)
call "$ADDR" AuthService/ResetPassword "{\"resetToken\":\"$RESET\",\"newPassword\":\"alice new passphrase\"}" | grep -c revokedSessions >/dev/null || fail "reset"
expect_code 16 "$(call "$ADDR" AuthService/ResetPassword "{\"resetToken\":\"$RESET\",\"newPassword\":\"another passphrase\"}")" "reset token twice"
call "$ADDR" AuthService/Login '{"email":"alice@example.com","password":"alice new passphrase"}' | grep -c accessToken >/dev/null || fail "login with reset password"
expect_code 9 "$(call "$ADDR" AuthService/RequestPasswordReset '{"email":"alice@example.com"}')" "self-service reset without SMTP"
ok "a reset token works once; self-service reset without SMTP is FAILED_PRECONDITION"

ALICE_TOKEN=$(call "$ADDR" AuthService/Login '{"email":"alice@example.com","password":"alice new passphrase"}' | field accessToken)
SECRET=$(call "$ADDR" AuthService/BeginTotpEnrollment '{}' "$ALICE_TOKEN" | field secret)
# One code for the confirmation and the replay: computed twice, a step boundary in between
# would make the "replay" a fresh code.
CODE=$(totp "$SECRET" 0)
call "$ADDR" AuthService/ConfirmTotpEnrollment "{\"code\":\"$CODE\"}" "$ALICE_TOKEN" | grep -c recoveryCodes >/dev/null || fail "confirm totp"
first=$(call "$ADDR" AuthService/Login '{"email":"alice@example.com","password":"alice new passphrase"}')
[ "$(field mfaRequired <<<"$first")" = True ] || fail "mfa required: $first"
grep -c accessToken <<<"$first" >/dev/null && fail "tokens before the second step: $first"
MFA=$(field mfaToken <<<"$first")
expect_code 16 "$(call "$ADDR" AuthService/CompleteMfaLogin "{\"mfaToken\":\"$MFA\",\"code\":\"$CODE\"}")" "replayed code"
call "$ADDR" AuthService/CompleteMfaLogin "{\"mfaToken\":\"$MFA\",\"code\":\"$(totp "$SECRET" 1)\"}" | grep -c accessToken >/dev/null || fail "second step"
ok "a TOTP-enabled login needs the second step; a replayed code is refused"

audit=$(call "$ADDR" AdminService/ListAuditEvents "{\"userId\":\"$ALICE\",\"pageSize\":100}" "$ADMIN")
for kind in admin_user_created admin_user_updated admin_user_disabled admin_user_enabled login_failed login_locked admin_user_unlocked admin_password_reset_issued password_reset_used mfa_enrolled mfa_failed login_succeeded; do
  grep -c "\"kind\": \"$kind\"" <<<"$audit" >/dev/null || fail "audit lacks $kind: $audit"
done
grep -c 'passphrase' <<<"$audit" >/dev/null && fail "audit holds a password"
call "$ADDR" AdminService/DeleteUser "{\"userId\":\"$ALICE\"}" "$ADMIN" | grep -c revokedSessions >/dev/null || fail "delete"
expect_code 5 "$(call "$ADDR" AdminService/GetUser "{\"userId\":\"$ALICE\"}" "$ADMIN")" "deleted user"
call "$ADDR" AdminService/CreateUser '{"email":"alice@example.com","password":"alice passphrase"}' "$ADMIN" | grep -c '"id"' >/dev/null || fail "email reuse"
expect_code 9 "$(call "$ADDR" AdminService/DeleteUser "{\"userId\":\"$(call "$ADDR" AuthService/Validate "{\"token\":\"$ADMIN\"}" | field userId)\"}" "$ADMIN")" "last admin"
ok "audit trail, delete (email reusable), last admin FAILED_PRECONDITION"

finish
