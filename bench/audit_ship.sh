#!/usr/bin/env bash
# The audit trail in PostgreSQL: figures, not a test (they depend on the
# machine, its disk and what else runs on it).
#   1. shipping throughput: a local log of SHIP_RECORDS records (rotated
#      every 100,000) shipped by `purposegate audit ship` (the shipper
#      `serve` runs) into a fresh database — target >= 50,000 records/s;
#   2. `audit verify --postgres` over those rows, records/s;
#   3. `audit report --owner` on a table of REPORT_ROWS rows (default 10^7,
#      generated with generate_series: 100,000 owners, decision + complete
#      record per request, three monthly partitions), wall time of the
#      command for RUNS different owners — target p50 < 50 ms.
# Needs the local PostgreSQL (psql as user postgres, trust auth on 127.0.0.1).
# Creates two databases purposegate_bench_ship_* and drops them at exit.
#
#   bench/audit_ship.sh [REPORT_ROWS] [SHIP_RECORDS] [RUNS]   (defaults 10000000 1000000 21)
set -euo pipefail
cd "$(dirname "$0")/.."
REPORT_ROWS=${1:-10000000}
SHIP_RECORDS=${2:-1000000}
RUNS=${3:-21}
PGHOST=${PGHOST:-127.0.0.1}
PGUSER=${PGUSER:-postgres}
PGOPTIONS='-c client_min_messages=warning'
export PGHOST PGUSER PGOPTIONS

cargo build --release --locked --quiet --bin purposegate --example audit_log_gen
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
BIN=target/release/purposegate
# The local log goes beside the crate (a real disk), not to a tmpfs /tmp.
WORK=$(mktemp -d "$PWD/target/audit-ship-bench.XXXXXX")
SHIP_DB=purposegate_bench_ship_$$
REPORT_DB=purposegate_bench_report_$$
cleanup() {
  psql -q -d postgres -c "DROP DATABASE IF EXISTS $SHIP_DB WITH (FORCE)" 2>/dev/null || true
  psql -q -d postgres -c "DROP DATABASE IF EXISTS $REPORT_DB WITH (FORCE)" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }

write_config() { # $1 name, $2 database
  cat > "$WORK/$1.yaml" <<YAML
listen: "127.0.0.1:1"
admin_listen: "127.0.0.1:2"
jwt: {issuer: "i", audiences: ["a"], algorithms: ["ES256"], jwks_file: "jwks.json"}
policy_dir: "policies"
consent_file: "consent.yaml"
upstreams: {content: {url: "http://127.0.0.1:9"}}
audit:
  path: "log-$1/audit.jsonl"
  ship: {postgres_url: "postgres://$PGUSER@$PGHOST:5432/$2", instance: "bench-0"}
YAML
}

for db in "$SHIP_DB" "$REPORT_DB"; do
  psql -q -d postgres -c "CREATE DATABASE $db"
done
write_config ship "$SHIP_DB"
write_config report "$REPORT_DB"
"$BIN" audit migrate --config "$WORK/ship.yaml" >/dev/null
"$BIN" audit migrate --config "$WORK/report.yaml" >/dev/null

echo "== shipping $SHIP_RECORDS records"
target/release/examples/audit_log_gen "$WORK/log-ship" "$SHIP_RECORDS" 100000 >/dev/null
du -sh "$WORK/log-ship" | awk '{print "local log: " $1}'
t0=$(now_ms)
ship_out=$("$BIN" audit ship --config "$WORK/ship.yaml")
t1=$(now_ms)
echo "$ship_out"
echo "ship wall time (process start to exit): $((t1 - t0)) ms = $((SHIP_RECORDS * 1000 / (t1 - t0 + 1))) records/s"
# The database's own ceiling here: COPY of the same rows from a file into a
# table with the same indexes (no shipper, no network, no parsing on our side).
psql -q -d "$SHIP_DB" -c "\\copy (SELECT instance, chain, seq, ts, event, request_id, decision, reason, owner, subject, purpose, justification, route, status, record FROM audit_records) TO '$WORK/rows.copy'"
psql -q -d "$SHIP_DB" -c "CREATE TABLE ceiling (LIKE audit_records INCLUDING ALL)"
t0=$(now_ms)
psql -q -d "$SHIP_DB" -c "\\copy ceiling (instance, chain, seq, ts, event, request_id, decision, reason, owner, subject, purpose, justification, route, status, record) FROM '$WORK/rows.copy'"
t1=$(now_ms)
echo "reference: psql \\copy of the same rows into an indexed table: $((t1 - t0)) ms = $((SHIP_RECORDS * 1000 / (t1 - t0 + 1))) records/s"
psql -q -d "$SHIP_DB" -c "DROP TABLE ceiling"
rm -f "$WORK/rows.copy"

