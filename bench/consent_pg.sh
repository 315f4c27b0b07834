#!/usr/bin/env bash
# The PostgreSQL consent backend at the scale of a real user base (not a test).
#  1. Loads 10,000,000 users into a throwaway database with COPY: every user
#     u0..u9999999 has an opt-out period, ~10% of them still in force (the
#     rest closed in the past), plus deletion requests for 1%.
#  2. Reports lookup p50/p99 for cache misses (one round trip) and hits,
#     calling the store directly (examples/consent_pg_lookup.rs).
#  3. Reports proxy throughput (wrk) with that database vs. the file backend
#     with 10 users: one user (always a cache hit) and random users of the
#     10^7 (mostly cache misses).
# Drops the database at the end. Bounded in time; stops only what it started.
#
#   bench/consent_pg.sh [USERS] [SECONDS_PER_RUN]     (defaults 10000000 and 5)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
USERS=${1:-10000000}
DUR=${2:-5}
PGHOST=127.0.0.1 PGPORT=5432 PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER
need_wrk
pg_isready -q || { echo "PostgreSQL is not answering on $PGHOST:$PGPORT"; exit 1; }

cargo build --release --locked --quiet --bin purposegate --example bench_upstream --example consent_pg_lookup
BIN=target/release/purposegate
DB="pg_bench_$$"
WORK=$(mktemp -d)
cleanup() {
  stop_started
  psql -qd postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- 1. load -------------------------------------------------------------
psql -qd postgres -c "CREATE DATABASE $DB" >/dev/null
URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB"
"$BIN" token keygen --alg RS256 --kid bench-1 --out "$WORK/keys" >/dev/null
mkdir -p "$WORK/policies"
cp policies/*.yaml "$WORK/policies/" && rm -f "$WORK/policies/consent.yaml"
cp policies/consent.yaml "$WORK/consent.yaml"
UP_PORT=$(free_port)
write_config() { # $1 name, $2 consent yaml line(s); prints the proxy port
  local port admin
  port=$(free_port); admin=$(free_port)
  cat > "$WORK/config-$1.yaml" <<YAML
listen: "127.0.0.1:$port"
admin_listen: "127.0.0.1:$admin"
jwt: {issuer: "https://idp.example.test", audiences: ["purposegate"], algorithms: ["RS256"], jwks_file: "keys/jwks.json"}
policy_dir: "policies"
$2
upstreams: {content: {url: "http://127.0.0.1:$UP_PORT"}}
audit: {path: "audit-$1/audit.jsonl", fsync: "never"}
YAML
  echo "$port $admin"
}
read -r P_PG A_PG <<<"$(write_config pg "consent: {postgres_url: \"$URL\", cache_ttl_seconds: 60, max_staleness_seconds: 300, cache_max_entries: 100000, pool_size: 8}")"
read -r P_FILE A_FILE <<<"$(write_config file 'consent_file: "consent.yaml"')"
"$BIN" consent migrate --config "$WORK/config-pg.yaml"

t0=$(date +%s.%N)
# Bulk load: indexes and notify triggers off during COPY, rebuilt after.
psql -qd "$DB" -v ON_ERROR_STOP=1 <<SQL
ALTER TABLE consent_user_opt_outs DISABLE TRIGGER USER;
ALTER TABLE consent_deletion_requests DISABLE TRIGGER USER;
DROP INDEX consent_user_opt_outs_user_id;
SQL
psql -qd "$DB" -v ON_ERROR_STOP=1 -c "COPY (
  SELECT 'u' || i,
         CASE WHEN i % 10 = 0 THEN timestamptz '2026-03-01' ELSE timestamptz '2024-01-01' END,
         CASE WHEN i % 10 = 0 THEN NULL ELSE timestamptz '2024-06-01' END
    FROM generate_series(0, $USERS - 1) AS i) TO STDOUT" \
  | psql -qd "$DB" -v ON_ERROR_STOP=1 -c "COPY consent_user_opt_outs (user_id, valid_from, valid_until) FROM STDIN"
psql -qd "$DB" -v ON_ERROR_STOP=1 -c "COPY (
  SELECT 'u' || i, timestamptz '2026-10-01' FROM generate_series(7, $USERS - 1, 100) AS i) TO STDOUT" \
  | psql -qd "$DB" -v ON_ERROR_STOP=1 -c "COPY consent_deletion_requests (user_id, requested_at) FROM STDIN"
psql -qd "$DB" -v ON_ERROR_STOP=1 <<SQL
CREATE INDEX consent_user_opt_outs_user_id ON consent_user_opt_outs (user_id);
ALTER TABLE consent_user_opt_outs ENABLE TRIGGER USER;
ALTER TABLE consent_deletion_requests ENABLE TRIGGER USER;
VACUUM ANALYZE consent_user_opt_outs;
VACUUM ANALYZE consent_deletion_requests;
SQL
t1=$(date +%s.%N)
ROWS=$(psql -Atqd "$DB" -c "SELECT (SELECT count(*) FROM consent_user_opt_outs) || ' opt-out rows (' || (SELECT count(*) FROM consent_user_opt_outs WHERE valid_until IS NULL) || ' in force), ' || (SELECT count(*) FROM consent_deletion_requests) || ' deletion requests, ' || pg_size_pretty(pg_database_size(current_database()))")
echo "loaded $USERS users in $(python3 -c "print(f'{$t1-$t0:.0f}')") s: $ROWS"
echo

# --- 2. lookup latency (store called directly) ---------------------------
target/release/examples/consent_pg_lookup "$URL" "$USERS" 20000
echo

# --- 3. proxy throughput ---------------------------------------------------
taskset -c 1 target/release/examples/bench_upstream "127.0.0.1:$UP_PORT" >/dev/null & PIDS+=($!)
for name in pg file; do
  RUST_LOG=warn taskset -c 1 "$BIN" serve --config "$WORK/config-$name.yaml" 2>"$WORK/proxy-$name.log" & PIDS+=($!)
done
for a in "$A_PG" "$A_FILE"; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$a/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
SUPPORT=$("$BIN" token mint --alg RS256 --kid bench-1 --key "$WORK/keys/bench-1.pem" \
  --role support --purpose support --ticket-id T-1 --subject u1 --ttl 3000)
TRAINING=$("$BIN" token mint --alg RS256 --kid bench-1 --key "$WORK/keys/bench-1.pem" \
  --role research --purpose training --ttl 3000)
cat > "$WORK/one.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $SUPPORT"
wrk.path = "/v1/users/u1/conversations/c1"
LUA
# Random users of the 10^7: the bench upstream marks content not de-identified,
# so training reads end 403 not_deidentified after the full pipeline (consent
# lookup, upstream, audit) — the same work for both backends.
cat > "$WORK/random.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TRAINING"
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/users/u" .. math.random(0, $USERS - 1) .. "/conversations/c1")
end
LUA
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SUPPORT" "http://127.0.0.1:$P_PG/v1/users/u1/conversations/c1")" = 200 ] \
  || { echo "the PostgreSQL-backed proxy did not allow the bench read"; cat "$WORK/proxy-pg.log"; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SUPPORT" "http://127.0.0.1:$P_PG/v1/users/u7/conversations/c1")" = 403 ] \
  || { echo "the PostgreSQL-backed proxy did not refuse an out-of-scope read"; exit 1; }

run() { # $1 port, $2 script, $3 conns → "rps p50_ms p99_ms non2xx"
  local threads=$(( $3 < 2 ? 1 : 2 ))
  taskset -c 0 wrk -t"$threads" -c"$3" -d"${DUR}s" --latency -s "$WORK/$2" "http://127.0.0.1:$1" > "$WORK/wrk.out"
  wrk_summary "$WORK/wrk.out"
}
echo "| consent backend | requests | conns | req/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---|---:|---:|---:|---:|---:|"
for c in 1 64; do
  for case in "one.lua:one user (cache hit)" "random.lua:random users of $USERS (mostly misses)"; do
    script=${case%%:*}; label=${case#*:}
    read -r f_rps f50 f99 fn <<<"$(run "$P_FILE" "$script" "$c")"
    read -r p_rps p50 p99 pn <<<"$(run "$P_PG" "$script" "$c")"
    echo "| file, 10 users | $label | $c | $f_rps | $f50 | $f99 | $fn |"
    echo "| PostgreSQL, $USERS users | $label | $c | $p_rps | $p50 | $p99 | $pn |"
  done
done
echo
curl -s "http://127.0.0.1:$A_PG/metrics" | grep '^purposegate_consent_lookups_total' | tr '\n' ' '; echo
echo "machine: $(nproc) cores, $(uname -m); PostgreSQL $(psql -Atqd postgres -c 'SHOW server_version'); wrk on CPU 0, upstream and proxy on CPU 1, PostgreSQL unpinned; ${DUR}s per run; fsync=never; $(date -u +%Y-%m-%d)"
