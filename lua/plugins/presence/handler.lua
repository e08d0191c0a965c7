-- presence: who is connected to a session. The frame {"type":"presence"}
-- answers {"type":"presence","session_id":S,"users":[sorted ids],
-- "count":N}; with `broadcast`, the session's other connections on this
-- node get {"type":"presence","event":"join"|"leave",...} when a user's
-- first connection here opens or its last one closes.
--
-- Counting: on_connect counts the user (it has no connection id yet, so
-- the count is "pending"); the connection is bound to its id at its first
-- frame, and on_disconnect uncounts it. Broadcasts reach bound
-- connections only (any frame binds: a heartbeat or the presence query).
-- A connection that survives a hot reload is unknown to the new state; its
-- first frame counts it again locally.
--
-- Redis mode: the hash sg:presence:{<sid>} maps user_id -> number of
-- connections on all nodes. on_connect must not yield, so every change is
-- queued here and one flusher coroutine (sg.timer) applies the net
-- changes in order with a server-side script; a refresh timer keeps the
-- hash's TTL alive while this node has users in the session. A failed
-- update is logged (once a minute) and dropped: the hash heals when the
-- key expires. A node that dies leaves its counts until then too.

local sg = sg
local json_encode = sg.json.encode
local type = type
local pairs = pairs
local next = next
local tonumber = tonumber
local tostring = tostring
local pcall = pcall
local sort = table.sort
local concat = table.concat
local unpack = unpack


local LOG_EVERY_MS = 60000

-- KEYS[1] = sg:presence:{sid}; ARGV = ttl, user, delta, user, delta, ...
local SCRIPT = [[
local key = KEYS[1]
for i = 2, #ARGV, 2 do
    if redis.call("HINCRBY", key, ARGV[i], ARGV[i + 1]) <= 0 then
        redis.call("HDEL", key, ARGV[i])
    end
end
if redis.call("HLEN", key) > 0 then
    redis.call("EXPIRE", key, ARGV[1])
end
return 1
]]


local _M = {
    PRIORITY = 100,
    VERSION = "0.1.0",
    SCRIPT = SCRIPT,
    frame_types = {},
}

-- sid -> { users = { uid -> n }, total = n, conns = { id -> uid },
--          pending = { uid -> n counted but not bound } }
local sessions = {}
local queue = {}        -- redis mode: sid -> { uid -> net delta }
local flushing = false
local refreshing = false
local last_log = -math.huge


local function log_failure(msg)
    local now = sg.now()
    if now - last_log >= LOG_EVERY_MS then
        last_log = now
        sg.log("warn", "presence: ", msg)
    end
end


local function use_redis()
    local r = sg.config.redis
    return r ~= nil and r.enabled == true and sg.redis ~= nil
end


local function key(sid)
    return "sg:presence:{" .. sid .. "}"
end


local function session(sid)
    local s = sessions[sid]
    if not s then
        s = { users = {}, total = 0, conns = {}, pending = {} }
        sessions[sid] = s
    end
    return s
end


local function forget_if_empty(sid, s)
    if s.total == 0 and next(s.conns) == nil and next(s.pending) == nil then
        sessions[sid] = nil
    end
end


local function broadcast(conf, sid, s, event, uid)
    if not conf.broadcast or next(s.conns) == nil then
        return
    end
    local text = '{"type":"presence","event":"' .. event
        .. '","session_id":' .. json_encode(sid) .. ',"user_id":'
        .. json_encode(uid) .. '}'
    for id in pairs(s.conns) do
        sg.send(id, text)
    end
end


local function join(conf, sid, s, uid)
    local n = (s.users[uid] or 0) + 1
    s.users[uid] = n
    s.total = s.total + 1
    if n == 1 then
        broadcast(conf, sid, s, "join", uid)
    end
end


local function leave(conf, sid, s, uid)
    local n = (s.users[uid] or 0) - 1
    if n < 0 then
        return
    end
    s.users[uid] = n > 0 and n or nil
    s.total = s.total - 1
    if n == 0 then
        broadcast(conf, sid, s, "leave", uid)
    end
end


-- ---- redis mode ------------------------------------------------------


local function refresh(conf)
    -- After a hot reload the new state's module takes over; a timer that
    -- kept re-arming here would keep this retired state alive forever.
    if sg.is_current and not sg.is_current() then
        refreshing = false
        return
    end
    local any = false
    for sid, s in pairs(sessions) do
        if s.total > 0 then
            any = true
            local ok, err = sg.redis("EXPIRE", key(sid), conf.ttl)
            if not ok then
                log_failure("failed to refresh " .. key(sid) .. ": "
                            .. tostring(err))
            end
        end
    end
    refreshing = any
    if any then
        sg.timer(conf.ttl / 3, refresh, conf)
    end
