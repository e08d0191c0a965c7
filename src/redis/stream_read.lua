-- Reads a session's stream state atomically: epoch (created if absent),
-- last offset, first offset still in the log, the log after `since` when
-- the range is complete, every live snapshot with its text, and the compat
-- history list when asked.
--
-- KEYS[1] sg:{sid}:seq   KEYS[2] sg:{sid}:epoch  KEYS[3] sg:{sid}:log
-- KEYS[4] sg:{sid}:msgs  KEYS[5] chat:history:{sid} (compat key: another
--                        hash slot, so this script is not Cluster-safe)
-- ARGV[1] epoch candidate  ARGV[2] since ("" = no log wanted)
-- ARGV[3] with_history 1|0 ARGV[4] text key prefix sg:{sid}:text:
-- ARGV[5] recovery_ttl (s)
--
-- Returns {epoch, last, first, range_ok, log, snapshots, history}:
--   log        XRANGE entries {id, {field, value, ...}}
--   snapshots  {message_id, meta JSON, text}, ordered by offset
--   history    LRANGE 0 -1 (empty unless asked)


local cjson_decode = cjson.decode


local seq_key, epoch_key, log_key = KEYS[1], KEYS[2], KEYS[3]
local msgs_key, history_key = KEYS[4], KEYS[5]
local text_prefix = ARGV[4]
local ttl = tonumber(ARGV[5])


local function now_ms()
    local t = redis.call("TIME")
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end


local function first_offset()
    local head = redis.call("XRANGE", log_key, "-", "+", "COUNT", 1)
    if #head == 0 then
        return 0
    end
    return tonumber(string.match(head[1][1], "^(%d+)"))
end


--- The log after `since` only when it holds every offset since+1..last;
-- otherwise the reader must fall back to snapshots (range_ok 0).
local function read_log(since, last, first)
    if since == last then
        return 1, {}
    end
    if since > last or first == 0 or first > since + 1 then
        return 0, {}
    end
    return 1, redis.call("XRANGE", log_key, (since + 1) .. "-0", "+")
end


local function read_snapshots()
    local horizon = now_ms() - ttl * 1000
    local all = redis.call("HGETALL", msgs_key)
    local snaps = {}
    for i = 1, #all, 2 do
        local m = cjson_decode(all[i + 1])
        if m.fin ~= 1 or m.done_at >= horizon then
            -- no text: the message went silent for recovery_ttl (its text
            -- key expired); a snapshot without its text is no snapshot
            local text = redis.call("GET", text_prefix .. all[i])
            if text then
                snaps[#snaps + 1] = {m.offset, all[i], all[i + 1], text}
            end
        end
    end
    table.sort(snaps, function(a, b) return a[1] < b[1] end)
    local out = {}
    for i, s in ipairs(snaps) do
        out[i] = {s[2], s[3], s[4]}
    end
    return out
end


redis.call("SET", epoch_key, ARGV[1], "NX", "EX", ttl)
local epoch = redis.call("GET", epoch_key)
local last = tonumber(redis.call("GET", seq_key) or "0")
local first = first_offset()
local range_ok, log = 0, {}
if ARGV[2] ~= "" then
    range_ok, log = read_log(tonumber(ARGV[2]), last, first)
end
local history = {}
if ARGV[3] == "1" then
    history = redis.call("LRANGE", history_key, 0, -1)
end
return {epoch, last, first, range_ok, log, read_snapshots(), history}
