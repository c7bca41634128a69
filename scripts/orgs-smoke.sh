#!/usr/bin/env bash
# Organizations end to end with the real binaries, grpcurl and curl: an admin creates a
# company and adds a user with role `editor`; the backend-example mirror has both within a
# second; after a refresh the user's token lists the membership and `GET /orgs/{id}` answers
# 200, a non-member 403; removing the member is mirrored within a second.
#
# usage: scripts/orgs-smoke.sh [DATABASE_URL]   (an empty database for auth-server; SQLite if none)
# needs: target/debug/{auth-server,backend-example}, grpcurl, curl, python3
set -euo pipefail

AUTH_BIN=${AUTH_SERVER_BIN:-target/debug/auth-server}
BACKEND_BIN=${BACKEND_BIN:-target/debug/backend-example}
WORK=$(mktemp -d)
URL=${1:-sqlite://$WORK/auth.db?mode=rwc}
. "$(dirname "$0")/lib.sh"
AUTH=127.0.0.1:$(free_port)
export AUTH_LISTEN=$AUTH AUTH_DATABASE_URL=$URL AUTH_DATA_DIR=$WORK/auth AUTH_ALLOW_REGISTRATION=true RUST_LOG=warn
export BACKEND_LISTEN=127.0.0.1:$(free_port) BACKEND_AUTH_URL=http://$AUTH \
  BACKEND_DATABASE_URL="sqlite://$WORK/backend.db?mode=rwc"
AUTH_PID= BACKEND_PID=
trap 'kill -TERM $AUTH_PID $BACKEND_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

"$AUTH_BIN" serve >>"$WORK/auth.log" 2>&1 & AUTH_PID=$!
wait_up "$AUTH"
echo 'root passphrase 1' | "$AUTH_BIN" create-admin --email root@example.com --password-stdin >/dev/null
ADMIN=$(call "$AUTH" Login '{"email":"root@example.com","password":"root passphrase 1"}' | field accessToken)

# The mirror authenticates with a service account's API key.
SVC=$(call "$AUTH" AdminService/CreateServiceAccount \
  '{"email":"mirror@services.example.com","roles":["events.subscriber"]}' "$ADMIN" | field user.id)
export BACKEND_AUTH_API_KEY=$(call "$AUTH" AdminService/IssueApiKey "{\"userId\":\"$SVC\",\"name\":\"mirror\"}" "$ADMIN" | field apiKey)
"$BACKEND_BIN" >>"$WORK/backend.log" 2>&1 & BACKEND_PID=$!
for _ in $(seq 1 100); do curl -s "http://$BACKEND_LISTEN/health/sync" >/dev/null && break; sleep 0.1; done

login() { call "$AUTH" Login "{\"email\":\"$1\",\"password\":\"correct horse battery\"}" >"$WORK/login.json"; }
for who in ann bob; do
  call "$AUTH" Register "{\"email\":\"$who@example.com\",\"password\":\"correct horse battery\"}" >/dev/null
done
login ann@example.com
ANN_ID=$(field user.id <"$WORK/login.json")
ANN_REFRESH=$(field refreshToken <"$WORK/login.json")
login bob@example.com
BOB=$(field accessToken <"$WORK/login.json")

ORG=$(call "$AUTH" AdminService/CreateOrganization \
  '{"name":"Acme Corp","metadata":{"plan":"enterprise","seats":25}}' "$ADMIN")
ORG_ID=$(field organization.id <<<"$ORG")
[ "$(field organization.slug <<<"$ORG")" = acme-corp ] || fail "slug: $ORG"
[ "$(field organization.metadata.seats <<<"$ORG")" = 25 ] || fail "metadata: $ORG"
ok "CreateOrganization: slug acme-corp made from the name, metadata as JSON"
expect_code 6 "$(call "$AUTH" AdminService/CreateOrganization '{"name":"Other","slug":"acme-corp"}' "$ADMIN")" "taken slug"
expect_code 3 "$(call "$AUTH" AdminService/CreateOrganization '{"name":"Bad","slug":"Not A Slug"}' "$ADMIN")" "bad slug"
BIG=$(python3 -c 'print("x"*9000)')
expect_code 3 "$(call "$AUTH" AdminService/CreateOrganization "{\"name\":\"Big\",\"metadata\":{\"blob\":\"$BIG\"}}" "$ADMIN")" "oversized metadata"
expect_code 5 "$(call "$AUTH" AdminService/AddMember "{\"organizationId\":\"$ORG_ID\",\"userId\":\"0190c1d2-0000-7000-8000-000000000000\"}" "$ADMIN")" "unknown user"
expect_code 7 "$(call "$AUTH" AdminService/CreateOrganization '{"name":"Mine"}' "$BOB")" "non-admin"
ok "taken slug ALREADY_EXISTS, bad slug and 9 KB metadata INVALID_ARGUMENT, unknown user NOT_FOUND, non-admin PERMISSION_DENIED"

call "$AUTH" AdminService/AddMember "{\"organizationId\":\"$ORG_ID\",\"userId\":\"$ANN_ID\",\"roles\":[\"editor\"]}" "$ADMIN" >/dev/null
start=$(date +%s%N)
for _ in $(seq 1 100); do
  H=$(curl -s "http://$BACKEND_LISTEN/health/sync")
  [[ $H == *'"mirrored_companies":1'* && $H == *'"mirrored_memberships":1'* ]] && break
  sleep 0.01
done
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$ms" -lt 1000 ] || fail "company and membership mirrored after $ms ms: $H"
ok "the mirror has the company and the membership after $ms ms"

ANN=$(call "$AUTH" Refresh "{\"refreshToken\":\"$ANN_REFRESH\"}" | field accessToken)
V=$(call "$AUTH" Validate "{\"token\":\"$ANN\"}")
[ "$(field organizations.0.organizationId <<<"$V")" = "$ORG_ID" ] && [ "$(field organizations.0.roles.0 <<<"$V")" = editor ] \
  || fail "token after refresh: $V"
ok "after refresh the token lists the membership (editor)"

get_org() { curl -s -o "$WORK/org.json" -w '%{http_code}' -H "authorization: Bearer $1" "http://$BACKEND_LISTEN/orgs/$ORG_ID"; }
[ "$(get_org "$ANN")" = 200 ] && grep -c '"slug":"acme-corp"' "$WORK/org.json" >/dev/null || fail "member: $(cat "$WORK/org.json")"
[ "$(get_org "$BOB")" = 403 ] || fail "non-member: $(cat "$WORK/org.json")"
curl -s -H "authorization: Bearer $ANN" "http://$BACKEND_LISTEN/me" | grep -c '"organizations":\[{' >/dev/null || fail "/me"
ok "GET /orgs/{id}: member 200, non-member 403; /me lists the organization"

call "$AUTH" AdminService/RemoveMember "{\"organizationId\":\"$ORG_ID\",\"userId\":\"$ANN_ID\"}" "$ADMIN" >/dev/null
start=$(date +%s%N)
for _ in $(seq 1 100); do [ "$(get_org "$ANN")" = 403 ] && break; sleep 0.01; done
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$(get_org "$ANN")" = 403 ] && [ "$ms" -lt 1000 ] || fail "removal mirrored after $ms ms"
ok "RemoveMember mirrored after $ms ms: the member's unexpired token now gets 403"

EVENTS=$(grpcurl -plaintext -max-time 2 -H "authorization: Bearer $ADMIN" -d '{"afterSequence":0}' "$AUTH" auth.v1.AuthService/UserEvents 2>/dev/null || true)
for kind in ORGANIZATION_CREATED MEMBERSHIP_ADDED MEMBERSHIP_REMOVED; do
  grep -c "USER_EVENT_KIND_$kind" <<<"$EVENTS" >/dev/null || fail "no $kind event"
done
ok "UserEvents carries ORGANIZATION_CREATED, MEMBERSHIP_ADDED, MEMBERSHIP_REMOVED"

finish
