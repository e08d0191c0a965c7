-- A pure-Lua stand-in for the C `sg` API, for unit-testing the scripts
-- under busted. It records sends, publishes and logs; keeps history in
-- memory; sg.sleep advances a fake clock synchronously (and calls
-- `fake.on_sleep` if set); sg.timer queues, and fake.run_timers() runs the
-- queue to completion.

local cjson = require "cjson.safe"


local _M = {}

local MODULES = { "auth", "router", "routes", "upstreams.demo", "init" }


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
        },
        node_id = "node-1",
        mode = "embedded",
        history = {},
        jwt = {},
    }
    fake.sg = sg

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
