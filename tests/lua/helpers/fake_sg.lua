-- A pure-Lua stand-in for the C `sg` API, for unit-testing the scripts
-- under busted. It records sends, publishes and logs; keeps history in
-- memory; sg.sleep advances a fake clock synchronously (and calls
-- `fake.on_sleep` if set); sg.timer queues, and fake.run_timers() runs the
-- queue to completion.

local cjson = require "cjson.safe"


local _M = {}

local MODULES = {
    "auth", "router", "routes", "upstreams.demo", "init", "schema",
    "plugins", "plugins.rate-limiting.handler", "plugins.rate-limiting.schema",
    "plugins.redact.handler", "plugins.redact.schema",
    "plugins.presence.handler", "plugins.presence.schema",
}


-- ---- a small in-memory Redis -------------------------------------------

local function redis_new(fake)
    local db, expires = {}, {}

    local function live(key)
        local at = expires[key]
        if at and at <= fake.clock then
            db[key], expires[key] = nil, nil
        end
        return db[key]
    end

    local function get(key, kind)
        local v = live(key)
        if v and v.kind ~= kind then
            error("WRONGTYPE Operation against a key holding the wrong kind "
                  .. "of value", 0)
        end
        if not v then
            v = { kind = kind, data = {} }
        end
        return v
    end

    local function put(key, v)
        if next(v.data) == nil then
            db[key], expires[key] = nil, nil
        else
            db[key] = v
        end
    end

    local function score_min(s)
        if s == "-inf" then return -math.huge end
        if s == "+inf" then return math.huge end
        return tonumber(s)
    end

    local cmds = {}

    function cmds.TIME()
        local ms = fake.clock
        return { tostring(math.floor(ms / 1000)),
                 tostring(math.floor(ms % 1000) * 1000) }
    end

    function cmds.GET(key)
        local v = get(key, "string")
        return v.data.value
    end

    function cmds.SET(key, value)
        db[key], expires[key] = { kind = "string",
                                  data = { value = tostring(value) } }, nil
        return "OK"
    end

    function cmds.DEL(...)
        local n = 0
        for _, key in ipairs({ ... }) do
            if live(key) then
                n = n + 1
            end
            db[key], expires[key] = nil, nil
        end
        return n
    end

    function cmds.EXPIRE(key, sec)
        if not live(key) then return 0 end
        expires[key] = fake.clock + tonumber(sec) * 1000
        return 1
    end

    function cmds.PEXPIRE(key, ms)
        if not live(key) then return 0 end
        expires[key] = fake.clock + tonumber(ms)
        return 1
    end

    function cmds.PTTL(key)
        if not live(key) then return -2 end
        if not expires[key] then return -1 end
        return expires[key] - fake.clock
    end

    function cmds.HINCRBY(key, field, delta)
        local v = get(key, "hash")
        local n = (tonumber(v.data[field]) or 0) + tonumber(delta)
        v.data[field] = tostring(n)
        put(key, v)
        return n
    end

    function cmds.HDEL(key, field)
        local v = get(key, "hash")
        local had = v.data[field] ~= nil and 1 or 0
        v.data[field] = nil
        put(key, v)
        return had
    end

    function cmds.HLEN(key)
        local n = 0
        for _ in pairs(get(key, "hash").data) do n = n + 1 end
        return n
    end

    function cmds.HGETALL(key)
        local out, fields = {}, {}
        local data = get(key, "hash").data
        for f in pairs(data) do fields[#fields + 1] = f end
        table.sort(fields)
        for _, f in ipairs(fields) do
            out[#out + 1] = f
            out[#out + 1] = data[f]
        end
        return out
    end

    function cmds.ZADD(key, score, member)
        local v = get(key, "zset")
        local new = v.data[member] == nil and 1 or 0
        v.data[member] = tonumber(score)
        put(key, v)
        return new
    end

    function cmds.ZCARD(key)
        local n = 0
        for _ in pairs(get(key, "zset").data) do n = n + 1 end
        return n
    end

    function cmds.ZREMRANGEBYSCORE(key, min, max)
        local v = get(key, "zset")
        local lo, hi, n = score_min(min), score_min(max), 0
        for m, sc in pairs(v.data) do
            if sc >= lo and sc <= hi then
                v.data[m] = nil
                n = n + 1
            end
        end
        put(key, v)
        return n
    end

    -- ZRANGE key start stop [WITHSCORES], start/stop >= 0 only
    function cmds.ZRANGE(key, start, stop, withscores)
        local items = {}
        for m, sc in pairs(get(key, "zset").data) do
            items[#items + 1] = { m, sc }
        end
        table.sort(items, function(a, b)
            if a[2] ~= b[2] then return a[2] < b[2] end
            return a[1] < b[1]
        end)
        local out = {}
        for i = tonumber(start) + 1, math.min(#items, tonumber(stop) + 1) do
            out[#out + 1] = items[i][1]
            if withscores then
                out[#out + 1] = tostring(items[i][2])
            end
        end
        return out
    end

    local function call(cmd, ...)
        local f = cmds[cmd:upper()]
        if not f then
            error("ERR unknown command '" .. cmd .. "'", 0)
        end
        return f(...)
    end

    -- Redis' Lua -> reply conversion: numbers truncate to integers,
    -- tables stop at the first nil, false is a nil reply.
    local function to_reply(v)
        if type(v) == "number" then
            return v >= 0 and math.floor(v) or math.ceil(v)
        end
        if type(v) == "table" then
            local out = {}
            for i = 1, #v do out[i] = to_reply(v[i]) end
            return out
        end
        if v == false then return nil end
        if v == true then return 1 end
        return v
    end

    function cmds.EVAL(script, numkeys, ...)
        local args = { ... }
        local keys, argv = {}, {}
        for i = 1, tonumber(numkeys) do keys[i] = tostring(args[i]) end
        for i = tonumber(numkeys) + 1, #args do
            argv[#argv + 1] = tostring(args[i])
        end
        local fn = assert(loadstring(script))
        setfenv(fn, {
            redis = { call = call, replicate_commands = function()
                return true end },
            KEYS = keys, ARGV = argv, tonumber = tonumber,
            tostring = tostring, math = math, string = string,
            table = table, type = type,
        })
        return to_reply(fn())
    end

    return {
        db = db,
        call = function(cmd, ...)
            local ok, res = pcall(call, cmd, ...)
            if not ok then
                return false, res
            end
            return res
        end,
    }
end


function _M.new()
    local fake = {
        sent = {},
        published = {},
        resumed = {},
        reconnects = {},
        store = {},
        timers = {},
        logs = {},
        sleeps = {},
        clock = 1767225600000, -- 2026-01-01T00:00:00Z
        uuids = 0,
        claims = {},
        fail = {},
    }

    local sg = {
        json = { encode = cjson.encode, decode = cjson.decode,
                 null = cjson.null },
        config = {
            port = 8080,
            env = "development",
            node_id = "node-1",
            upstream = "demo",
            auth = { dev_mode = true, jwt_algorithm = "HS256", leeway = 30,
                     token_ttl = 3600 },
            demo = { words_per_second = 20 },
            stream = { max_message_bytes = 64 },
            redis = { enabled = false },
            plugins = {},
        },
        node_id = "node-1",
        mode = "embedded",
        history = {},
        jwt = {},
    }
    fake.sg = sg
    fake.closed = {}
    fake.redis_calls = {}
    fake.redis = redis_new(fake)
    fake.cache = {}
    fake.metrics = {}
    fake.data = {}

    function sg.close(conn, code, reason)
        fake.closed[#fake.closed + 1] = { conn = conn, code = code or 1000,
                                          reason = reason or "" }
        return true
    end

    -- sg.redis(cmd, ...) -> reply | false, msg (error reply) | nil, err
    function sg.redis(cmd, ...)
        fake.redis_calls[#fake.redis_calls + 1] = { cmd, ... }
        if fake.fail.redis then
            return nil, fake.fail.redis
        end
        return fake.redis.call(cmd, ...)
    end

    sg.cache = {
        get = function(key) return fake.cache[key] end,
        set = function(key, value) fake.cache[key] = value; return true end,
        del = function(key) fake.cache[key] = nil; return true end,
    }

    -- Records { kind, name, ... } for every call; the returned object
    -- records its method calls the same way.
    local function metric(kind)
        return function(name, ...)
            fake.metrics[#fake.metrics + 1] = { kind, name, ... }
            local m = {}
            for _, op in ipairs({ "inc", "add", "set", "observe" }) do
                m[op] = function(_, ...)
                    fake.metrics[#fake.metrics + 1] = { op, name, ... }
                    return true
                end
            end
            return m
        end
    end
    sg.metrics = { counter = metric("counter"), gauge = metric("gauge"),
                   histogram = metric("histogram") }

    -- sg.data(conn) -> that connection's table (kept by id).
    sg.data = setmetatable({}, { __call = function(_, conn)
        local id = type(conn) == "table" and conn.id or conn
        fake.data[id] = fake.data[id] or {}
        return fake.data[id]
    end })

    function sg.send(conn, text)
        assert(type(text) == "string", "sg.send: text must be a string")
        fake.sent[#fake.sent + 1] = { conn = conn, text = text }
        return true
    end

    function sg.publish(sid, msg)
        if fake.fail.publish then
            return nil, fake.fail.publish
        end
        if type(msg) == "table" then
            msg = cjson.encode(msg)
        end
        fake.published[#fake.published + 1] = { sid = sid, msg = msg }
        return true
    end

    -- sg.append records like publish (the stream is what clients see).
    function sg.append(sid, msg)
        if fake.fail.append then
            return nil, fake.fail.append
        end
        if type(msg) == "table" then
            msg = cjson.encode(msg)
        end
        fake.published[#fake.published + 1] = { sid = sid, msg = msg }
        return #fake.published
    end

    function sg.resume(conn, since, epoch)
        fake.resumed[#fake.resumed + 1] = { conn = conn, since = since,
                                            epoch = epoch }
        return true
    end

    function sg.reconnect(conn, mid, idx)
        fake.reconnects[#fake.reconnects + 1] = { conn = conn, mid = mid,
                                                  idx = idx }
        return true
    end

    function sg.history.get(sid)
        if fake.fail.history then
            return nil, fake.fail.history
        end
        local out = {}
        for i, v in ipairs(fake.store[sid] or {}) do
            out[i] = v
        end
        return out
    end

    function sg.history.append(sid, msg)
        if fake.fail.history then
            return nil, fake.fail.history
        end
        if type(msg) == "table" then
            msg = cjson.encode(msg)
        end
        local list = fake.store[sid] or {}
        list[#list + 1] = msg
        fake.store[sid] = list
        -- record the order of history appends relative to publishes
        fake.published[#fake.published + 1] = { sid = sid, stored = msg }
        return true
    end

    function sg.history.clear(sid)
        if fake.fail.history then
            return nil, fake.fail.history
        end
        fake.store[sid] = nil
        return true
    end

    function sg.sleep(sec)
        fake.sleeps[#fake.sleeps + 1] = sec
        fake.clock = fake.clock + sec * 1000
        if fake.on_sleep then
            fake.on_sleep(#fake.sleeps)
        end
    end

    function sg.timer(delay, fn, ...)
        fake.timers[#fake.timers + 1] = { delay = delay, fn = fn,
                                          args = { n = select("#", ...), ... } }
        return true
    end

    function sg.jwt.verify(token)
        local claims = fake.claims[token]
        if type(claims) == "string" then
            return nil, claims
        end
        if not claims then
            return nil, "malformed token or bad signature"
        end
        return claims
    end

    function sg.jwt.sign(claims, opts)
        if fake.fail.sign then
            return nil, fake.fail.sign
        end
        return "signed." .. claims.sub
    end

    function sg.log(level, ...)
        local parts = { ... }
        for i = 1, select("#", ...) do
            parts[i] = tostring(parts[i])
        end
        fake.logs[#fake.logs + 1] = level .. ": " .. table.concat(parts)
    end

    function sg.now()
        return fake.clock
    end

    function sg.iso_now()
        return "2026-01-01T00:00:00.000Z"
    end

    function sg.uuid()
        fake.uuids = fake.uuids + 1
        return string.format("00000000-0000-4000-8000-%012d", fake.uuids)
    end

    function fake.run_timers()
        while #fake.timers > 0 do
            local t = table.remove(fake.timers, 1)
            t.fn(unpack(t.args, 1, t.args.n))
        end
    end

    -- Runs the timers due now (delay 0), again and again, until none is
    -- left; later ones (e.g. a timer that re-arms itself) stay queued.
    function fake.run_ready()
        local i = 1
        while i <= #fake.timers do
            local t = fake.timers[i]
            if t.delay == 0 then
                table.remove(fake.timers, i)
                t.fn(unpack(t.args, 1, t.args.n))
                i = 1
            else
                i = i + 1
            end
        end
    end

    -- Decoded sends, in order.
    function fake.frames()
        local out = {}
        for i, s in ipairs(fake.sent) do
            out[i] = cjson.decode(s.text) or s.text
        end
        return out
    end

    -- Decoded published messages (history appends skipped).
    function fake.messages()
        local out = {}
        for _, p in ipairs(fake.published) do
            if p.msg then
                out[#out + 1] = cjson.decode(p.msg)
            end
        end
        return out
    end

    return fake
end


-- Installs a fresh fake as the global `sg` and reloads the scripts.
function _M.install()
    local fake = _M.new()
    _G.sg = fake.sg
    if not package.path:find("lua/?.lua", 1, true) then
        package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
    end
    for _, m in ipairs(MODULES) do
        package.loaded[m] = nil
    end
    return fake
end


return _M
