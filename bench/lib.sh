# Shared pieces of the bench scripts (sourced, not run). Every script that
# sources it gets: PIDS (processes it started; stop_started kills exactly
# those), free_port, need_wrk, bench_dev_token (dev key, policy copy and an
# RS256 support token in $WORK) and wrk_summary (median figures of a wrk run).

PIDS=()
stop_started() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

need_wrk() {
  command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || { echo "needs wrk (Debian package wrk)"; exit 1; }; }
}

# Writes $WORK/keys (RS256 dev key bench-1 + JWKS), $WORK/policies (the
# shipped policy) and $WORK/consent.yaml; sets TOKEN to a support token for u1.
bench_dev_token() {
  "$BIN" token keygen --alg RS256 --kid bench-1 --out "$WORK/keys" >/dev/null
  mkdir -p "$WORK/policies"
  cp policies/*.yaml "$WORK/policies/" && rm -f "$WORK/policies/consent.yaml"
  cp policies/consent.yaml "$WORK/consent.yaml"
  TOKEN=$("$BIN" token mint --alg RS256 --kid bench-1 --key "$WORK/keys/bench-1.pem" \
    --role support --purpose support --ticket-id T-1 --subject u1 --ttl 3000 --sub employee-42)
}

# "rps p50_ms p99_ms non2xx" of a `wrk --latency` output file.
wrk_summary() {
  local rps p50 p99 reqs bad errs
  read -r rps p50 p99 reqs bad errs <<<"$(python3 "$(dirname "${BASH_SOURCE[0]}")/wrk_parse.py" "$1")"
  echo "$rps $p50 $p99 $bad"
}
