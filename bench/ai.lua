-- wrk script of bench/ai: POSTs the JSON body in $BODY_FILE with `Authorization: Bearer $API_KEY`
-- and prints one JSON line with throughput, latency percentiles and errors when done.
local body_file = os.getenv("BODY_FILE")
local key = os.getenv("API_KEY") or "none"

local f = assert(io.open(body_file, "r"), "BODY_FILE must name a readable file")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

function done(summary, latency, requests)
    local seconds = summary.duration / 1e6
    local e = summary.errors
    io.write(string.format(
        '{"requests":%d,"seconds":%.3f,"req_per_s":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non_2xx":%d,"socket_errors":%d}\n',
        summary.requests, seconds, summary.requests / seconds,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
        e.status, e.connect + e.read + e.write + e.timeout))
end
