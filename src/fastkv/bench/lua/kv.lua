-- wrk script: closed-loop PUT or GET of random keys /v2/keys/bench/k<n>, n in [0, keyspace).
-- Arguments (after --): mode (put | get | qget), value bytes, key space.
-- PUT sends a form body value=<value bytes of 'v'>; qget adds quorum=true to every GET.
-- Any answer but 200/201 is counted (non2xx) and printed, so a figure with errors is visible as such.
-- When the environment variable FASTKV_BENCH_AUTHORIZATION is set, every request carries its value
-- as the Authorization header (v2 auth; kept out of the command line, which is recorded).
local counter = 0
local threads = {}
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local get_headers = {}

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "put"
  keyspace = tonumber(args[3] or "100000")
  body = "value=" .. string.rep("v", tonumber(args[2] or "100"))
  suffix = ""
  if mode == "qget" then
    suffix = "?quorum=true"
  end
  local authorization = os.getenv("FASTKV_BENCH_AUTHORIZATION")
  if authorization and authorization ~= "" then
    headers["Authorization"] = authorization
    get_headers["Authorization"] = authorization
  end
  math.randomseed(tid * 7919 + 17)
  errors = 0
end

function request()
  local path = "/v2/keys/bench/k" .. math.random(0, keyspace - 1)
  if mode == "put" then
    return wrk.format("PUT", path, headers, body)
  end
  return wrk.format("GET", path .. suffix, get_headers)
end

function response(status, hdrs, resp_body)
  if status ~= 200 and status ~= 201 then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("errors")
  end
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d sockerr=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, bad, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max))
end
