# shellcheck shell=bash
# Helpers shared by the walk-through scripts (sourced, not run). A script sets WORK (a temp
# dir whose *.log files `fail` prints) before calling them.
#
# Pipes into grep use `grep -c` (reads all input): `grep -q` exits at the first match and the
# writer's SIGPIPE would fail the pipeline under pipefail.

passed=0

# A free TCP port on the loopback interface.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# fail MESSAGE: print it and the end of every server log, and stop.
fail() {
  echo "FAIL: $*"
  for log in "$WORK"/*.log; do [ -f "$log" ] && { echo "--- $log"; tail -n 40 "$log"; }; done
  exit 1
}

# ok MESSAGE: one more passed check.
ok() { passed=$((passed + 1)); echo "ok - $*"; }

# finish: the closing line CI reads.
finish() { echo "$passed passed, 0 failed"; }

# wait_up ADDR: until a plaintext server answers reflection (10 s at most).
wait_up() {
  for _ in $(seq 1 100); do grpcurl -plaintext "$1" list >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "server $1 did not start"
}

# call ADDR METHOD JSON [TOKEN] -> the response JSON, or the error as JSON ("code", "message").
# METHOD is an AuthService method (`Login`) or `Service/Method` (`AdminService/CreateUser`).
call() {
  local addr=$1 method=$2 data=$3 token=${4:-} args=(-plaintext -format-error)
  [ -n "$token" ] && args+=(-H "authorization: Bearer $token")
  case $method in
    */*) method=auth.v1.$method ;;
    *) method=auth.v1.AuthService/$method ;;
  esac
  grpcurl "${args[@]}" -d "$data" "$addr" "$method" 2>&1 || true
}

# expect_code CODE OUTPUT WHAT: OUTPUT is an error with gRPC code CODE.
expect_code() { grep -q "\"code\": $1\b" <<<"$2" || fail "$3: wanted code $1, got: $2"; }

# field PATH < JSON: the value at PATH (dotted for nested objects; a number indexes a list).
field() {
  python3 -c 'import json,sys
d=json.load(sys.stdin)
for k in sys.argv[1].split("."): d=d[int(k)] if isinstance(d,list) else d[k]
print(d)' "$1"
}
