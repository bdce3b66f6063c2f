-- wrk script: durable PUTs of a 100-byte value over a key space of 100k keys.
-- Any non-2xx answer is counted and reported, so a figure with errors is visible as such.
local value = string.rep("v", 100)
local body = "value=" .. value
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local counter = 0
local errors = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  math.randomseed(id * 7919 + 17)
end

function request()
  local key = "/v2/keys/bench/k" .. math.random(0, 99999)
  return wrk.format("PUT", key, headers, body)
end

function response(status, hdrs, resp_body)
  if status ~= 200 and status ~= 201 then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d sockerr=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
