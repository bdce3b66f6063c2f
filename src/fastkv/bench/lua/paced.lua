-- wrk script: open-loop PUTs at a fixed rate, latency measured from each request's intended send time.
-- Arguments (after --): rate (requests/s, all threads together), threads, value bytes, key space.
--
-- Each thread owns a schedule: slot k is due at start + k * interval.  A connection that is ready
-- to send claims the next slot in delay() and waits until just before it is due (wrk's timers have
-- millisecond granularity, so it aims 1 ms early rather than late).  When the server stalls and
-- every connection is busy, no slot is skipped: the overdue slots are sent as soon as connections
-- free up, and each is timed from when it was due.  That is how coordinated omission is avoided:
-- a stall costs every request scheduled during it, not just the few that were in flight.
--
-- The value carries "<due_us>:<sent_us>:" (padded to the value size) and the PUT answer echoes it,
-- so response() knows which request it is; latency = answer time - min(due, sent) (a request sent
-- early is timed from its real send).  Latencies go into a per-thread histogram printed by done().
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

local counter = 0
local threads = {}
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local rate = tonumber(args[1])
  local nthreads = tonumber(args[2])
  interval = 1000000 * nthreads / rate
  value_bytes = tonumber(args[3])
  keyspace = tonumber(args[4])
  math.randomseed(tid * 7919 + 17)
  start = nil
  slot = 0
  queue = {}
  qhead = 1
  qtail = 0
  hist = {}
  timed = 0
  untimed = 0
  errors = 0
end

local function claim()
  local t = now_us()
  if start == nil then
    start = t
  end
  local due = start + slot * interval
  slot = slot + 1
  return due, t
end

function delay()
  local due, t = claim()
  qtail = qtail + 1
  queue[qtail] = due
  local wait_ms = math.floor((due - t) / 1000) - 1
  if wait_ms < 0 then
    return 0
  end
  return wait_ms
end

function request()
  local due
  if qhead <= qtail then
    due = queue[qhead]
    queue[qhead] = nil
    qhead = qhead + 1
  else
    due = claim()
  end
  local stamp = string.format("%.0f:%.0f:", due, now_us())
  local value = stamp .. string.rep("v", value_bytes - #stamp)
  local path = "/v2/keys/bench/k" .. math.random(0, keyspace - 1)
  return wrk.format("PUT", path, headers, "value=" .. value)
end

local function bucket(us)
  if us < 1000 then
    return math.floor(us / 10) * 10
  elseif us < 10000 then
    return math.floor(us / 100) * 100
  elseif us < 1000000 then
    return math.floor(us / 1000) * 1000
  end
  return math.floor(us / 10000) * 10000
end

function response(status, hdrs, resp_body)
  local now = now_us()
  if status ~= 200 and status ~= 201 then
    errors = errors + 1
  end
  local due, sent = string.match(resp_body, '"value":"(%d+):(%d+):')
  if due == nil then
    untimed = untimed + 1
    return
  end
  local from = math.min(tonumber(due), tonumber(sent))
  local b = bucket(math.max(0, now - from))
  hist[b] = (hist[b] or 0) + 1
  timed = timed + 1
end

function done(summary, latency, requests)
  local merged = {}
  local timed_all, untimed_all, errors_all = 0, 0, 0
  for _, thread in ipairs(threads) do
    for b, c in pairs(thread:get("hist")) do
      merged[b] = (merged[b] or 0) + c
    end
    timed_all = timed_all + thread:get("timed")
    untimed_all = untimed_all + thread:get("untimed")
    errors_all = errors_all + thread:get("errors")
  end
  local parts = {}
  for b, c in pairs(merged) do
    table.insert(parts, string.format("%d:%d", b, c))
  end
  io.write("HIST " .. table.concat(parts, " ") .. "\n")
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d sockerr=%d timed=%d untimed=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    timed_all, untimed_all, latency:percentile(50), latency:percentile(99), latency.max))
end
