local fake_sg = require "tests.lua.helpers.fake_sg"
local cjson = require "cjson.safe"


describe("router.on_message", function()
    local fake, router
    local conn = { id = 7, session_id = "s1", user_id = "alice" }

    local function final(mid, content)
        return cjson.encode({ message_id = mid, session_id = "s1",
            user_id = "alice", role = "assistant", content = content,
            chunk = cjson.null, timestamp = 1767225600123,
            is_complete = true })
    end

    before_each(function()
        fake = fake_sg.install()
        router = require "router"
    end)

    it("answers the text ping with the text pong", function()
        router.on_message(conn, "ping")
        assert.same({ { conn = conn, text = "pong" } }, fake.sent)
    end)

    it("does not trim the text ping", function()
        router.on_message(conn, "ping ")
        router.on_message(conn, "PING")
        assert.same({}, fake.sent)
    end)

    it("answers a JSON ping with exactly {\"type\":\"pong\"}", function()
        router.on_message(conn, '{"type":"ping"}')
        assert.equal('{"type":"pong"}', fake.sent[1].text)
    end)

    it("answers heartbeat with exactly {\"type\":\"heartbeat_ack\"}", function()
        router.on_message(conn, '{"type":"heartbeat","extra":1}')
        assert.equal('{"type":"heartbeat_ack"}', fake.sent[1].text)
    end)

    it("ignores text that does not look like JSON", function()
        for _, text in ipairs({ "hello", "42", '"ping"', "", "pong" }) do
            router.on_message(conn, text)
        end
        assert.same({}, fake.sent)
    end)

    it("answers JSON that does not parse with Invalid JSON", function()
        for _, text in ipairs({ "{", '{"type":"ping"', "  [1,", "{oops}" }) do
            router.on_message(conn, text)
        end
        local frames = fake.frames()
        assert.equal(4, #frames)
        for _, f in ipairs(frames) do
            assert.same({ type = "error", error = "Invalid JSON",
                          timestamp = "2026-01-01T00:00:00.000Z" }, f)
        end
    end)

    it("answers JSON without a string type with Missing message type",
       function()
        for _, text in ipairs({ "[1,2]", '{"type":5}', '{"no":"type"}' }) do
            router.on_message(conn, text)
        end
        local frames = fake.frames()
        assert.equal(3, #frames)
        for _, f in ipairs(frames) do
            assert.equal("Missing message type", f.error)
        end
    end)

    it("answers an unknown type with an error frame naming it", function()
        router.on_message(conn, '{"type":"dance"}')
        assert.same({ { type = "error", error = "Unknown message type: dance",
                        timestamp = "2026-01-01T00:00:00.000Z" } },
                    fake.frames())
    end)

    it("JSON-encodes the unknown type safely", function()
        router.on_message(conn, '{"type":"a\\"b<"}')
        assert.equal('Unknown message type: a"b<', fake.frames()[1].error)
    end)

    it("dispatches types added to handlers", function()
        router.handlers.custom = function(c, msg)
            sg.send(c, "custom:" .. msg.v)
        end
        router.on_message(conn, '{"type":"custom","v":"x"}')
        assert.equal("custom:x", fake.sent[1].text)
    end)

    describe("reconnect", function()
        it("hands a valid request to the stream coordinator", function()
            router.on_message(conn,
                '{"type":"reconnect","messageId":"a2","lastChunkIndex":3}')
            router.on_message(conn, '{"type":"reconnect","messageId":"a3"}')
            assert.same({ { conn = conn, mid = "a2", idx = 3 },
                          { conn = conn, mid = "a3", idx = nil } },
                        fake.reconnects)
            assert.same({}, fake.sent) -- the coordinator answers
        end)

        it("fails with Recovery failed on a missing or invalid messageId",
           function()
            for _, f in ipairs({ '{"type":"reconnect"}',
                                 '{"type":"reconnect","messageId":""}',
                                 '{"type":"reconnect","messageId":5}',
                                 '{"type":"reconnect","messageId":"a",'
                                 .. '"lastChunkIndex":-2}',
                                 '{"type":"reconnect","messageId":"a",'
                                 .. '"lastChunkIndex":"3"}',
                                 '{"type":"reconnect","messageId":"a",'
                                 .. '"lastChunkIndex":1.5}' }) do
                router.on_message(conn, f)
            end
            local frames = fake.frames()
            assert.equal(6, #frames)
            for _, fr in ipairs(frames) do
                assert.same({ type = "error", error = "Recovery failed",
                              timestamp = "2026-01-01T00:00:00.000Z" }, fr)
            end
            assert.same({}, fake.reconnects)
        end)

        it("fails with Recovery failed when the coordinator refuses",
           function()
            fake.sg.reconnect = function() return nil, "closed" end
            router.on_message(conn, '{"type":"reconnect","messageId":"a"}')
            assert.equal("Recovery failed", fake.frames()[1].error)
            assert.equal("warn: reconnect: closed", fake.logs[1])
        end)
    end)

    describe("resume", function()
        it("hands since and epoch to the stream coordinator", function()
            router.on_message(conn,
                '{"type":"resume","since":12,"epoch":"abcd"}')
            router.on_message(conn, '{"type":"resume","since":0}')
            assert.same({ { conn = conn, since = 12, epoch = "abcd" },
                          { conn = conn, since = 0, epoch = nil } },
                        fake.resumed)
            assert.same({}, fake.sent)
        end)

        it("rejects a bad since or epoch with an error frame", function()
            for _, f in ipairs({ '{"type":"resume"}',
                                 '{"type":"resume","since":-1}',
                                 '{"type":"resume","since":"3"}',
                                 '{"type":"resume","since":1.5}' }) do
                router.on_message(conn, f)
            end
            router.on_message(conn, '{"type":"resume","since":1,"epoch":7}')
            local frames = fake.frames()
            assert.equal(5, #frames)
            for i = 1, 4 do
                assert.equal("Invalid resume: since must be a non-negative "
                             .. "integer", frames[i].error)
            end
            assert.equal("Invalid resume: epoch must be a string",
                         frames[5].error)
            assert.same({}, fake.resumed)
        end)

        it("says so when a resume is already running", function()
            fake.sg.resume = function() return nil, "busy" end
            router.on_message(conn, '{"type":"resume","since":1}')
            assert.equal("Resume already in progress", fake.frames()[1].error)
        end)
    end)

    describe("cancel", function()
        it("cancels through the upstream and reports the status", function()
            local demo = require "upstreams.demo"
            local id = demo.start("s1", "alice", "hello")
            assert.truthy(id)
            local answer = "00000000-0000-4000-8000-000000000002"
            router.on_message(conn, '{"type":"cancel","message_id":"'
                              .. answer .. '"}')
            router.on_message(conn, '{"type":"cancel","message_id":"nope"}')
            local frames = fake.frames()
            assert.same({ type = "cancel_status", message_id = answer,
                          status = "cancelled" }, frames[1])
            assert.equal("not_found", frames[2].status)
        end)

        it("rejects a missing message_id", function()
            router.on_message(conn, '{"type":"cancel"}')
            assert.equal("Invalid cancel: message_id must be a non-empty "
                         .. "string", fake.frames()[1].error)
        end)
    end)
end)
