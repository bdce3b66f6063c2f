-- wrk script: PUT each key /v2/keys/<prefix>/k<n>, n in [0, total), exactly once, then stop.
-- Arguments (after --): total, threads, value bytes, prefix, marker file path.
-- Thread t writes keys t, t + threads, t + 2 threads, ...  A written key is answered 201 (or 200
-- when it existed), so the thread counts those and, after its share, writes "<errors>" to <marker>.<t> (by rename) and stops.  Requests
-- beyond the share (connections still sending) are GET /version, which creates nothing.
-- wrk calls request() once on thread 0 before the run to check the script and drops that request,
-- so thread 0 starts one step early with a key that is never sent.
local counter = 0
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  total = tonumber(args[1])
  nthreads = tonumber(args[2])
  body = "value=" .. string.rep("v", tonumber(args[3]))
  prefix = args[4]
  marker = args[5]
  n = tid
  if tid == 0 then
    n = -nthreads
  end
  share = math.floor((total - tid + nthreads - 1) / nthreads)
  created = 0
  errors = 0
  finished = false
end

function request()
  if n >= total then
    return wrk.format("GET", "/version")
  end
  local key = n
  n = n + nthreads
  return wrk.format("PUT", "/v2/keys/" .. prefix .. "/k" .. key, headers, body)
end

function response(status, hdrs, resp_body)
  -- 200 with a "set" action: the key was there already (a second fill of a server given with
  -- --fastkv-url or --etcd-url); 200 otherwise is a GET /version beyond the share.
  if status == 201 or (status == 200 and string.find(resp_body, '"action":"set"', 1, true)) then
    created = created + 1
  elseif status ~= 200 then
    errors = errors + 1
  end
  if created >= share and not finished then
    finished = true
    local f = io.open(marker .. ".tmp" .. tid, "w")
    f:write(tostring(errors))
    f:close()
    os.rename(marker .. ".tmp" .. tid, marker .. "." .. tid)
    wrk.thread:stop()
  end
end
