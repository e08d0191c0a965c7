local fake_sg = require "tests.lua.helpers.fake_sg"


for _, mode in ipairs({ "embedded", "redis" }) do
describe("presence (" .. mode .. " mode)", function()
    local fake, presence, c

    local function connect(sid, user)
        return presence.on_connect(c, { session_id = sid, user_id = user })
    end

    local function conn(id, sid, user)
        return { id = id, session_id = sid, user_id = user }
    end

    local function query(cn)
        fake.sent = {}
        presence.frame_types.presence(c, cn, { type = "presence" })
        fake.run_ready()
        return fake.sent[#fake.sent].text
    end

    before_each(function()
        fake = fake_sg.install()
        fake.sg.config.redis.enabled = mode == "redis"
        local schema = require "schema"
        c = assert(schema.validate(require "plugins.presence.schema", {}))
        presence = require "plugins.presence.handler"
        presence.reset()
    end)

    it("lists the connected users sorted, each once", function()
        assert.is_true(connect("s1", "carol"))
        connect("s1", "alice")
        connect("s1", "alice")
        connect("s2", "bob")
        fake.run_ready()
        assert.equal('{"type":"presence","session_id":"s1","users":'
                     .. '["alice","carol"],"count":2}',
                     query(conn(1, "s1", "alice")))
    end)

    it("counts a connection from before a reload at its first frame",
       function()
        -- never seen by on_connect in this state
        assert.equal('{"type":"presence","session_id":"s9","users":'
                     .. '["zed"],"count":1}', query(conn(5, "s9", "zed")))
        presence.on_disconnect(c, conn(5, "s9", "zed"))
        assert.is_nil(presence.session("s9"))
    end)


    it("drops a user when their last connection closes", function()
        connect("s1", "alice")
        connect("s1", "alice")
        connect("s1", "bob")
        local a1, a2, b = conn(1, "s1", "alice"), conn(2, "s1", "alice"),
                          conn(3, "s1", "bob")
        presence.on_message(c, a1)
        presence.on_message(c, a2)
        presence.on_message(c, b)
        presence.on_disconnect(c, a1)
        fake.run_ready()
        assert.equal('{"type":"presence","session_id":"s1","users":'
                     .. '["alice","bob"],"count":2}', query(b))
        presence.on_disconnect(c, a2)
        fake.run_ready()
        assert.equal('{"type":"presence","session_id":"s1","users":'
                     .. '["bob"],"count":1}', query(b))
    end)

    it("uncounts a connection that closes before its first frame",
       function()
        connect("s1", "alice")
        presence.on_disconnect(c, conn(1, "s1", "alice"))
        fake.run_ready()
        assert.is_nil(presence.session("s1"))
        if mode == "redis" then
            assert.same({}, fake.redis.call("HGETALL", "sg:presence:{s1}"))
        end
    end)

    it("lists at most max_users users and the full count", function()
        c.max_users = 2
        for _, u in ipairs({ "d", "b", "a", "c" }) do
            connect("s1", u)
        end
        fake.run_ready()
        assert.equal('{"type":"presence","session_id":"s1","users":'
                     .. '["a","b"],"count":4}', query(conn(1, "s1", "a")))
    end)

    it("broadcasts joins and leaves to the session's bound connections",
       function()
        connect("s1", "alice")
        local a = conn(1, "s1", "alice")
        presence.on_message(c, a)
        connect("s1", "bob")
        connect("s1", "bob")           -- a second tab: no new join
        connect("s2", "carol")         -- another session: not sent to a
        local b = conn(2, "s1", "bob")
        presence.on_message(c, b)
        presence.on_disconnect(c, b)   -- bob still has a pending tab
        presence.on_disconnect(c, conn(3, "s1", "bob"))
        assert.same({
            { conn = 1, text = '{"type":"presence","event":"join",'
                .. '"session_id":"s1","user_id":"bob"}' },
            { conn = 1, text = '{"type":"presence","event":"leave",'
                .. '"session_id":"s1","user_id":"bob"}' },
        }, fake.sent)
    end)

    it("does not broadcast with broadcast = false", function()
        c.broadcast = false
        connect("s1", "alice")
        presence.on_message(c, conn(1, "s1", "alice"))
        connect("s1", "bob")
        assert.same({}, fake.sent)
    end)

    if mode == "redis" then
        it("keeps sg:presence:{sid} as user -> count with a TTL",
           function()
            connect("s1", "alice")
            connect("s1", "alice")
            connect("s1", "bob")
            assert.same({}, fake.redis_calls) -- on_connect never waits
            fake.run_ready()
            assert.same({ "alice", "2", "bob", "1" },
                        fake.redis.call("HGETALL", "sg:presence:{s1}"))
            assert.equal(3600 * 1000,
                         fake.redis.call("PTTL", "sg:presence:{s1}"))
        end)

        it("lists users of other nodes from the hash", function()
            fake.redis.call("HINCRBY", "sg:presence:{s1}", "zoe", 1)
            connect("s1", "alice")
            assert.equal('{"type":"presence","session_id":"s1","users":'
                         .. '["alice","zoe"],"count":2}',
                         query(conn(1, "s1", "alice")))
        end)

        it("applies a join and a leave in order as one net change",
           function()
            connect("s1", "alice")
            presence.on_disconnect(c, conn(1, "s1", "alice"))
            fake.run_ready()
            assert.same({}, fake.redis_calls)
            assert.same({}, fake.redis.call("HGETALL", "sg:presence:{s1}"))
        end)

        it("falls back to this node's users when Redis fails", function()
            connect("s1", "alice")
            fake.fail.redis = "closed"
            assert.equal('{"type":"presence","session_id":"s1","users":'
                         .. '["alice"],"count":1}',
                         query(conn(1, "s1", "alice")))
            assert.same({ "warn: presence: failed to read "
                          .. "sg:presence:{s1}: closed" }, fake.logs)
        end)
    end
end)
end
