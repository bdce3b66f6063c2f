-- wrk script: local (non-quorum) GETs of random keys /v2/keys/fill/k<n>, n in [0, keys), which
-- bench/fill.lua wrote beforehand.  wrk -s bench/get.lua URL -- <keys> (default 10000).
-- Anything but 200 is counted and reported, so a figure with errors (a missing key) shows as such.
local counter = 0
local errors = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  keys = tonumber(args[1] or "10000")
  math.randomseed(id * 7919 + 17)
end

function request()
  return wrk.format("GET", "/v2/keys/fill/k" .. math.random(0, keys - 1))
end

function response(status, hdrs, resp_body)
  if status ~= 200 then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d sockerr=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
