local fake_sg = require "tests.lua.helpers.fake_sg"
local cjson = require "cjson.safe"


for _, mode in ipairs({ "embedded", "redis" }) do
describe("rate-limiting (" .. mode .. " mode)", function()
    local fake, rl, schema, sch

    local function conf(input)
        return assert(schema.validate(sch, input))
    end

    local function conn(id, user)
        return { id = id, session_id = "s", user_id = user or "alice",
                 remote_addr = "10.0.0." .. id }
    end

    local function chat(user, headers)
        return { method = "POST", path = "/api/chat",
                 body = cjson.encode({ session_id = "s", message = "hi",
                                       user_id = user }),
                 headers = headers or {}, remote_addr = "10.0.0.9" }
    end

    before_each(function()
        fake = fake_sg.install()
        fake.sg.config.redis.enabled = mode == "redis"
        schema = require "schema"
        sch = require "plugins.rate-limiting.schema"
        rl = require "plugins.rate-limiting.handler"
        rl.reset()
    end)

    it("allows frames_per_second frames within one second", function()
        local c = conf({ frames_per_second = 3 })
        for _ = 1, 3 do
            assert.is_true(rl.on_message(c, conn(1)))
        end
        assert.same({}, fake.sent)
        assert.same({}, fake.closed)
    end)

    it("answers the frame over the limit with an error frame and "
       .. "closes 1008", function()
        local c = conf({ frames_per_second = 2 })
        rl.on_message(c, conn(1))
        fake.clock = fake.clock + 400
        rl.on_message(c, conn(1))
        fake.clock = fake.clock + 100
        local ok, reason = rl.on_message(c, conn(1))
        assert.is_false(ok)
        assert.equal("rate limited", reason)
        assert.same({ { type = "error", error = "Rate limit exceeded",
                        detail = "more than 2 frames in 1 s",
                        retry_after = 1,
                        timestamp = "2026-01-01T00:00:00.000Z" } },
                    fake.frames())
        assert.same({ { conn = conn(1), code = 1008,
                        reason = "rate limited" } }, fake.closed)
        -- no pause: sg.close writes the queued error frame first
        assert.same({}, fake.sleeps)
    end)

    it("drops later frames of a closing socket silently", function()
        local c = conf({ frames_per_second = 1 })
        rl.on_message(c, conn(1))
        rl.on_message(c, conn(1))
        fake.clock = fake.clock + 5000
        assert.same({ false, "rate limited" }, { rl.on_message(c, conn(1)) })
        assert.equal(1, #fake.sent)
        assert.equal(1, #fake.closed)
        rl.on_disconnect(c, conn(1))
        assert.is_true(rl.on_message(c, conn(1)))
    end)

    it("slides: the oldest frame leaves the window after exactly "
       .. "one window", function()
        -- a new socket of the same user after each denial (a denied one
        -- is closing)
        local c = conf({ frames_per_second = 2 })
        local t0 = fake.clock
        assert.is_true(rl.on_message(c, conn(11)))          -- t0
        fake.clock = t0 + 500
        assert.is_true(rl.on_message(c, conn(12)))          -- t0 + 500
        fake.clock = t0 + 999
        assert.is_false(rl.on_message(c, conn(13)))         -- 2 in window
        fake.clock = t0 + 1000
        assert.is_true(rl.on_message(c, conn(14)))          -- t0 left
        fake.clock = t0 + 1499
        assert.is_false(rl.on_message(c, conn(15)))
        fake.clock = t0 + 1500
        assert.is_true(rl.on_message(c, conn(16)))
    end)

    it("counts per user by default: another user is not limited", function()
        local c = conf({ frames_per_second = 1 })
        assert.is_true(rl.on_message(c, conn(1, "alice")))
        assert.is_true(rl.on_message(c, conn(2, "bob")))
        assert.is_false(rl.on_message(c, conn(3, "alice")))
    end)

    it("counts per address with per = ip", function()
        local c = conf({ frames_per_second = 1, per = "ip" })
        assert.is_true(rl.on_message(c, conn(1, "alice")))
        assert.is_true(rl.on_message(c, conn(2, "alice")))
        assert.is_false(rl.on_message(c, conn(1, "bob")))
    end)

    it("denies when either key is over the limit with per = both",
       function()
        local c = conf({ frames_per_second = 1, per = "both" })
        assert.is_true(rl.on_message(c, conn(1, "alice")))
        assert.is_false(rl.on_message(c, conn(2, "alice")))   -- same user
        assert.is_false(rl.on_message(c, conn(1, "bob")))     -- same ip
        assert.is_true(rl.on_message(c, conn(3, "carol")))
    end)

    it("allows frames_burst frames in burst / rate seconds", function()
        local c = conf({ frames_per_second = 2, frames_burst = 4 })
        assert.same({ 4, 2000 }, { rl.frame_limit(c) })
        local t0 = fake.clock
        for _ = 1, 4 do
            assert.is_true(rl.on_message(c, conn(17)))
        end
        fake.clock = t0 + 1999
        assert.is_false(rl.on_message(c, conn(18)))
        assert.equal("more than 4 frames in 2 s", fake.frames()[1].detail)
        fake.clock = t0 + 2000
        assert.is_true(rl.on_message(c, conn(19)))
    end)

    it("answers POST /api/chat over the limit with 429 and Retry-After",
       function()
        local c = conf({ chat_per_minute = 2 })
        local t0 = fake.clock
        assert.is_nil(rl.on_http(c, chat("alice")))
        fake.clock = t0 + 20000
        assert.is_nil(rl.on_http(c, chat("alice")))
        fake.clock = t0 + 30000
        local status, body, headers = rl.on_http(c, chat("alice"))
        assert.equal(429, status)
        assert.same({ error = "Too many requests",
                      detail = "more than 2 chat requests per minute" },
                    body)
        assert.same({ ["Retry-After"] = "30" }, headers)
        assert.is_nil(rl.on_http(c, chat("bob")))
        fake.clock = t0 + 60000
        assert.is_nil(rl.on_http(c, chat("alice")))
    end)

    it("counts chat by token subject, not by the body's user_id",
       function()
        local c = conf({ chat_per_minute = 1 })
        fake.claims["Bearer t"] = { sub = "alice" }
        assert.is_nil(rl.on_http(c, chat("mallory",
                                         { authorization = "Bearer t" })))
        assert.equal(429, (rl.on_http(c, chat("alice"))))
        assert.is_nil(rl.on_http(c, chat("mallory")))
    end)

    it("ignores other routes and chat_per_minute = 0", function()
        local c = conf({ chat_per_minute = 1 })
        for _ = 1, 3 do
            assert.is_nil(rl.on_http(c, { method = "GET",
                                          path = "/api/history/s" }))
        end
        local off = conf({ chat_per_minute = 0 })
        for _ = 1, 3 do
            assert.is_nil(rl.on_http(off, chat("alice")))
        end
    end)

    if mode == "redis" then
        it("keeps the window in sg:rl:{key} with a TTL of one window",
           function()
            local c = conf({ frames_per_second = 5 })
            rl.on_message(c, conn(1))
            assert.equal("EVAL", fake.redis_calls[1][1])
            assert.equal("sg:rl:{f:u:alice}", fake.redis_calls[1][4])
            assert.equal(1, fake.redis.call("ZCARD", "sg:rl:{f:u:alice}"))
            assert.equal(1000, fake.redis.call("PTTL",
                                               "sg:rl:{f:u:alice}"))
        end)

        it("lets traffic through when Redis fails and logs once a minute",
           function()
            local c = conf({ frames_per_second = 1 })
            fake.fail.redis = "closed"
            for _ = 1, 5 do
                assert.is_true(rl.on_message(c, conn(1)))
            end
            assert.same({ "warn: rate-limiting: failed to run the limit "
                          .. "script: closed" }, fake.logs)
            fake.clock = fake.clock + 60000
            rl.on_message(c, conn(1))
            assert.equal(2, #fake.logs)
        end)

        it("refuses traffic when Redis fails and fault_tolerant = false",
           function()
            local c = conf({ fault_tolerant = false })
            fake.fail.redis = "closed"
            assert.is_false(rl.on_message(c, conn(1)))
            assert.equal("Service unavailable", fake.frames()[1].error)
            assert.same({}, fake.closed)
            local status, body = rl.on_http(c, chat("alice"))
            assert.equal(503, status)
            assert.equal("rate limiting unavailable: failed to run the "
                         .. "limit script: closed", body.detail)
        end)
    else
        it("bounds the keys it tracks and sweeps expired ones", function()
            local c = conf({ frames_per_second = 1, max_keys = 2 })
            rl.on_message(c, conn(1, "a"))
            rl.on_message(c, conn(2, "b"))
            assert.equal(2, rl.tracked_keys())
            -- full and nothing expired: a new key passes untracked
            assert.is_true(rl.on_message(c, conn(3, "c")))
            assert.is_true(rl.on_message(c, conn(3, "c")))
            assert.equal(2, rl.tracked_keys())
            assert.same({ "warn: rate-limiting: max_keys (2) keys tracked; "
                          .. "letting new keys through" }, fake.logs)
            fake.clock = fake.clock + 1000
            assert.is_true(rl.on_message(c, conn(3, "c")))
            assert.equal(1, rl.tracked_keys())
            assert.is_false(rl.on_message(c, conn(3, "c")))
        end)

        it("never calls Redis", function()
            rl.on_message(conf({}), conn(1))
            assert.same({}, fake.redis_calls)
        end)
    end
end)
end
