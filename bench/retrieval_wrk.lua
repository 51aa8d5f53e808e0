-- wrk script of bench/retrieval.py: every request fetches a random path of the file named by
-- SR_PATHS (one per line), with the AUTHTOKEN header SR_TOKEN when it is set.
local paths = {}
for line in io.lines(os.getenv("SR_PATHS")) do
  paths[#paths + 1] = line
end
local token = os.getenv("SR_TOKEN")
local headers = {}
if token ~= nil and token ~= "" then
  headers["AUTHTOKEN"] = token
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("number", threads)
end

function init(args)
  math.randomseed(os.time() * 100 + number)
end

function request()
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
