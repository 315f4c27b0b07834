-- wrk script: cycles through the tokens in BENCH_TOKENS_FILE (one a line) so
-- consecutive requests carry different tokens and a proxy's verified-token
-- cache cannot help. Each wrk thread starts at its own offset.
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS_FILE")) do
  tokens[#tokens + 1] = "Bearer " .. line
end
local counter = 0
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  counter = (id or 0) * 7919
end

function request()
  counter = counter + 1
  local tok = tokens[(counter % #tokens) + 1]
  return wrk.format("GET", nil, { ["Authorization"] = tok })
end
