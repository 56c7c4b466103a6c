-- Roster store batch, version 1: runs one batch of the components' `store` interface
-- atomically (a Lua script runs with nothing interleaved). Every key is in KEYS, so Redis
-- Cluster checks they share a slot and routes the script there.
--
-- ARGV: "1", guard count, op count, then each guard, then each op, as flat fields; or
-- "2", deadline, guard count, ...: the same, refused with {"X"} (nothing applied) when
-- Redis runs it after `deadline` (ms since the epoch, Redis' clock), so a batch whose
-- sender gave up waiting never lands later:
--   guards: E k | A k | V k has v | F k field has v | LE k field n | GE k field n
--           | S k limit | Z k member n | ZB k member n
--   ops:    get k | set k v ttl | del k | pexpire k ttl | hget k f | hmget k n f...
--           | hgetall k | hset k n (f v)... | hdel k n f... | sadd k n m... | srem k n m...
--           | smembers k | scard k | zadd k n (score m)... | zrem k n m...
--           | zrange k min max limit | zscore k m | zincrby k m delta
--           | zremrange k min max | zcard k | hstrlen k f
--           | zappend k counter keep n m... | zrangews k min max limit
-- where k is an index into KEYS, `has` is "1" when a value follows the check ("0": the
-- key or field must be absent; the value field is then empty), ttl "" means none, and
-- min/max are integers or -inf/+inf. Z holds when the member's score is at most n; ZB
-- when the member is absent or its score is below n.
--
-- Reply (flat, so every client can read it):
--   {"R", i}          guard i (0-based) failed; nothing was applied
--   {"E", message}    the batch meets a key of another type; nothing was applied
--   {"X"}             the deadline passed before the batch ran; nothing was applied
--   {"A", n, ...}     applied; then n replies, each one of
--                     "N" | "I", int | "T", text | "L", n, ("T", text | "N")... |
--                     "P", n, (field, value)... | "M", n, member...

local argv = ARGV
local pos
if argv[1] == "1" then
  pos = 2
elseif argv[1] == "2" then
  local t = redis.call("TIME")
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now > tonumber(argv[2]) then return {"X"} end
  pos = 3
else
  return {"E", "unknown batch format " .. tostring(argv[1])}
end
local guard_count = tonumber(argv[pos])
local op_count = tonumber(argv[pos + 1])
pos = pos + 2
local function take()
  local v = argv[pos]
  pos = pos + 1
  return v
end
local function key() return KEYS[tonumber(take())] end

-- Decode everything first.
local guards = {}
for i = 1, guard_count do
  local g = {kind = take(), key = key()}
  if g.kind == "V" then g.has = take() == "1"; g.value = take()
  elseif g.kind == "F" then g.field = take(); g.has = take() == "1"; g.value = take()
  elseif g.kind == "LE" or g.kind == "GE" then g.field = take(); g.bound = tonumber(take())
  elseif g.kind == "S" then g.limit = tonumber(take())
  elseif g.kind == "Z" or g.kind == "ZB" then g.member = take(); g.bound = tonumber(take())
  end
  guards[i] = g
end
local known = {
  get = true, set = true, del = true, pexpire = true, hget = true, hmget = true, hgetall = true,
  hset = true, hdel = true, sadd = true, srem = true, smembers = true, scard = true,
  zadd = true, zrem = true, zrange = true, zscore = true, zincrby = true, zremrange = true,
  zcard = true, hstrlen = true, zappend = true, zrangews = true,
}
local ops = {}
for i = 1, op_count do
  local o = {kind = take(), key = key()}
  local k = o.kind
  if not known[k] then return {"E", "unknown op " .. tostring(k)} end
  if k == "set" then o.value = take(); o.ttl = take()
  elseif k == "pexpire" then o.ttl = take()
  elseif k == "hget" or k == "hstrlen" then o.field = take()
  elseif k == "zscore" then o.member = take()
  elseif k == "zincrby" then o.member = take(); o.delta = take()
  elseif k == "zremrange" then o.min = take(); o.max = take()
  elseif k == "hmget" or k == "hdel" or k == "sadd" or k == "srem" or k == "zrem" then
    local n = tonumber(take())
    o.items = {}
    for j = 1, n do o.items[j] = take() end
  elseif k == "hset" or k == "zadd" then
    local n = tonumber(take())
    o.items = {}
    for j = 1, 2 * n do o.items[j] = take() end
  elseif k == "zrange" or k == "zrangews" then o.min = take(); o.max = take(); o.limit = take()
  elseif k == "zappend" then
    o.counter = take(); o.keep = tonumber(take())
    local n = tonumber(take())
    o.items = {}
    for j = 1, n do o.items[j] = take() end
  end
  ops[i] = o
end

-- Types: refuse before writing anything if some op would meet a key of another type.
local types = {}
local function type_of(k)
  if types[k] == nil then types[k] = redis.call("TYPE", k).ok end
  return types[k]
end
local needs = {
  get = "string", hget = "hash", hmget = "hash", hgetall = "hash", hset = "hash", hdel = "hash",
  sadd = "set", srem = "set", smembers = "set", scard = "set",
  zadd = "zset", zrem = "zset", zrange = "zset", zscore = "zset", zincrby = "zset",
  zremrange = "zset", zcard = "zset", hstrlen = "hash", zappend = "zset", zrangews = "zset",
}
local creates = {
  set = "string", hset = "hash", sadd = "set", zadd = "zset", zincrby = "zset", zappend = "zset",
}
local guard_needs = {V = "string", F = "hash", LE = "hash", GE = "hash", Z = "zset", ZB = "zset"}
for _, g in ipairs(guards) do
  local want, have = guard_needs[g.kind], type_of(g.key)
  if want and have ~= "none" and have ~= want then
    return {"E", "WRONGTYPE: key " .. g.key .. " holds a " .. have .. ", a guard needs a " .. want}
  end
end
for _, o in ipairs(ops) do
  local want, have = needs[o.kind], type_of(o.key)
  if want and have ~= "none" and have ~= want then
    return {"E", "WRONGTYPE: key " .. o.key .. " holds a " .. have .. ", " .. o.kind .. " needs a " .. want}
  end
  if creates[o.kind] then types[o.key] = creates[o.kind]
  elseif o.kind == "del" then types[o.key] = "none" end
end

-- Guards.
for i, g in ipairs(guards) do
  local k, ok = g.kind, false
  if k == "E" then ok = redis.call("EXISTS", g.key) == 1
  elseif k == "A" then ok = redis.call("EXISTS", g.key) == 0
  elseif k == "V" then
    local v = redis.call("GET", g.key)
    if g.has then ok = v == g.value else ok = v == false end
  elseif k == "F" then
    local v = redis.call("HGET", g.key, g.field)
    if g.has then ok = v == g.value else ok = v == false end
  elseif k == "LE" or k == "GE" then
    local v = tonumber(redis.call("HGET", g.key, g.field) or "")
    if v ~= nil then
      if k == "LE" then ok = v <= g.bound else ok = v >= g.bound end
    end
  elseif k == "S" then
    local t, size = type_of(g.key), 0
    if t == "set" then size = redis.call("SCARD", g.key)
    elseif t == "zset" then size = redis.call("ZCARD", g.key)
    elseif t == "hash" then size = redis.call("HLEN", g.key) end
    ok = size < g.limit
  elseif k == "Z" then
    local s = tonumber(redis.call("ZSCORE", g.key, g.member) or "")
    ok = s ~= nil and s <= g.bound
  elseif k == "ZB" then
    local s = tonumber(redis.call("ZSCORE", g.key, g.member) or "")
    ok = s == nil or s < g.bound
  end
  if not ok then return {"R", i - 1} end
end

-- Ops, in order; each appends its reply.
local out = {"A", op_count}
local function push(...)
  for _, v in ipairs({...}) do out[#out + 1] = v end
end
local function text_or_none(v)
  if v then push("T", v) else push("N") end
end
for _, o in ipairs(ops) do
  local k = o.kind
  if k == "get" then text_or_none(redis.call("GET", o.key))
  elseif k == "set" then
    if o.ttl == "" then redis.call("SET", o.key, o.value) else redis.call("SET", o.key, o.value, "PX", o.ttl) end
    push("N")
  elseif k == "del" then push("I", redis.call("DEL", o.key))
  elseif k == "pexpire" then push("I", redis.call("PEXPIRE", o.key, o.ttl))
  elseif k == "hget" then text_or_none(redis.call("HGET", o.key, o.field))
  elseif k == "hmget" then
    push("L", #o.items)
    if #o.items > 0 then
      local values = redis.call("HMGET", o.key, unpack(o.items))
      for j = 1, #o.items do text_or_none(values[j]) end
    end
  elseif k == "hgetall" then
    local pairs_ = redis.call("HGETALL", o.key)
    push("P", #pairs_ / 2)
    for j = 1, #pairs_ do push(pairs_[j]) end
  elseif k == "hset" then
    if #o.items > 0 then push("I", redis.call("HSET", o.key, unpack(o.items))) else push("I", 0) end
  elseif k == "hdel" then
    if #o.items > 0 then push("I", redis.call("HDEL", o.key, unpack(o.items))) else push("I", 0) end
  elseif k == "sadd" then
    if #o.items > 0 then push("I", redis.call("SADD", o.key, unpack(o.items))) else push("I", 0) end
  elseif k == "srem" then
    if #o.items > 0 then push("I", redis.call("SREM", o.key, unpack(o.items))) else push("I", 0) end
  elseif k == "smembers" then
    local members = redis.call("SMEMBERS", o.key)
    push("M", #members)
    for j = 1, #members do push(members[j]) end
  elseif k == "scard" then push("I", redis.call("SCARD", o.key))
  elseif k == "zadd" then
    if #o.items > 0 then push("I", redis.call("ZADD", o.key, unpack(o.items))) else push("I", 0) end
  elseif k == "zrem" then
    if #o.items > 0 then push("I", redis.call("ZREM", o.key, unpack(o.items))) else push("I", 0) end
  elseif k == "zrange" then
    local members = redis.call("ZRANGEBYSCORE", o.key, o.min, o.max, "LIMIT", 0, o.limit)
    push("M", #members)
    for j = 1, #members do push(members[j]) end
  elseif k == "zscore" then
    local s = redis.call("ZSCORE", o.key, o.member)
    if s then push("I", tonumber(s)) else push("N") end
  elseif k == "zincrby" then push("I", tonumber(redis.call("ZINCRBY", o.key, o.delta, o.member)))
  elseif k == "zremrange" then push("I", redis.call("ZREMRANGEBYSCORE", o.key, o.min, o.max))
  elseif k == "zcard" then push("I", redis.call("ZCARD", o.key))
  elseif k == "hstrlen" then push("I", redis.call("HSTRLEN", o.key, o.field))
  elseif k == "zappend" then
    local n = tonumber(redis.call("ZINCRBY", o.key, 1, o.counter))
    for j = 1, #o.items do redis.call("ZADD", o.key, n, o.items[j]) end
    local keep = o.keep
    if keep < 1 then keep = 1 end
    redis.call("ZREMRANGEBYSCORE", o.key, "-inf", n - keep)
    push("I", n)
  elseif k == "zrangews" then
    local flat = redis.call("ZRANGEBYSCORE", o.key, o.min, o.max, "WITHSCORES", "LIMIT", 0, o.limit)
    push("P", #flat / 2)
    for j = 1, #flat do push(flat[j]) end
  end
end
return out