echo "== audit verify --postgres"
t0=$(now_ms)
verify_out=$("$BIN" audit verify --postgres "postgres://$PGUSER@$PGHOST:5432/$SHIP_DB")
t1=$(now_ms)
echo "$verify_out" | head -2
echo "verify: $((t1 - t0)) ms = $((SHIP_RECORDS * 1000 / (t1 - t0 + 1))) records/s"

echo "== audit report --owner on $REPORT_ROWS rows"
t0=$(now_ms)
# Load without the secondary indexes, then build them (the migration is
# idempotent: running its file again creates exactly the dropped indexes).
psql -q -v ON_ERROR_STOP=1 -d "$REPORT_DB" <<SQL
DROP INDEX audit_records_owner, audit_records_subject, audit_records_justification, audit_records_request, audit_records_ts;
SET synchronous_commit = off;
INSERT INTO audit_records (instance, chain, seq, ts, event, request_id, decision, reason, owner, subject, purpose, justification, route, status, record)
SELECT 'bench-' || (r % 4), 'chain-' || (r % 4), g, ts, ev, rid, 'allow', NULL, owner, subj, 'support', just, 'conversation', 200,
       format('{"ts":"%s","seq":%s,"request_id":"%s","event":"%s","decision":"allow","reason":null,"subject":"%s","roles":["support"],"purpose":"support","justification":"%s","method":"GET","path":"/v1/users/%s/conversations/c%s","owner":"%s","route":"conversation","status":200,"bytes":%s,"duration_ms":%s,"client_addr":"10.0.0.1:5555","token_id":"jti-%s","prev_hash":"%s","hash":"%s"}',
              to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), g, rid, ev, subj, just, owner, r, owner,
              CASE WHEN ev = 'complete' THEN '4096' ELSE 'null' END, CASE WHEN ev = 'complete' THEN '1.25' ELSE 'null' END,
              r, repeat('0', 64), repeat('0', 64))
  FROM (SELECT g, (g + 1) / 2 AS r,
               CASE WHEN g % 2 = 1 THEN 'decision' ELSE 'complete' END AS ev,
               'req-' || ((g + 1) / 2) AS rid,
               'u' || (((g + 1) / 2) * 7919 % 100000) AS owner,
               'e' || (((g + 1) / 2) % 2000) AS subj,
               'T-' || (((g + 1) / 2) % 50000) AS just,
               timestamptz '2026-11-01 00:00:00+00' + g * (interval '90 days' / $REPORT_ROWS) AS ts
          FROM generate_series(1::bigint, $REPORT_ROWS) g) s;
SQL
psql -q -d "$REPORT_DB" -f migrations/audit/0001_audit_records.sql
psql -q -d "$REPORT_DB" -c "VACUUM ANALYZE audit_records"
t1=$(now_ms)
psql -At -d "$REPORT_DB" -c "SELECT (SELECT count(*) FROM audit_records) || ' rows in ' || count(*) || ' partitions, ' || pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits WHERE inhparent = 'audit_records'::regclass" \
  | sed "s/^/table: /;s/$/ (loaded and indexed in $(( (t1 - t0) / 1000 )) s)/"
psql -At -d "$REPORT_DB" -c "SELECT 'rows per owner: ' || count(*) FROM audit_records WHERE owner = 'u4242'"
url="postgres://$PGUSER@$PGHOST:5432/$REPORT_DB"
"$BIN" audit report --postgres "$url" --owner u1 --format json >/dev/null 2>&1 # warm-up
times=()
for i in $(seq 1 "$RUNS"); do
  owner="u$(( (i * 4099) % 100000 ))"
  t0=$(date +%s%N)
  "$BIN" audit report --postgres "$url" --owner "$owner" --format json >"$WORK/report.json" 2>/dev/null
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000 )))
done
n=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$WORK/report.json")
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
p50=$(echo "$sorted" | awk -v n="$RUNS" 'NR == int((n + 1) / 2) {print}')
max=$(echo "$sorted" | tail -1)
echo "audit report --owner (whole command, $RUNS owners, $n accesses each): p50 $((p50 / 1000)).$(( (p50 % 1000) / 100 )) ms, max $((max / 1000)) ms"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
psql -At -d "$REPORT_DB" -c "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON)
  SELECT d.instance, d.record, c.record FROM audit_records d
  LEFT JOIN LATERAL (SELECT c.record FROM audit_records c WHERE c.request_id = d.request_id AND c.instance = d.instance
     AND c.chain = d.chain AND c.event = 'complete' AND c.ts >= d.ts ORDER BY c.seq LIMIT 1) c ON true
  WHERE d.owner = 'u777' AND d.event = 'decision' ORDER BY d.ts, d.instance, d.chain, d.seq" | grep -E "Execution Time" | sed 's/^/query alone: /'