end


local function flush_session(conf, sid, deltas)
    local args, n = {}, 0
    for uid, d in pairs(deltas) do
        if d ~= 0 then
            args[n + 1], args[n + 2] = uid, d
            n = n + 2
        end
    end
    if n == 0 then
        return
    end
    local ok, err = sg.redis("EVAL", SCRIPT, 1, key(sid), conf.ttl,
                             unpack(args, 1, n))
    if not ok then
        log_failure("failed to update " .. key(sid) .. ": " .. tostring(err))
    end
end


--- The only writer of the hash on this node: queued changes are applied
-- in order, the net change per user per round, until the queue is empty.
local function flush(conf)
    while next(queue) ~= nil do
        local q = queue
        queue = {}
        for sid, deltas in pairs(q) do
            local ok, err = pcall(flush_session, conf, sid, deltas)
            if not ok then
                log_failure("flush failed: " .. tostring(err))
            end
        end
    end
    flushing = false
    if not refreshing then
        refreshing = true
        sg.timer(conf.ttl / 3, refresh, conf)
    end
end


local function enqueue(conf, sid, uid, delta)
    if not use_redis() then
        return
    end
    local q = queue[sid]
    if not q then
        q = {}
        queue[sid] = q
    end
    q[uid] = (q[uid] or 0) + delta
    if not flushing then
        flushing = true
        sg.timer(0, flush, conf)
    end
end


-- ---- hooks -----------------------------------------------------------


function _M.on_connect(conf, req)
    local sid, uid = req.session_id, req.user_id
    if type(sid) ~= "string" or type(uid) ~= "string" then
        return true
    end
    local s = session(sid)
    s.pending[uid] = (s.pending[uid] or 0) + 1
    join(conf, sid, s, uid)
    enqueue(conf, sid, uid, 1)
    return true
end


--- Binds a connection to its id at its first frame. A connection that
-- was not counted here (it survived a hot reload) is counted now, locally
-- only: the old state already counted it in Redis.
local function bind(conf, conn)
    local s = session(conn.session_id)
    if s.conns[conn.id] then
        return s
    end
    local uid = conn.user_id
    local p = s.pending[uid]
    if p then
        s.pending[uid] = p > 1 and p - 1 or nil
    else
        join(conf, conn.session_id, s, uid)
    end
    s.conns[conn.id] = uid
    return s
end


function _M.on_message(conf, conn)
    if conn.session_id and conn.user_id then
        bind(conf, conn)
    end
    return true
end


function _M.on_disconnect(conf, conn)
    local sid, uid = conn.session_id, conn.user_id
    local s = sessions[sid]
    local bound = s and s.conns[conn.id]
    if bound then
        s.conns[conn.id] = nil
        leave(conf, sid, s, bound)

    elseif s and s.pending[uid] then
        local p = s.pending[uid]
        s.pending[uid] = p > 1 and p - 1 or nil
        leave(conf, sid, s, uid)
    end
    -- an unbound connection from before a reload is only in Redis
    enqueue(conf, sid, uid, -1)
    if s then
        forget_if_empty(sid, s)
    end
end


-- The user ids of a session: Redis' view (all nodes) merged with this
-- node's (which Redis may not have yet: the flusher runs after the hook).
local function users_of(sid)
    local set = {}
    local s = sessions[sid]
    if s then
        for uid in pairs(s.users) do
            set[uid] = true
        end
    end
    if use_redis() then
        local flat, err = sg.redis("HGETALL", key(sid))
        if type(flat) == "table" then
            for i = 1, #flat, 2 do
                if (tonumber(flat[i + 1]) or 0) > 0 then
                    set[flat[i]] = true
                end
            end
        else
            log_failure("failed to read " .. key(sid) .. ": "
                        .. tostring(err))
        end
    end
    local list = {}
    for uid in pairs(set) do
        list[#list + 1] = uid
    end
    sort(list)
    return list
end
_M.users_of = users_of


--- Builds the answer around encoded parts: lua-cjson encodes an empty
-- table as {} and "users" must be [].
function _M.frame_types.presence(conf, conn)
    local sid = conn.session_id
    bind(conf, conn)
    local users = users_of(sid)
    local encoded = {}
    for i = 1, math.min(#users, conf.max_users) do
        encoded[i] = json_encode(users[i])
    end
    return sg.send(conn, '{"type":"presence","session_id":'
        .. json_encode(sid) .. ',"users":[' .. concat(encoded, ",")
        .. '],"count":' .. #users .. '}')
end


-- For the specs.
function _M.reset()
    sessions = {}
    queue = {}
    flushing = false
    refreshing = false
    last_log = -math.huge
end


function _M.session(sid)
    return sessions[sid]
end


return _M
