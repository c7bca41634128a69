#!/usr/bin/env bash
# The UserEvents walk with grpcurl (reflection only) against two `auth-server serve` processes
# on one PostgreSQL or MySQL database sharing a data dir: replay from 1, resume, auth codes, and a user
# registered through B showing up on a stream open on A within a second.
#
# usage: scripts/grpcurl-events.sh DATABASE_URL    (postgres:// or mysql://; an empty database)
# needs: target/debug/auth-server (or AUTH_SERVER_BIN), grpcurl, python3
set -euo pipefail

BIN=${AUTH_SERVER_BIN:-target/debug/auth-server}
URL=${1:?usage: $0 DATABASE_URL}
WORK=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
A=127.0.0.1:$(free_port)
B=127.0.0.1:$(free_port)
export AUTH_DATABASE_URL=$URL AUTH_DATA_DIR=$WORK/data AUTH_ALLOW_REGISTRATION=true RUST_LOG=warn
PIDS=()
trap 'kill -TERM "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

events() { # events ADDR TOKEN AFTER -> the stream for 2 s, as JSON objects
  grpcurl -plaintext -max-time 2 -H "authorization: Bearer $2" -d "{\"afterSequence\":$3}" "$1" \
    auth.v1.AuthService/UserEvents 2>/dev/null || true
}

AUTH_LISTEN=$A "$BIN" serve >"$WORK/a.log" 2>&1 & PIDS+=($!)
wait_up "$A"
AUTH_LISTEN=$B "$BIN" serve >"$WORK/b.log" 2>&1 & PIDS+=($!)
wait_up "$B"
echo 'admin passphrase 1' | "$BIN" create-admin --email admin@example.com --password-stdin >/dev/null
ADMIN=$(call "$A" Login '{"email":"admin@example.com","password":"admin passphrase 1"}' | field accessToken)
call "$A" Register '{"email":"ann@example.com","password":"correct horse battery"}' >/dev/null
ANN=$(call "$B" Login '{"email":"ann@example.com","password":"correct horse battery"}' | field accessToken)
out=$(call "$B" ChangePassword '{"currentPassword":"correct horse battery","newPassword":"new password 22"}' "$ANN")
grep -q '"code"' <<<"$out" && fail "change password: $out"
ok "two servers on one database and data dir; admin from create-admin"

python3 - "$(events "$A" "$ADMIN" 0)" <<'PY' || fail "replay from 0"
import json, sys
text = sys.argv[1]
dec, i, events = json.JSONDecoder(), 0, []
while True:
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    obj, i = dec.raw_decode(text, i); events.append(obj["event"])
seqs = [int(e["sequence"]) for e in events]
assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 3, seqs
kinds = [(e["kind"], e["user"]["email"]) for e in events]
assert ("USER_EVENT_KIND_USER_CREATED", "ann@example.com") in kinds, kinds
assert ("USER_EVENT_KIND_PASSWORD_CHANGED", "ann@example.com") in kinds, kinds
PY
ok "UserEvents replays 1, 2, 3 … with UserCreated(ann) and PasswordChanged"

python3 - "$(events "$A" "$ADMIN" 1)" <<'PY' || fail "resume after 1"
import json, sys
text, dec, i, seqs = sys.argv[1], json.JSONDecoder(), 0, []
while True:
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    obj, i = dec.raw_decode(text, i); seqs.append(int(obj["event"]["sequence"]))
assert seqs and seqs == list(range(2, seqs[-1] + 1)), seqs
PY
ok "resuming after sequence 1 gives exactly the rest"

out=$(grpcurl -plaintext -format-error -max-time 2 -d '{"afterSequence":0}' "$A" auth.v1.AuthService/UserEvents 2>&1 || true)
grep -q '"code": 16' <<<"$out" || fail "no token: $out"
ANN2=$(call "$A" Login '{"email":"ann@example.com","password":"new password 22"}' | field accessToken)
out=$(grpcurl -plaintext -format-error -max-time 2 -H "authorization: Bearer $ANN2" -d '{"afterSequence":0}' "$A" auth.v1.AuthService/UserEvents 2>&1 || true)
grep -q '"code": 7' <<<"$out" || fail "plain user: $out"
ok "no token UNAUTHENTICATED, plain user PERMISSION_DENIED"

python3 - "$A" "$B" "$ADMIN" <<'PY' || fail "cross-replica delivery"
import json, subprocess, sys, threading, time
a, b, token = sys.argv[1:4]
stream = subprocess.Popen(
    ["grpcurl", "-plaintext", "-max-time", "10", "-H", f"authorization: Bearer {token}",
     "-d", '{"afterSequence":0}', a, "auth.v1.AuthService/UserEvents"],
    stdout=subprocess.PIPE, text=True)
seen = {}
def read():
    for line in stream.stdout:
        if "bob@example.com" in line and "bob" not in seen:
            seen["bob"] = time.monotonic()
threading.Thread(target=read, daemon=True).start()
time.sleep(1.5)  # the stream has replayed and is tailing
sent = time.monotonic()
subprocess.run(["grpcurl", "-plaintext", "-d", '{"email":"bob@example.com","password":"correct horse battery"}',
                b, "auth.v1.AuthService/Register"], check=True, capture_output=True)
committed = time.monotonic()
deadline = committed + 1.0
while "bob" not in seen and time.monotonic() < deadline:
    time.sleep(0.01)
stream.terminate()
assert "bob" in seen, "bob did not reach the stream on A within 1 s"
print(f"   (Register on B sent to event seen on A: {1000 * (seen['bob'] - sent):.0f} ms; the Register call itself took {1000 * (committed - sent):.0f} ms)")
PY
ok "a stream on A shows a user registered through B within a second"

finish
