-- Appends one producer message to a session's stream, atomically: the
-- APPEND RULES of src/stream.h, decided here so that order and
-- exactly-once come from Redis, not from the nodes that call it.
--
-- KEYS[1] sg:{sid}:seq    offset counter (INCR)
-- KEYS[2] sg:{sid}:epoch  random id of this incarnation of the stream
-- KEYS[3] sg:{sid}:log    Redis Stream of deltas, ids "<offset>-0"
-- KEYS[4] sg:{sid}:msgs   hash message_id -> meta JSON
--                         {len,index,offset,fin,ts,uid,role,done_at}
-- KEYS[5] sg:{sid}:text:<message_id>  cumulative text of the message
-- ARGV[1] message_id       ARGV[2] content (cumulative)
-- ARGV[3] is_complete 1|0  ARGV[4] producer timestamp (ms; 0: use TIME)
-- ARGV[5] user_id          ARGV[6] 1 when user_id is present
-- ARGV[7] role             ARGV[8] session_id
-- ARGV[9] recovery_ttl (s) ARGV[10] log_max_len
-- ARGV[11] epoch candidate (16 hex chars, used only if none exists)
-- ARGV[12] live channel sg:{sid}:live
-- ARGV[13] text key prefix sg:{sid}:text: (same hash tag as KEYS)
--
-- Other messages' text keys (refreshed or dropped below) are built from
-- ARGV[13] rather than declared: they share the {sid} hash tag, so they
-- live in the same Cluster slot as KEYS.
--
-- Returns the chunk's offset, or 0 when the message is a duplicate.
-- The live message (PUBLISH) carries the whole content so that a node can
-- build a full-mode frame without a read; the log keeps only the delta.


local cjson_encode = cjson.encode
local cjson_decode = cjson.decode


local seq_key, epoch_key, log_key = KEYS[1], KEYS[2], KEYS[3]
local msgs_key, text_key = KEYS[4], KEYS[5]
local mid, content = ARGV[1], ARGV[2]
local complete = ARGV[3] == "1"
local ts = tonumber(ARGV[4])
local uid = nil
if ARGV[6] == "1" then
    uid = ARGV[5]
end
local role, sid = ARGV[7], ARGV[8]
local ttl, max_len = tonumber(ARGV[9]), tonumber(ARGV[10])
local live, text_prefix = ARGV[12], ARGV[13]


--- Server clock in ms: every node agrees on done_at and on expiry.
local function now_ms()
    local t = redis.call("TIME")
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end


--- Rules 1-2: a complete message takes nothing more; a partial must grow
-- the text (content is cumulative, so a shorter or equal one is late).
local function is_duplicate(m)
    if not m then
        return false
    end
    if m.fin == 1 then
        return true
    end
    return not complete and #content <= m.len
end


--- Rule 3: index, delta and reset against the stored text. The prefix
-- check reads the old text (O(len) in Redis memory), the write stays
-- O(delta) through APPEND.
local function derive(m)
    if not m then
        redis.call("SET", text_key, content)
        return 0, content, 0
    end
    local prev = ""
    if m.len > 0 then
        prev = redis.call("GETRANGE", text_key, 0, m.len - 1)
    end
    if m.len <= #content and #prev == m.len
        and string.sub(content, 1, m.len) == prev then
        local delta = string.sub(content, m.len + 1)
        redis.call("APPEND", text_key, delta)
        return m.index + 1, delta, 0
    end
    redis.call("SET", text_key, content)
    return m.index + 1, content, 1
end


-- Completed messages, by done_at: sg:{sid}:done (same hash tag). It keeps
-- the pruning below bounded per append; scanning every snapshot on every
-- chunk made a long session O(messages) per chunk in Redis.
local done_key = string.sub(text_prefix, 1, #text_prefix - 5) .. "done"
local MAX_DONE = 64     -- completed snapshots kept per session
local PRUNE_BATCH = 16  -- most snapshots dropped by one append


local function drop_snapshot(other)
    redis.call("HDEL", msgs_key, other)
    redis.call("DEL", text_prefix .. other)
    redis.call("ZREM", done_key, other)
end


--- A final is indexed by done_at; snapshots completed more than
-- recovery_ttl ago, and the oldest beyond MAX_DONE, are dropped (at most
-- PRUNE_BATCH per append). Only the current message's text key gets its
-- TTL refreshed: an in-flight message silent for recovery_ttl expires, and
-- the read script skips snapshots whose text is gone.
local function refresh_snapshots(now)
    redis.call("EXPIRE", text_key, ttl)
    if not complete then
        return
    end
    redis.call("ZADD", done_key, now, mid)
    local old = redis.call("ZRANGEBYSCORE", done_key, "-inf",
                           "(" .. (now - ttl * 1000), "LIMIT", 0,
                           PRUNE_BATCH)
    for _, other in ipairs(old) do
        drop_snapshot(other)
    end
    local extra = redis.call("ZCARD", done_key) - MAX_DONE
    if extra > 0 then
        if extra > PRUNE_BATCH then
            extra = PRUNE_BATCH
        end
        for _, other in ipairs(redis.call("ZRANGE", done_key, 0,
                                          extra - 1)) do
            drop_snapshot(other)
        end
    end
end


redis.call("SET", epoch_key, ARGV[11], "NX", "EX", ttl)
local epoch = redis.call("GET", epoch_key)
local meta = redis.call("HGET", msgs_key, mid)
local m = nil
if meta then
    m = cjson_decode(meta)
end
if is_duplicate(m) then
    return 0
end

local index, delta, reset = derive(m)
local offset = redis.call("INCR", seq_key)
local now = now_ms()
if ts <= 0 then
    ts = now -- the producer sent no timestamp
end
local done_at = 0
if complete then
    done_at = now
end
local fin = 0
if complete then
    fin = 1
end

local fields = {
    "m", mid, "i", index, "d", delta, "f", fin, "t", ts, "r", role,
    "x", reset,
}
if uid then
    fields[#fields + 1] = "u"
    fields[#fields + 1] = uid
end
redis.call("XADD", log_key, "MAXLEN", "~", max_len, offset .. "-0",
           unpack(fields))

redis.call("HSET", msgs_key, mid, cjson_encode({
    len = #content, index = index, offset = offset, fin = fin, ts = ts,
    uid = uid, role = role, done_at = done_at,
}))

redis.call("PUBLISH", live, cjson_encode({
    offset = offset, epoch = epoch, session_id = sid, message_id = mid,
    index = index, content = content, delta = delta, is_complete = complete,
    timestamp = ts, user_id = uid, role = role, reset = reset == 1,
    done_at = done_at,
}))

refresh_snapshots(now)
for _, key in ipairs({seq_key, epoch_key, log_key, msgs_key, done_key}) do
    redis.call("EXPIRE", key, ttl)
end
return offset
