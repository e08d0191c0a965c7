-- The ai_service upstream through routes.on_http, with a fake sg.http that
-- records every request and answers from a script (res or nil, err).

local fake_sg = require "tests.lua.helpers.fake_sg"
local cjson = require "cjson.safe"


describe("upstreams.ai_service", function()
    local fake, routes, ai, calls, answer

    local function load(conf, redis_enabled)
        fake = fake_sg.install()
        package.loaded["upstreams.ai_service"] = nil
        fake.sg.config.upstream = "ai_service"
        fake.sg.config.ai_service = conf
        fake.sg.config.redis.enabled = redis_enabled ~= false
        calls = {}
        answer = function()
            return { status = 200, headers = {
                         ["content-type"] = "application/json" },
                     body = '{"ok":true}' }
        end
        fake.sg.http = {
            request = function(opts)
                calls[#calls + 1] = opts
                return answer(opts)
            end,
        }
        ai = require "upstreams.ai_service"
        routes = require "routes"
        routes.init({ upstream = ai,
                      authenticate = require("auth").authenticate_http })
    end

    local function http(method, path, body, headers)
        if type(body) == "table" then
            body = cjson.encode(body)
        end
        return { routes.on_http({ method = method, path = path, body = body,
                                  headers = headers or {} }) }
    end

    local function respond(status, body, ctype)
        answer = function()
            return { status = status, body = body,
                     headers = { ["content-type"] = ctype } }
        end
    end

    local function fail(err)
        answer = function() return nil, err end
    end

    before_each(function()
        load({ url = "http://127.0.0.1:8000/", timeout = 1 })
    end)

    describe("at load", function()
        it("keeps the base url without trailing slashes and the timeout",
           function()
            assert.equal("http://127.0.0.1:8000", ai.base)
            assert.equal(1, ai.timeout)
            assert.same({}, fake.logs)
        end)

        it("defaults to http://127.0.0.1:8000 and 30 s", function()
            load(nil)
            assert.equal("http://127.0.0.1:8000", ai.base)
            assert.equal(30, ai.timeout)
        end)

        it("accepts localhost and a path prefix", function()
            load({ url = "http://localhost:81/ai//", timeout = 2 })
            assert.equal("http://localhost:81/ai", ai.base)
        end)

        it("rejects a host name with a message naming the key", function()
            assert.has_error(function()
                load({ url = "http://python-ai:8000" })
            end, "config: ai_service.url = 'http://python-ai:8000': host "
                .. "'python-ai' is not an IPv4 literal or localhost (host "
                .. "names are not resolved): expected http://HOST[:port]"
                .. "[/path], HOST an IPv4 literal or localhost")
        end)

        it("rejects https, other schemes, bad ports, bad IPv4 and queries",
           function()
            local cases = {
                { "https://127.0.0.1", "https is not supported" },
                { "ftp://127.0.0.1", "expected the scheme http://" },
                { "http://127.0.0.1:0", "bad port '0': expected 1-65535" },
                { "http://127.0.0.1:x", "bad port 'x': expected 1-65535" },
                { "http://256.0.0.1", "host '256.0.0.1' is not an IPv4 "
                  .. "literal or localhost (host names are not resolved)" },
                { "http://1.2.3", "host '1.2.3' is not an IPv4 "
                  .. "literal or localhost (host names are not resolved)" },
                { "http://127.0.0.1/a?b", "the path must not hold '?', '#' "
                  .. "or spaces" },
            }
            for _, c in ipairs(cases) do
                assert.same({ nil, c[2] }, { ai.parse_base(c[1]) })
            end
        end)

        it("warns in embedded mode that answers need Redis", function()
            load({ url = "http://127.0.0.1:8000" }, false)
            assert.equal(1, #fake.logs)
            assert.truthy(fake.logs[1]:find("^warn: ai_service: embedded "
                                             .. "mode: the AI service "
                                             .. "publishes"))
            assert.truthy(fake.logs[1]:find("set redis.url (REDIS_URL)", 1,
                                            true))
        end)
    end)

    describe("POST /api/chat", function()
        it("forwards the body with the resolved user and passes the "
           .. "answer through", function()
            respond(200, '{"status":"streaming","message_id":"U1",'
                    .. '"session_id":"s1","message":"AI is generating '
                    .. 'response..."}', "application/json")
            local r = http("POST", "/api/chat",
                           { session_id = "s1", message = "hi" })
            assert.same({ 200, '{"status":"streaming","message_id":"U1",'
                          .. '"session_id":"s1","message":"AI is generating '
                          .. 'response..."}',
                          { ["Content-Type"] = "application/json" } }, r)
            assert.equal(1, #calls)
            assert.equal("POST", calls[1].method)
            assert.equal("http://127.0.0.1:8000/chat", calls[1].url)
            assert.equal(1, calls[1].timeout)
            assert.same({ ["content-type"] = "application/json" },
                        calls[1].headers)
            assert.same({ session_id = "s1", message = "hi",
                          user_id = "default_user" },
                        cjson.decode(calls[1].body))
            -- nothing stored or streamed by streamgate itself
            assert.same({}, fake.published)
            assert.same({}, fake.store)
        end)

        it("keeps streamgate's own validation before any request", function()
            assert.same({ 400, { error = "Bad request",
                                 detail = "Message cannot be empty" } },
                        http("POST", "/api/chat",
                             { session_id = "s1", message = "  " }))
            assert.same({ 400, { error = "Bad request", detail =
                "invalid session_id (expected 1-128 characters of "
                .. "A-Za-z0-9_.:-)" } },
                http("POST", "/api/chat",
                     { session_id = "../x", message = "hi" }))
            assert.same({}, calls)
        end)

        it("maps an AI 4xx to the same status with the raw body", function()
            respond(422, '{"detail":[{"msg":"field required"}]}',
                    "application/json")
            assert.same({ 422, { error = "Bad request",
                                 detail = '{"detail":[{"msg":"field '
                                     .. 'required"}]}' } },
                        http("POST", "/api/chat",
                             { session_id = "s1", message = "hi" }))
            respond(400, '{"detail":"Message cannot be empty"}')
            assert.same({ 400, { error = "Bad request",
                                 detail = '{"detail":"Message cannot be '
                                     .. 'empty"}' } },
                        http("POST", "/api/chat",
                             { session_id = "s1", message = "hi" }))
        end)

        it("maps an AI 5xx to 502", function()
            respond(500, '{"detail":"Internal server error"}')
            assert.same({ 502, { error = "AI service error",
                                 detail = '500 Internal Server Error: '
                                     .. '{"detail":"Internal server error"}' }
                        }, http("POST", "/api/chat",
                                { session_id = "s1", message = "hi" }))
            respond(599, nil)
            assert.same({ 502, { error = "AI service error",
                                 detail = "599: " } },
                        http("POST", "/api/chat",
                             { session_id = "s1", message = "hi" }))
        end)

        it("maps a refused connection to 502 and a timeout to 504",
           function()
            fail("connection refused")
            assert.same({ 502, { error = "Communication error with AI "
                                     .. "service",
                                 detail = 'I/O error on POST request for '
                                     .. '"http://127.0.0.1:8000/chat": '
                                     .. 'connection refused' } },
                        http("POST", "/api/chat",
                             { session_id = "s1", message = "hi" }))
            fail("closed")
            assert.equal(502, http("POST", "/api/chat",
                                   { session_id = "s1", message = "hi" })[1])
            fail("timeout")
            assert.same({ 504, { error = "AI service timeout",
                                 detail = "no answer from POST "
                                     .. "http://127.0.0.1:8000/chat within "
                                     .. "1 s" } },
                        http("POST", "/api/chat",
                             { session_id = "s1", message = "hi" }))
        end)
    end)

    describe("POST /api/cancel", function()
        it("passes status and body through", function()
            local body = '{"status":"completed","message":"Message already '
                .. 'completed or not found","session_id":"s1",'
                .. '"message_id":"m1"}'
            respond(200, body, "application/json")
            assert.same({ 200, body,
                          { ["Content-Type"] = "application/json" } },
                        http("POST", "/api/cancel",
                             { session_id = "s1", message_id = "m1" }))
            assert.equal("http://127.0.0.1:8000/cancel", calls[1].url)
            assert.same({ session_id = "s1", message_id = "m1" },
                        cjson.decode(calls[1].body))
        end)

        it("maps errors like chat", function()
            respond(503, "down")
            assert.same({ 502, { error = "AI service error",
                                 detail = "503 Service Unavailable: down" } },
                        http("POST", "/api/cancel",
                             { session_id = "s1", message_id = "m1" }))
        end)
    end)

    describe("/api/history/{sid}", function()
        it("GET passes the AI's history through", function()
            local body = '{"session_id":"s1","messages":[],"count":0}'
            respond(200, body, "application/json")
            assert.same({ 200, body,
                          { ["Content-Type"] = "application/json" } },
                        http("GET", "/api/history/s1"))
            assert.equal("GET", calls[1].method)
            assert.equal("http://127.0.0.1:8000/history/s1", calls[1].url)
            assert.is_nil(calls[1].body)
            assert.is_nil(calls[1].headers)
        end)

        it("GET with a bad session id never calls the AI", function()
            assert.equal(400, http("GET", "/api/history/a%20b")[1])
            assert.same({}, calls)
        end)

        it("DELETE answers Java's own body once the AI cleared it",
           function()
            respond(200, '{"anything":1}')
            assert.same({ 200, { status = "success",
                                 message = "History cleared for session "
                                     .. "s-9" } },
                        http("DELETE", "/api/history/s-9"))
            assert.equal("DELETE", calls[1].method)
            assert.equal("http://127.0.0.1:8000/history/s-9", calls[1].url)
        end)

        it("DELETE maps errors", function()
            respond(404, '{"detail":"Not Found"}')
            assert.same({ 404, { error = "Bad request",
                                 detail = '{"detail":"Not Found"}' } },
                        http("DELETE", "/api/history/s1"))
            fail("connection refused")
            assert.same({ 502, { error = "Communication error with AI "
                                     .. "service",
                                 detail = 'I/O error on DELETE request for '
                                     .. '"http://127.0.0.1:8000/history/s1"'
                                     .. ': connection refused' } },
                        http("DELETE", "/api/history/s1"))
        end)
    end)

    describe("GET /api/ai-health", function()
        it("answers reachable with the AI's status and the base url",
           function()
            respond(200, '{"status":"healthy","redis":"connected"}')
            assert.same({ 200, { ai_service = "reachable",
                                 status = "healthy",
                                 url = "http://127.0.0.1:8000" } },
                        http("GET", "/api/ai-health"))
            assert.equal("http://127.0.0.1:8000/health", calls[1].url)
            assert.equal(1, calls[1].timeout)
        end)

        it("caps the probe at 5 s", function()
            load({ url = "http://127.0.0.1:8000", timeout = 30 })
            http("GET", "/api/ai-health")
            assert.equal(5, calls[1].timeout)
        end)

        it("answers 503 unreachable on refusal, timeout or an AI error",
           function()
            fail("connection refused")
            assert.same({ 503, { ai_service = "unreachable",
                                 error = "Communication error: connection "
                                     .. "refused",
                                 url = "http://127.0.0.1:8000" } },
                        http("GET", "/api/ai-health"))
            fail("timeout")
            assert.same({ 503, { ai_service = "unreachable",
                                 error = "Communication error: no answer "
                                     .. "within 1 s",
                                 url = "http://127.0.0.1:8000" } },
                        http("GET", "/api/ai-health"))
            respond(503, '{"detail":"Service unhealthy: redis"}')
            assert.same({ 503, { ai_service = "unreachable",
                                 error = "Communication error: AI service "
                                     .. 'answered 503: {"detail":"Service '
                                     .. 'unhealthy: redis"}',
                                 url = "http://127.0.0.1:8000" } },
                        http("GET", "/api/ai-health"))
        end)

        it("reports status unknown for a body without one", function()
            respond(200, "not json")
            assert.same({ 200, { ai_service = "reachable",
                                 status = "unknown",
                                 url = "http://127.0.0.1:8000" } },
                        http("GET", "/api/ai-health"))
        end)
    end)

    it("outside dev mode still needs a token before proxying", function()
        fake.sg.config.auth.dev_mode = false
        assert.same({ 401, { error = "Authentication failed",
                             detail = "missing token" } },
                    http("POST", "/api/cancel",
                         { session_id = "s1", message_id = "m1" }))
        assert.same({}, calls)
    end)
end)
