-- rate-limiting: a sliding-window limit on inbound WebSocket frames and on
-- POST /api/chat, counted per user, per client address, or both.
--
-- The window is a sliding log: a request is allowed when fewer than
-- `limit` requests were allowed in the last `window` ms. Embedded mode
-- keeps the log in this Lua state (a ring of `limit` timestamps per key,
-- at most max_keys keys, expired keys swept lazily). Redis mode runs one
-- server-side script per check on the sorted set sg:rl:{<key>} (ZREMRANGE-
-- BYSCORE / ZCARD / ZADD / PEXPIRE, scored with Redis' own clock), so
-- every node shares one limit. Redis is only called from on_message and
-- on_http, the hooks that may yield.
--
-- Over the limit: a WebSocket client gets an error frame and the socket
-- is closed 1008 "rate limited"; POST /api/chat answers 429 with
-- Retry-After.

local sg = sg
local json_encode = sg.json.encode
local json_decode = sg.json.decode
local type = type
local pairs = pairs
local tostring = tostring
local floor = math.floor
local ceil = math.ceil
local max = math.max


local ERR_RATE = "Rate limit exceeded"
local ERR_TOO_MANY = "Too many requests"
local ERR_UNAVAILABLE = "Service unavailable"
local CLOSE_CODE = 1008
local CLOSE_REASON = "rate limited"
-- sg.close drops frames still queued (ws.c clears the send queue), so
-- the error frame gets this long to be written before the close.
local LOG_EVERY_MS = 60000
local CHAT_WINDOW_MS = 60000
local DEFAULT_USER = "default_user"

-- KEYS[1] = sg:rl:{key}; ARGV = window ms, limit, unique member.
-- Returns { 1, 0 } (allowed) or { 0, ms until the oldest entry leaves }.
local SCRIPT = [[
if redis.replicate_commands then redis.replicate_commands() end
local key, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("ZREMRANGEBYSCORE", key, "-inf", now - window)
if redis.call("ZCARD", key) >= limit then
    local oldest = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
    return { 0, tonumber(oldest[2]) + window - now }
end
redis.call("ZADD", key, now, ARGV[3])
redis.call("PEXPIRE", key, window)
return { 1, 0 }
]]


local _M = {
    PRIORITY = 1000,
    VERSION = "0.1.0",
    SCRIPT = SCRIPT,
}

-- key -> { [1..limit] = timestamps (a ring), i = next slot, n = used,
--          newest = ms, window = ms }
local windows = {}
local nkeys = 0
local last_log = -math.huge
local seq = 0
local closing = {}  -- conn id -> true once the socket is being closed


--- Logs a failure at most once a minute: a Redis outage under load must
-- not turn into one log line per frame.
local function log_failure(msg)
    local now = sg.now()
    if now - last_log >= LOG_EVERY_MS then
        last_log = now
        sg.log("warn", "rate-limiting: ", msg)
    end
end


local function sweep(now)
    for key, w in pairs(windows) do
        if w.newest <= now - w.window then
            windows[key] = nil
            nkeys = nkeys - 1
        end
    end
end


-- The embedded sliding log. Returns true, or false and the ms to wait.
local function embedded_take(conf, key, limit, window, now)
    local w = windows[key]
    if not w then
        if nkeys >= conf.max_keys then
            sweep(now)
        end
        if nkeys >= conf.max_keys then
            log_failure("max_keys (" .. conf.max_keys .. ") keys tracked; "
                        .. "letting new keys through")
            return true
        end
        w = { i = 1, n = 0, newest = now, window = window }
        windows[key] = w
        nkeys = nkeys + 1
    end

    if w.n >= limit then
        local oldest = w[w.i]
        if oldest > now - window then
            return false, oldest + window - now
        end
    else
        w.n = w.n + 1
    end
    w[w.i] = now
    w.i = w.i % limit + 1
    w.newest = now
    return true
end


-- The shared sliding log in Redis. Returns true, false and the ms to
-- wait, or nil and an error.
local function redis_take(key, limit, window)
    seq = seq + 1
    local res, err = sg.redis("EVAL", SCRIPT, 1, "sg:rl:{" .. key .. "}",
                              window, limit, sg.node_id .. ":" .. seq)
    if not res then
        return nil, "failed to run the limit script: " .. tostring(err)
    end
    if type(res) ~= "table" or type(res[1]) ~= "number" then
        return nil, "unexpected reply from the limit script"
    end
    return res[1] == 1, res[2]
end


local function use_redis()
    local r = sg.config.redis
    if r == nil or r.enabled ~= true then
        return false
    end
    if sg.redis == nil then
        log_failure("sg.redis is not available; counting on this node only")
        return false
    end
    return true
end


--- Checks every key (per = "both" checks two); the first key over its
-- limit denies. A Redis failure lets the request through when
-- fault_tolerant, else returns nil, err.
local function take(conf, keys, limit, window)
    local redis = use_redis()
    for i = 1, #keys do
        local ok, retry
        if redis then
            ok, retry = redis_take(keys[i], limit, window)
        else
            ok, retry = embedded_take(conf, keys[i], limit, window, sg.now())
        end
        if ok == nil then
            log_failure(retry)
            if not conf.fault_tolerant then
                return nil, retry
            end
            return true
        end
        if not ok then
            return false, retry
        end
    end
    return true
end


local function keys_for(conf, prefix, user, addr)
    local per = conf.per
    if per == "user" then
        return { prefix .. ":u:" .. user }
    end
    addr = addr or "unknown"
    if per == "ip" then
        return { prefix .. ":ip:" .. addr }
    end
    return { prefix .. ":u:" .. user, prefix .. ":ip:" .. addr }
end


--- frames_per_second may be fractional: the window holds `limit` frames
-- (frames_burst, else the rate rounded down) and lasts limit / rate s.
local function frame_limit(conf)
    local limit = conf.frames_burst or max(1, floor(conf.frames_per_second))
    return limit, limit * 1000 / conf.frames_per_second
end
_M.frame_limit = frame_limit


local function seconds(ms)
    return max(1, ceil((ms or 0) / 1000))
end


local function error_frame(text, detail, retry)
    return json_encode({
        type = "error",
        error = text,
        detail = detail,
        retry_after = retry,
        timestamp = sg.iso_now(),
    })
end


-- conn.remote_addr when the host provides it (per = "ip" and "both").
-- Frames of a socket already being closed are dropped silently.
function _M.on_message(conf, conn)
    if closing[conn.id] then
        return false, CLOSE_REASON
    end
    local limit, window = frame_limit(conf)
    local keys = keys_for(conf, "f", conn.user_id or DEFAULT_USER,
                          conn.remote_addr)
    local ok, retry = take(conf, keys, limit, window)
    if ok == nil then
        sg.send(conn, error_frame(ERR_UNAVAILABLE,
                                  "rate limiting unavailable"))
        return false, "rate limiting unavailable"
    end
    if ok then
        return true
    end

    sg.send(conn, error_frame(ERR_RATE, "more than " .. limit
                              .. " frames in " .. window / 1000
                              .. " s", seconds(retry)))
    -- sg.close writes the queued error frame before the close frame.
    closing[conn.id] = true
    sg.close(conn, CLOSE_CODE, CLOSE_REASON)
    return false, CLOSE_REASON
end


function _M.on_disconnect(_, conn)
    closing[conn.id] = nil
end


--- The user a chat request counts for: the subject of a valid token,
-- else the body's user_id (dev mode), else the default user. Never an
-- unverified claim when a token verifies, so a client cannot spend
-- someone else's budget with a forged body.
local function chat_user(req)
    local header = req.headers and req.headers.authorization
    if type(header) == "string" and header ~= "" then
        local claims = sg.jwt.verify(header)
        if type(claims) == "table" and type(claims.sub) == "string" then
            return claims.sub
        end
    end
    local body = req.body and json_decode(req.body)
    if type(body) == "table" and type(body.user_id) == "string"
        and body.user_id ~= ""
    then
        return body.user_id
    end
    return DEFAULT_USER
end


function _M.on_http(conf, req)
    if conf.chat_per_minute == 0 or req.method ~= "POST"
        or req.path ~= "/api/chat"
    then
        return nil
    end

    local user = chat_user(req)
    local keys = keys_for(conf, "c", user, req.remote_addr)
    local ok, retry = take(conf, keys, conf.chat_per_minute, CHAT_WINDOW_MS)
    if ok == nil then
        return 503, { error = ERR_UNAVAILABLE,
                      detail = "rate limiting unavailable: " .. retry }
    end
    if ok then
        return nil
    end

    return 429, {
        error = ERR_TOO_MANY,
        detail = "more than " .. conf.chat_per_minute .. " chat requests "
            .. "per minute",
    }, { ["Retry-After"] = tostring(seconds(retry)) }
end


-- For the specs: forget every embedded window.
function _M.reset()
    closing = {}
    windows = {}
    nkeys = 0
    last_log = -math.huge
    seq = 0
end


function _M.tracked_keys()
    return nkeys
end


return _M
