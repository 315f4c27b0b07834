-- wrk script: every request carries the same bearer token (the verified-token
-- cache hits after the first request). The token comes from BENCH_TOKEN.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
