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
        it("replays a stored final, then completed", function()
            fake.store.s1 = {
                cjson.encode({ message_id = "u1", role = "user",
                               content = "hi" }),
                final("a1", "old"),
                "not json",
                final("a2", "the answer"),
            }
            router.on_message(conn,
                '{"type":"reconnect","messageId":"a2","lastChunkIndex":3}')
            local frames = fake.frames()
            assert.equal(2, #frames)
            assert.same({ type = "message", data = {
                message_id = "a2", session_id = "s1", user_id = "alice",
                role = "assistant", content = "the answer",
                chunk = cjson.null, timestamp = 1767225600123,
                is_complete = true } }, frames[1])
            assert.same({ type = "recovery_status", status = "completed",
                          chunksRecovered = 0 }, frames[2])
        end)

        it("sends all eight keys, with nulls for absent ones", function()
            fake.store.s1 = { '{"message_id":"a3","role":"assistant",'
                              .. '"content":"x","is_complete":true}' }
            router.on_message(conn, '{"type":"reconnect","messageId":"a3"}')
            local text = fake.sent[1].text
            for _, k in ipairs({ "message_id", "session_id", "user_id", "role",
                                 "content", "chunk", "timestamp",
                                 "is_complete" }) do
                assert.truthy(text:find('"' .. k .. '":', 1, true), k)
            end
            assert.truthy(text:find('"chunk":null', 1, true))
            assert.truthy(text:find('"session_id":null', 1, true))
        end)

        it("is not_found for an unknown or unfinished message", function()
            fake.store.s1 = {
                cjson.encode({ message_id = "u1", role = "user",
                               content = "hi", is_complete = true }),
            }
            router.on_message(conn, '{"type":"reconnect","messageId":"zz"}')
            router.on_message(conn, '{"type":"reconnect","messageId":"u1"}')
            local expect = { type = "recovery_status", status = "not_found",
                             chunksRecovered = 0 }
            assert.same({ expect, expect }, fake.frames())
        end)

        it("fails with Recovery failed on a missing or invalid messageId",
           function()
            for _, f in ipairs({ '{"type":"reconnect"}',
                                 '{"type":"reconnect","messageId":""}',
                                 '{"type":"reconnect","messageId":5}',
                                 '{"type":"reconnect","messageId":"a",'
                                 .. '"lastChunkIndex":-2}',
                                 '{"type":"reconnect","messageId":"a",'
                                 .. '"lastChunkIndex":"3"}' }) do
                router.on_message(conn, f)
            end
            local frames = fake.frames()
            assert.equal(5, #frames)
            for _, fr in ipairs(frames) do
                assert.same({ type = "error", error = "Recovery failed",
                              timestamp = "2026-01-01T00:00:00.000Z" }, fr)
            end
        end)

        it("fails with Recovery failed when history cannot be read", function()
            fake.fail.history = "timeout"
            router.on_message(conn, '{"type":"reconnect","messageId":"a"}')
            assert.equal("Recovery failed", fake.frames()[1].error)
            assert.equal("warn: reconnect: failed to read history: timeout",
                         fake.logs[1])
        end)
    end)
end)
