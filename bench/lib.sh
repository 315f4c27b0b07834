# Shared pieces of the bench scripts (sourced, not run). Every script that
# sources it gets: PIDS (processes it started; stop_started kills exactly
# those and waits for them), start_on_cpu (a pinned background command),
# bench_begin (work directory and bench upstream), write_bench_config and
# start_bench_proxy (purposegate configured for the bench, ready), free_port,
# need_wrk, bench_dev_token (dev key, policy copy and an RS256 support token
# in $WORK) and wrk_summary (median figures of a wrk run).

PIDS=()
stop_started() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}

# Starts a command in the background on CPU $1 (unpinned when PIN=0) and
# records its own PID in PIDS and LAST_PID: the subshell execs the command,
# so stop_started stops the command itself. Redirect at the call site; never
# call it inside $(...), whose pipe the command would hold open.
start_on_cpu() { # $1 CPU, rest: command
  (if [ "${PIN:-1}" = 1 ]; then exec taskset -c "$@"; else shift; exec "$@"; fi) &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# A work directory removed at exit (after everything started is stopped) and
# the bench upstream on CPU 1. Sets WORK and UP_PORT (globals: never call it
# inside $(...)). Needs examples/bench_upstream built.
bench_begin() {
  WORK=$(mktemp -d)
  trap 'stop_started; rm -rf "$WORK"' EXIT
  UP_PORT=$(free_port)
  start_on_cpu 1 target/release/examples/bench_upstream "127.0.0.1:$UP_PORT" >/dev/null
}

# purposegate's config in front of 127.0.0.1:$UP_PORT with what
# bench_dev_token left in $WORK (keys/jwks.json, policies/, consent.yaml):
# writes $WORK/config-NAME.yaml. Sets PROXY_PORT and PROXY_ADMIN (globals:
# never call it inside $(...)).
write_bench_config() { # $1 name, $2 fsync, $3 extra audit members (", k: v"), $4 extra jwt members, $5 extra top-level YAML
  PROXY_PORT=$(free_port); PROXY_ADMIN=$(free_port)
  cat > "$WORK/config-$1.yaml" <<YAML
listen: "127.0.0.1:$PROXY_PORT"
admin_listen: "127.0.0.1:$PROXY_ADMIN"
jwt: {issuer: "https://idp.example.test", audiences: ["purposegate"], algorithms: ["RS256"], jwks_file: "keys/jwks.json"${4:-}}
policy_dir: "policies"
consent_file: "consent.yaml"
upstreams: {content: {url: "http://127.0.0.1:$UP_PORT"}}
audit: {path: "audit-$1/audit.jsonl", fsync: "$2"${3:-}}
${5:-}
YAML
}

# purposegate configured by write_bench_config, started on CPU 1 (log:
# $WORK/proxy-NAME.log); waits until /readyz answers, or stops with the log.
# Sets PROXY_PORT, PROXY_ADMIN and PROXY_PID (globals: never call it inside
# $(...)).
start_bench_proxy() { # the arguments of write_bench_config
  write_bench_config "$@"
  RUST_LOG=warn start_on_cpu 1 "$BIN" serve --config "$WORK/config-$1.yaml" >"$WORK/proxy-$1.log" 2>&1
  PROXY_PID=$LAST_PID
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PROXY_ADMIN/readyz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "purposegate $1 did not become ready; its log:" >&2; cat "$WORK/proxy-$1.log" >&2; exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

need_wrk() {
  command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || { echo "needs wrk (Debian package wrk)"; exit 1; }; }
}

# Writes $WORK/keys (RS256 dev key bench-1 + JWKS), $WORK/policies (the
# shipped policy) and $WORK/consent.yaml; sets TOKEN to a support token for u1.
bench_dev_token() {
  "$BIN" token keygen --alg RS256 --kid bench-1 --out "$WORK/keys" >/dev/null
  bench_policy
  TOKEN=$("$BIN" token mint --alg RS256 --kid bench-1 --key "$WORK/keys/bench-1.pem" \
    --role support --purpose support --ticket-id T-1 --subject u1 --ttl 3000 --sub employee-42)
}

# The shipped policy in $WORK/policies and its consent file in $WORK.
bench_policy() {
  mkdir -p "$WORK/policies"
  cp policies/*.yaml "$WORK/policies/" && rm -f "$WORK/policies/consent.yaml"
  cp policies/consent.yaml "$WORK/consent.yaml"
}

# "rps p50_ms p99_ms non2xx" of a `wrk --latency` output file.
wrk_summary() {
  local rps p50 p99 reqs bad errs
  read -r rps p50 p99 reqs bad errs <<<"$(python3 "$(dirname "${BASH_SOURCE[0]}")/wrk_parse.py" "$1")"
  echo "$rps $p50 $p99 $bad"
}
