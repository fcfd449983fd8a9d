-- Shared by get.lua and post.lua: request headers from the environment, and a done() that
-- prints one line "BENCH_JSON {...}" for the harness to read.
--
--   BENCH_HEADERS       "Name: value" lines sent with every request
--   BENCH_HEADER_FILE   instead: blocks of such lines separated by a blank line; each request
--                       takes the next block (round robin per thread), to spread load over
--                       many keys. Building each request costs wrk some throughput.
--   BENCH_BODY          the request body (post.lua)
--   BENCH_IDEMPOTENCY_PREFIX  when set, every request carries an Idempotency-Key of its own:
--                       this prefix, the thread's number and a count
--
-- wrk counts only statuses >= 400 as errors; the harness also checks one response of each
-- kind with curl-like requests before loading, so a 3xx cannot pass for success.

local M = {}

local function parse(text)
  local headers = {}
  for line in text:gmatch("[^\r\n]+") do
    local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
    if name then headers[name] = value end
  end
  return headers
end

function M.setup(method)
  wrk.method = method
  wrk.headers = parse(os.getenv("BENCH_HEADERS") or "")
  local body = os.getenv("BENCH_BODY")
  if body and body ~= "" then
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
  end
  local prefix = os.getenv("BENCH_IDEMPOTENCY_PREFIX")
  if prefix and prefix ~= "" then
    local count = 0
    request = function()
      count = count + 1
      wrk.headers["Idempotency-Key"] = prefix .. "-" .. (thread_number or 0) .. "-" .. count
      return wrk.format()
    end
  end
  local file = os.getenv("BENCH_HEADER_FILE")
  if not file or file == "" then return end
  local blocks = {}
  local handle = assert(io.open(file))
  for block in (handle:read("*a") .. "\n\n"):gmatch("(.-)\n\n") do
    if block:match("%S") then
      local headers = parse(block)
      if wrk.headers["Content-Type"] then headers["Content-Type"] = wrk.headers["Content-Type"] end
      table.insert(blocks, headers)
    end
  end
  handle:close()
  local index = 0
  request = function()
    index = index % #blocks + 1
    return wrk.format(nil, nil, blocks[index])
  end
end

-- Numbers each thread, for keys that differ across threads.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_s":%.6f,"lat_p50_ms":%.3f,"lat_p99_ms":%.3f,' ..
    '"lat_max_ms":%.3f,"status_errors":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end

return M
