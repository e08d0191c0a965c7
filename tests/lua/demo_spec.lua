local fake_sg = require "tests.lua.helpers.fake_sg"
local cjson = require "cjson.safe"


local KEYS = { "message_id", "session_id", "user_id", "role", "content",
               "chunk", "timestamp", "is_complete" }


local function words(text)
    local out = {}
    for w in text:gmatch("%S+") do
        out[#out + 1] = w
    end
    return out
end


describe("upstreams.demo", function()
    local fake, demo

    before_each(function()
        fake = fake_sg.install()
        demo = require "upstreams.demo"
    end)

    describe("pick_answer", function()
        it("chooses by keyword in the Python service's order", function()
            local A = demo.ANSWERS
            assert.equal(A[1], demo.pick_answer("Tell me about STREAMING"))
            assert.equal(A[2], demo.pick_answer("does history survive?"))
            assert.equal(A[3], demo.pick_answer("redis please"))
            assert.equal(A[5], demo.pick_answer("the workflow"))
            assert.equal(A[4], demo.pick_answer("why is the sky blue"))
            assert.equal(A[0], demo.pick_answer("hello there"))
            assert.equal(A[1], demo.pick_answer("streaming redis"))
        end)

        it("has answers of 60 to 120 words", function()
            for i = 0, 5 do
                local n = #words(demo.ANSWERS[i])
                assert.is_true(n >= 60 and n <= 120, "answer " .. i)
            end
        end)
    end)

    it("stores the user message, does not stream it, returns its id",
       function()
        local id = demo.start("s1", "bob", "hello")
        assert.equal("00000000-0000-4000-8000-000000000001", id)
        assert.equal(1, #fake.store.s1)
        local stored = fake.store.s1[1]
        for _, k in ipairs(KEYS) do
            assert.truthy(stored:find('"' .. k .. '":', 1, true), k)
        end
        assert.same({ message_id = id, session_id = "s1", user_id = "bob",
                      role = "user", content = "hello", chunk = cjson.null,
                      timestamp = 1767225600000, is_complete = true },
                    cjson.decode(stored))
        -- stored only: live user messages are never forwarded
        assert.same({ { sid = "s1", stored = stored } }, fake.published)
        assert.equal(0, #fake.sleeps) -- the answer has not started
    end)

    it("streams the answer word by word, then appends and stores the final",
       function()
        demo.start("s1", "bob", "hello")
        fake.run_timers()
        local text = demo.ANSWERS[0]
        local w = words(text)
        local msgs = fake.messages()
        assert.equal(#w + 1, #msgs)          -- partials, final
        local answer_id = "00000000-0000-4000-8000-000000000002"
        local content = ""
        for i = 1, #w do
            local m = msgs[i]
            local chunk = i < #w and w[i] .. " " or w[i]
            content = content .. chunk
            assert.same({ message_id = answer_id, session_id = "s1",
                          user_id = "bob", role = "assistant",
                          content = content, chunk = chunk,
                          timestamp = 1767225600000 + i * 50,
                          is_complete = false }, m)
        end
        local final = msgs[#msgs]
        assert.same({ message_id = answer_id, session_id = "s1",
                      user_id = "bob", role = "assistant",
                      content = table.concat(w, " "), chunk = cjson.null,
                      timestamp = 1767225600000 + #w * 50,
                      is_complete = true }, final)
        -- paced at 1 / words_per_second
        assert.equal(#w, #fake.sleeps)
        assert.equal(0.05, fake.sleeps[1])
        -- the final is appended to the stream BEFORE it is stored
        local n = #fake.published
        assert.truthy(fake.published[n].stored)
        assert.equal(fake.published[n - 1].msg, fake.published[n].stored)
        assert.equal(2, #fake.store.s1)
        assert.is_nil(demo.active.s1)
    end)

    it("cancels before the next word and ends with a cancelled final",
       function()
        demo.start("s1", "bob", "hello")
        local answer_id = "00000000-0000-4000-8000-000000000002"
        local reply
        fake.on_sleep = function(k)
            if k == 4 then
                reply = demo.cancel("s1", answer_id)
            end
        end
        fake.run_timers()
        assert.same({ status = "cancelled",
                      message = "Streaming cancelled successfully",
                      session_id = "s1", message_id = answer_id }, reply)
        local msgs = fake.messages()
        assert.equal(3 + 1, #msgs)
        local w = words(demo.ANSWERS[0])
        local final = msgs[#msgs]
        assert.is_true(final.is_complete)
        assert.equal(cjson.null, final.chunk)
        assert.equal(w[1] .. " " .. w[2] .. " " .. w[3] .. " \n\n[Cancelled]",
                     final.content)
        assert.equal(fake.store.s1[2], cjson.encode(final) and fake.store.s1[2])
        assert.same(final, cjson.decode(fake.store.s1[2]))
        -- afterwards nothing is active: a second cancel says completed
        assert.equal("completed", demo.cancel("s1", answer_id).status)
    end)

    it("tracks two answers in one session separately", function()
        demo.start("s1", "bob", "one")
        demo.start("s1", "bob", "two")
        local a1 = "00000000-0000-4000-8000-000000000002"
        local a2 = "00000000-0000-4000-8000-000000000004"
        assert.equal("not_found", demo.cancel("s1", "zzz").status)
        assert.equal("Active message ID: " .. a2 .. ", requested: zzz",
                     demo.cancel("s1", "zzz").detail)
        assert.equal("cancelled", demo.cancel("s1", a1).status)
        fake.run_timers()
        local finals = {}
        for _, m in ipairs(fake.messages()) do
            if m.is_complete and m.role == "assistant" then
                finals[m.message_id] = m.content
            end
        end
        assert.equal("\n\n[Cancelled]", finals[a1])
        assert.equal(table.concat(words(demo.ANSWERS[0]), " "), finals[a2])
        assert.is_nil(demo.active.s1)
    end)

    it("logs but finishes when appending fails", function()
        demo.start("s1", "bob", "hello")
        fake.fail.append = "not ready"
        fake.run_timers()
        assert.equal(2, #fake.store.s1)
        assert.is_true(cjson.decode(fake.store.s1[2]).is_complete)
        assert.truthy(fake.logs[1]:find("demo: failed to append a chunk of "
                                        .. "s1: not ready", 1, true))
    end)

    it("fails start when the user message cannot be stored", function()
        fake.fail.history = "not ready"
        assert.same({ nil, "failed to store the message: not ready" },
                    { demo.start("s1", "bob", "hello") })
        assert.equal(0, #fake.timers)
        assert.is_nil(demo.active.s1)
    end)

    it("reports health", function()
        assert.same({ 200, { ai_service = "reachable", status = "healthy",
                             url = "demo" } }, { demo.health() })
    end)
end)
