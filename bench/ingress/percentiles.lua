-- wrk script: one line with requests, rps, p50/p90/p99/p99.9 and max latency (ms).
done = function(summary, latency, requests)
  local s = string.format("req=%d rps=%.0f", summary.requests, summary.requests / (summary.duration / 1e6))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    s = s .. string.format(" p%s=%.2f", p, latency:percentile(p) / 1000)
  end
  s = s .. string.format(" max=%.1f", latency.max / 1000)
  io.write(s .. "\n")
end
