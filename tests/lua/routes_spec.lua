local fake_sg = require "tests.lua.helpers.fake_sg"
local cjson = require "cjson.safe"


describe("routes.on_http", function()
    local fake, routes

    local function http(method, path, body, headers)
        if type(body) == "table" then
            body = cjson.encode(body)
        end
        return routes.on_http({ method = method, path = path, body = body,
                                headers = headers or {} })
    end

    local function bad(detail)
        return { 400, { error = "Bad request", detail = detail } }
    end

    before_each(function()
        fake = fake_sg.install()
        routes = require "routes"
        routes.init({ upstream = require "upstreams.demo",
                      authenticate = require("auth").authenticate_http })
    end)

    describe("outside dev mode", function()
        before_each(function()
            fake.sg.config.auth.dev_mode = false
            fake.claims["Bearer jwt-bob"] = { sub = "bob" }
        end)

        it("answers 401 without a valid token on every data route",
           function()
            for _, r in ipairs({ { "POST", "/api/chat" },
                                 { "POST", "/api/cancel" },
                                 { "GET", "/api/history/s1" },
                                 { "DELETE", "/api/history/s1" } }) do
                assert.same({ 401, { error = "Authentication failed",
                                     detail = "missing token" } },
                            { http(r[1], r[2], { session_id = "s1",
                                                 message = "x" }) })
            end
            assert.same({}, fake.published)
        end)

        it("accepts a token and uses its subject as the user", function()
            local status = http("POST", "/api/chat",
                { session_id = "s1", message = "hi" },
                { authorization = "Bearer jwt-bob" })
            assert.equal(200, status)
            assert.equal("bob", cjson.decode(fake.store.s1[1]).user_id)
        end)

        it("answers 403 when user_id is not the token's subject", function()
            assert.same({ 403, { error = "Forbidden", detail =
                                 "user_id does not match the token subject" } },
                        { http("POST", "/api/chat",
                               { session_id = "s1", message = "hi",
                                 user_id = "mallory" },
                               { authorization = "Bearer jwt-bob" }) })
        end)

        it("keeps ai-health open", function()
            assert.equal(200, (http("GET", "/api/ai-health")))
        end)
    end)

    it("returns nil for unknown paths and methods", function()
        assert.is_nil(http("GET", "/api/nothing"))
        assert.is_nil(http("GET", "/api/chat"))
        assert.is_nil(http("PUT", "/api/history/s1"))
        assert.is_nil(http("GET", "/api/history/a/b"))
    end)

    describe("POST /api/chat", function()
        it("starts the upstream and answers streaming", function()
            local status, body = http("POST", "/api/chat",
                { session_id = "s1", message = "hello", user_id = "bob" })
            assert.equal(200, status)
            assert.same({ status = "streaming",
                          message_id = "00000000-0000-4000-8000-000000000001",
                          session_id = "s1",
                          message = "AI is generating response..." }, body)
            local user = cjson.decode(fake.store.s1[1])
            assert.equal("bob", user.user_id)
            assert.equal("hello", user.content)
            assert.equal(1, #fake.timers)
        end)

        it("refuses a question over stream.max_message_bytes with 413",
           function()
            local status, body = http("POST", "/api/chat",
                { session_id = "s1", message = string.rep("x", 65) })
            assert.equal(413, status)
            assert.same({ error = "Payload too large", detail = "message is "
                          .. "65 bytes, over stream.max_message_bytes (64)" },
                        body)
            assert.is_nil(fake.store.s1)
            assert.equal(200, (http("POST", "/api/chat",
                { session_id = "s1", message = string.rep("x", 64) })))
        end)

        it("defaults user_id to default_user", function()
            http("POST", "/api/chat", { session_id = "s1", message = "hi" })
            assert.equal("default_user",
                         cjson.decode(fake.store.s1[1]).user_id)
        end)

        it("rejects bad JSON", function()
            assert.same(bad("invalid JSON body"),
                        { http("POST", "/api/chat", "{nope") })
            assert.same(bad("invalid JSON body"),
                        { http("POST", "/api/chat", nil) })
            assert.same(bad("invalid JSON body"),
                        { http("POST", "/api/chat", "42") })
        end)

        it("rejects a missing, empty or blank message", function()
            for _, m in ipairs({ cjson.null, "", "   \n\t", 5 }) do
                assert.same(bad("Message cannot be empty"),
                            { http("POST", "/api/chat",
                                   { session_id = "s1", message = m }) })
            end
            assert.same(bad("Message cannot be empty"),
                        { http("POST", "/api/chat", { session_id = "s1" }) })
        end)

        it("rejects invalid session ids", function()
            local detail = "invalid session_id (expected 1-128 characters "
                .. "of A-Za-z0-9_.:-)"
            for _, sid in ipairs({ "", "a b", "a/b", "ä", string.rep("x", 129),
                                   5 }) do
                assert.same(bad(detail), { http("POST", "/api/chat",
                    { session_id = sid, message = "hi" }) })
            end
            assert.equal(200, (http("POST", "/api/chat",
                { session_id = "A-z_0.9:" .. string.rep("x", 120),
                  message = "hi" })))
        end)

        it("rejects a non-string user_id", function()
            assert.same(bad("user_id must be a non-empty string"),
                { http("POST", "/api/chat",
                       { session_id = "s1", message = "hi", user_id = 3 }) })
        end)

        it("answers 502 when the upstream cannot start", function()
            fake.fail.history = "not ready"
            assert.same({ 502, { error = "AI service error",
                detail = "failed to store the message: not ready" } },
                { http("POST", "/api/chat", { session_id = "s1",
                                              message = "hi" }) })
        end)
    end)

    describe("POST /api/cancel", function()
        it("cancels the active answer", function()
            http("POST", "/api/chat", { session_id = "s1", message = "hi" })
            local answer_id = "00000000-0000-4000-8000-000000000002"
            assert.same({ 200, { status = "cancelled",
                message = "Streaming cancelled successfully",
                session_id = "s1", message_id = answer_id } },
                { http("POST", "/api/cancel",
                       { session_id = "s1", message_id = answer_id }) })
        end)

        it("is not_found for another id while an answer is active", function()
            http("POST", "/api/chat", { session_id = "s1", message = "hi" })
            assert.same({ 200, { status = "not_found",
                message = "Message ID mismatch - wrong message ID provided",
                detail = "Active message ID: "
                    .. "00000000-0000-4000-8000-000000000002, requested: x" } },
                { http("POST", "/api/cancel",
                       { session_id = "s1", message_id = "x" }) })
        end)

        it("is completed when nothing is active", function()
            assert.same({ 200, { status = "completed",
                message = "Message already completed or not found",
                session_id = "s1", message_id = "x" } },
                { http("POST", "/api/cancel",
                       { session_id = "s1", message_id = "x" }) })
        end)

        it("requires both ids", function()
            local want = bad("session_id and message_id are required strings")
            assert.same(want, { http("POST", "/api/cancel",
                                     { session_id = "s1" }) })
            assert.same(want, { http("POST", "/api/cancel",
                                     { message_id = "m" }) })
            assert.same(bad("invalid JSON body"),
                        { http("POST", "/api/cancel", "x") })
        end)
    end)

    describe("GET /api/history/{sid}", function()
        it("returns decoded entries and skips bad ones", function()
            fake.store.s1 = {
                '{"message_id":"u1","role":"user","content":"hi",'
                    .. '"chunk":null,"is_complete":true}',
                "garbage",
                '{"role":"user"}',
                '[1]',
                '{"message_id":"a1","role":"assistant","content":"yo"}',
            }
            local status, body = http("GET", "/api/history/s1")
            assert.equal(200, status)
            assert.equal("string", type(body))
            assert.same({ session_id = "s1", count = 2, messages = {
                { message_id = "u1", role = "user", content = "hi",
                  chunk = cjson.null, is_complete = true },
                { message_id = "a1", role = "assistant", content = "yo" },
            } }, cjson.decode(body))
        end)

        it("encodes an empty history with an empty array", function()
            assert.same({ 200, '{"session_id":"s2","messages":[],"count":0}' },
                        { http("GET", "/api/history/s2") })
        end)

        it("rejects an invalid session id", function()
            assert.equal(400, (http("GET", "/api/history/a%20b")))
        end)

        it("answers 503 when history cannot be read", function()
            fake.fail.history = "timeout"
            assert.same({ 503, { error = "Service unavailable",
                                 detail = "failed to read history: timeout" } },
                        { http("GET", "/api/history/s1") })
        end)
    end)

    describe("DELETE /api/history/{sid}", function()
        it("clears and confirms", function()
            fake.store.s1 = { "{}" }
            assert.same({ 200, { status = "success",
                message = "History cleared for session s1" } },
                { http("DELETE", "/api/history/s1") })
            assert.is_nil(fake.store.s1)
        end)

        it("answers 503 when the broker fails", function()
            fake.fail.history = "not ready"
            assert.same({ 503, { error = "Service unavailable",
                detail = "failed to clear history: not ready" } },
                        { http("DELETE", "/api/history/s1") })
        end)
    end)

    describe("POST /api/auth/token", function()
        it("mints a token in dev mode", function()
            assert.same({ 200, { token = "signed.bob", expires_in = 3600 } },
                        { http("POST", "/api/auth/token",
                               { user_id = "bob" }) })
        end)

        it("requires a user_id", function()
            assert.same(bad("user_id must be a non-empty string"),
                        { http("POST", "/api/auth/token", {}) })
        end)

        it("reports a signing failure", function()
            fake.fail.sign = "no jwt secret configured"
            assert.same({ 500, { error = "Internal server error",
                detail = "failed to sign token: no jwt secret configured" } },
                { http("POST", "/api/auth/token", { user_id = "bob" }) })
        end)

        it("does not exist outside dev mode", function()
            fake.sg.config.auth.dev_mode = false
            assert.is_nil(http("POST", "/api/auth/token", { user_id = "bob" }))
        end)
    end)

    it("GET /api/ai-health reports the demo upstream", function()
        assert.same({ 200, { ai_service = "reachable", status = "healthy",
                             url = "demo" } },
                    { http("GET", "/api/ai-health") })
    end)
end)
