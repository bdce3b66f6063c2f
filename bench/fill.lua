-- wrk script: PUT keys /v2/keys/fill/k<n> for n in [0, total) exactly once, 100-byte values.
-- Each thread takes every nth key (n = thread count) and stops itself after its share.
local value = string.rep("v", 100)
local body = "value=" .. value
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  total = tonumber(args[1])
  nthreads = tonumber(args[2])
  n = tid
  done_count = 0
  share = math.floor((total - tid + nthreads - 1) / nthreads)
  errors = 0
end

function request()
  local key = n
  n = n + nthreads
  return wrk.format("PUT", "/v2/keys/fill/k" .. key, headers, body)
end

function response(status, hdrs, resp_body)
  if status ~= 200 and status ~= 201 then
    errors = errors + 1
  end
  done_count = done_count + 1
  if done_count >= share then
    wrk.thread:stop()
  end
end
