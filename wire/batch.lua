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
--
-- How it runs: four walks over ARGV in place (check the ops are known, check key types,
-- check the guards, apply the ops), with no table per guard or op and no tables of
-- constants: Redis runs the whole script body on every call, so everything it builds is
-- built again each time (decoding into tables took a third of a heartbeat's script time).

local argv = ARGV
local call = redis.call
local pos
if argv[1] == "1" then
  pos = 2
elseif argv[1] == "2" then
  local t = call("TIME")
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now > tonumber(argv[2]) then return {"X"} end
  pos = 3
else
  return {"E", "unknown batch format " .. tostring(argv[1])}
end
local guard_count = tonumber(argv[pos])
local op_count = tonumber(argv[pos + 1])
local guards_at = pos + 2

-- A guard at p: the fields after its kind and key, and the type of key it reads.
local function guard_shape(k)
  if k == "E" or k == "A" then return 0, nil
  elseif k == "GE" or k == "LE" then return 2, "hash"
  elseif k == "F" then return 3, "hash"
  elseif k == "V" then return 2, "string"
  elseif k == "Z" or k == "ZB" then return 2, "zset"
  elseif k == "S" then return 1, nil
  end
  return 0, nil
end

-- An op at p: the fields after its kind and key, the type of key it needs, and the type
-- the key has after it; nil for an unknown op.
local function op_shape(k, p)
  if k == "pexpire" then return 1, nil, nil
  elseif k == "hset" then return 1 + 2 * tonumber(argv[p + 2]), "hash", "hash"
  elseif k == "zadd" then return 1 + 2 * tonumber(argv[p + 2]), "zset", "zset"
  elseif k == "hmget" or k == "hdel" then return 1 + tonumber(argv[p + 2]), "hash", nil
  elseif k == "hget" or k == "hstrlen" then return 1, "hash", nil
  elseif k == "hgetall" then return 0, "hash", nil
  elseif k == "get" then return 0, "string", nil
  elseif k == "set" then return 2, nil, "string"
  elseif k == "del" then return 0, nil, "none"
  elseif k == "sadd" then return 1 + tonumber(argv[p + 2]), "set", "set"
  elseif k == "srem" then return 1 + tonumber(argv[p + 2]), "set", nil
  elseif k == "smembers" or k == "scard" then return 0, "set", nil
  elseif k == "zrem" then return 1 + tonumber(argv[p + 2]), "zset", nil
  elseif k == "zrange" or k == "zrangews" then return 3, "zset", nil
  elseif k == "zscore" then return 1, "zset", nil
  elseif k == "zincrby" then return 2, "zset", "zset"
  elseif k == "zremrange" then return 2, "zset", nil
  elseif k == "zcard" then return 0, "zset", nil
  elseif k == "zappend" then return 3 + tonumber(argv[p + 4]), "zset", "zset"
  end
  return nil
end

-- Walk 1: every op is known (and where the ops start).
local p = guards_at
for _ = 1, guard_count do
  p = p + 2 + guard_shape(argv[p])
end
local ops_at = p
for _ = 1, op_count do
  local width = op_shape(argv[p], p)
  if width == nil then return {"E", "unknown op " .. tostring(argv[p])} end
  p = p + 2 + width
end

-- Walk 2, types: refuse before writing anything if some op would meet a key of another
-- type.
local types = {}
local function type_of(k)
  local t = types[k]
  if t == nil then
    t = call("TYPE", k).ok
    types[k] = t
  end
  return t
end
p = guards_at
for _ = 1, guard_count do
  local width, want = guard_shape(argv[p])
  if want then
    local key = KEYS[tonumber(argv[p + 1])]
    local have = type_of(key)
    if have ~= "none" and have ~= want then
      return {"E", "WRONGTYPE: key " .. key .. " holds a " .. have .. ", a guard needs a " .. want}
    end
  end
  p = p + 2 + width
end
for _ = 1, op_count do
  local kind = argv[p]
  local width, want, creates = op_shape(kind, p)
  local key = KEYS[tonumber(argv[p + 1])]
  if want then
    local have = type_of(key)
    if have ~= "none" and have ~= want then
      return {"E", "WRONGTYPE: key " .. key .. " holds a " .. have .. ", " .. kind .. " needs a " .. want}
    end
  end
  if creates then types[key] = creates end
  p = p + 2 + width
end

-- Walk 3, guards.
p = guards_at
for i = 1, guard_count do
  local k = argv[p]
  local key = KEYS[tonumber(argv[p + 1])]
  local ok = false
  if k == "E" then ok = call("EXISTS", key) == 1
  elseif k == "A" then ok = call("EXISTS", key) == 0
  elseif k == "V" then
    local v = call("GET", key)
    if argv[p + 2] == "1" then ok = v == argv[p + 3] else ok = v == false end
  elseif k == "F" then
    local v = call("HGET", key, argv[p + 2])
    if argv[p + 3] == "1" then ok = v == argv[p + 4] else ok = v == false end
  elseif k == "LE" or k == "GE" then
    local v = tonumber(call("HGET", key, argv[p + 2]) or "")
    local bound = tonumber(argv[p + 3])
    if v ~= nil then
      if k == "LE" then ok = v <= bound else ok = v >= bound end
    end
  elseif k == "S" then
    local t, size = type_of(key), 0
    if t == "set" then size = call("SCARD", key)
    elseif t == "zset" then size = call("ZCARD", key)
    elseif t == "hash" then size = call("HLEN", key) end
    ok = size < tonumber(argv[p + 2])
  elseif k == "Z" then
    local s = tonumber(call("ZSCORE", key, argv[p + 2]) or "")
    ok = s ~= nil and s <= tonumber(argv[p + 3])
  elseif k == "ZB" then
    local s = tonumber(call("ZSCORE", key, argv[p + 2]) or "")
    ok = s == nil or s < tonumber(argv[p + 3])
  end
  if not ok then return {"R", i - 1} end
  p = p + 2 + guard_shape(k)
end

-- Walk 4, ops, in order; each appends its reply.
local out = {"A", op_count}
local n = 2
local function text_or_none(v)
  if v then
    out[n + 1] = "T"; out[n + 2] = v; n = n + 2
  else
    n = n + 1; out[n] = "N"
  end
end
local function int(v)
  out[n + 1] = "I"; out[n + 2] = v; n = n + 2
end
local function list(tag, count, items)
  out[n + 1] = tag; out[n + 2] = count; n = n + 2
  for j = 1, #items do out[n + j] = items[j] end
  n = n + #items
end
p = ops_at
for _ = 1, op_count do
  local k = argv[p]
  local key = KEYS[tonumber(argv[p + 1])]
  local width = op_shape(k, p)
  if k == "pexpire" then int(call("PEXPIRE", key, argv[p + 2]))
  elseif k == "hset" then
    if width > 1 then int(call("HSET", key, unpack(argv, p + 3, p + 1 + width))) else int(0) end
  elseif k == "zadd" then
    if width > 1 then int(call("ZADD", key, unpack(argv, p + 3, p + 1 + width))) else int(0) end
  elseif k == "hmget" then
    local count = width - 1
    out[n + 1] = "L"; out[n + 2] = count; n = n + 2
    if count > 0 then
      local values = call("HMGET", key, unpack(argv, p + 3, p + 1 + width))
      for j = 1, count do text_or_none(values[j]) end
    end
  elseif k == "hdel" then
    if width > 1 then int(call("HDEL", key, unpack(argv, p + 3, p + 1 + width))) else int(0) end
  elseif k == "hget" then text_or_none(call("HGET", key, argv[p + 2]))
  elseif k == "hstrlen" then int(call("HSTRLEN", key, argv[p + 2]))
  elseif k == "hgetall" then
    local flat = call("HGETALL", key)
    list("P", #flat / 2, flat)
  elseif k == "get" then text_or_none(call("GET", key))
  elseif k == "set" then
    if argv[p + 3] == "" then call("SET", key, argv[p + 2]) else call("SET", key, argv[p + 2], "PX", argv[p + 3]) end
    n = n + 1; out[n] = "N"
  elseif k == "del" then int(call("DEL", key))
  elseif k == "sadd" then
    if width > 1 then int(call("SADD", key, unpack(argv, p + 3, p + 1 + width))) else int(0) end
  elseif k == "srem" then
    if width > 1 then int(call("SREM", key, unpack(argv, p + 3, p + 1 + width))) else int(0) end
  elseif k == "smembers" then
    local members = call("SMEMBERS", key)
    list("M", #members, members)
  elseif k == "scard" then int(call("SCARD", key))
  elseif k == "zrem" then
    if width > 1 then int(call("ZREM", key, unpack(argv, p + 3, p + 1 + width))) else int(0) end
  elseif k == "zrange" then
    local members = call("ZRANGEBYSCORE", key, argv[p + 2], argv[p + 3], "LIMIT", 0, argv[p + 4])
    list("M", #members, members)
  elseif k == "zrangews" then
    local flat = call("ZRANGEBYSCORE", key, argv[p + 2], argv[p + 3], "WITHSCORES", "LIMIT", 0, argv[p + 4])
    list("P", #flat / 2, flat)
  elseif k == "zscore" then
    local s = call("ZSCORE", key, argv[p + 2])
    if s then int(tonumber(s)) else n = n + 1; out[n] = "N" end
  elseif k == "zincrby" then int(tonumber(call("ZINCRBY", key, argv[p + 3], argv[p + 2])))
  elseif k == "zremrange" then int(call("ZREMRANGEBYSCORE", key, argv[p + 2], argv[p + 3]))
  elseif k == "zcard" then int(call("ZCARD", key))
  elseif k == "zappend" then
    local counter = argv[p + 2]
    local keep = tonumber(argv[p + 3])
    local next_seq = tonumber(call("ZINCRBY", key, 1, counter))
    for j = p + 5, p + 1 + width do call("ZADD", key, next_seq, argv[j]) end
    if keep < 1 then keep = 1 end
    call("ZREMRANGEBYSCORE", key, "-inf", next_seq - keep)
    int(next_seq)
  end
  p = p + 2 + width
end
return out
