package.path = "lua/?.lua;" .. package.path
local sse = require "sse"


local function feed_all(p, pieces)
    local events = {}
    for _, piece in ipairs(pieces) do
        for _, ev in ipairs(p:feed(piece)) do
            events[#events + 1] = ev
        end
    end
    return events
end


describe("sse parser", function()
    it("parses one complete event", function()
        local evs = sse.new():feed("event: delta\ndata: {\"n\":1}\n\n")
        assert.same({ { event = "delta", data = "{\"n\":1}" } }, evs)
    end)

    it("defaults the event type to message and joins data lines", function()
        local evs = sse.new():feed("data: a\ndata: b\ndata:c\n\n")
        assert.same({ { event = "message", data = "a\nb\nc" } }, evs)
    end)

    it("returns nothing until the blank line arrives", function()
        local p = sse.new()
        assert.same({}, p:feed("data: x\n"))
        assert.same({ { event = "message", data = "x" } }, p:feed("\n"))
    end)

    it("joins pieces split anywhere, byte by byte", function()
        local text = "id: 1\nevent: a\ndata: one\n\n: comment\ndata: two\n\n"
        local pieces = {}
        for i = 1, #text do
            pieces[i] = text:sub(i, i)
        end
        local evs = feed_all(sse.new(), pieces)
        assert.same({
            { event = "a", data = "one", id = "1" },
            { event = "message", data = "two", id = "1" },
        }, evs)
    end)

    it("accepts CRLF and CR line ends, also split between pieces", function()
        local evs = feed_all(sse.new(),
            { "data: a\r", "\n\r", "\ndata: b\r\r", "data: c\n\n" })
        assert.same({
            { event = "message", data = "a" },
            { event = "message", data = "b" },
            { event = "message", data = "c" },
        }, evs)
    end)

    it("parses exactly 5 events from an upstream-like stream", function()
        local stream = {}
        for n = 1, 5 do
            stream[#stream + 1] = ("event: delta\ndata: {\"n\":%d}\n\n")
                :format(n)
        end
        local text = table.concat(stream)
        -- cut at arbitrary offsets
        local evs = feed_all(sse.new(),
            { text:sub(1, 7), text:sub(8, 40), text:sub(41, 41),
              text:sub(42) })
        assert.equal(5, #evs)
        for n = 1, 5 do
            assert.same({ event = "delta", data = ("{\"n\":%d}"):format(n) },
                evs[n])
        end
    end)

    it("skips comments, unknown fields and events without data", function()
        local evs = sse.new():feed(": hi\nfoo: bar\nevent: x\n\ndata\n\n")
        assert.same({ { event = "message", data = "" } }, evs)
    end)

    it("keeps the last id and reads retry", function()
        local p = sse.new()
        local evs = p:feed("id: 7\nretry: 1500\ndata: a\n\ndata: b\n\n")
        assert.equal("7", evs[1].id)
        assert.equal("7", evs[2].id)
        assert.equal(1500, p.retry)
        p:feed("retry: soon\n\n")
        assert.equal(1500, p.retry)
    end)

    it("discards an unfinished event at the end", function()
        local p = sse.new()
        assert.same({}, p:feed("data: partial"))
        assert.equal("data: partial", p.buf)
    end)
end)
