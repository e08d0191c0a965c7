local fake_sg = require "tests.lua.helpers.fake_sg"


describe("redact", function()
    local redact, schema, sch

    local function conf(input)
        return assert(schema.validate(sch, input))
    end

    local function run(c, content, chunk)
        local t = { content = content, chunk = chunk, role = "assistant" }
        local r = redact.on_chunk(c, t)
        return t, r
    end

    before_each(function()
        fake_sg.install()
        schema = require "schema"
        sch = require "plugins.redact.schema"
        redact = require "plugins.redact.handler"
    end)

    it("masks e-mail addresses and clears the chunk delta", function()
        local t, r = run(conf({}), "write to bob.smith+x@mail.example.com.",
                         "example.com.")
        assert.is_nil(r)
        assert.same({ content = "write to [redacted].", role = "assistant" },
                    t)
    end)

    it("masks every address and leaves other text alone", function()
        local c = conf({})
        assert.equal("a [redacted], b [redacted]; c@d and @x.io stay",
                     redact.mask(c, "a x@y.org, b z_1@q-r.co.uk; c@d and "
                                 .. "@x.io stay"))
        assert.equal("no addresses here", redact.mask(c, "no addresses here"))
    end)

    it("masks an address split across chunks once it is complete",
       function()
        local c = conf({})
        local parts = { "Mail ", "bob@", "exam", "ple.c", "o", "m now" }
        local content, seen = "", {}
        for i, p in ipairs(parts) do
            content = content .. p
            seen[i] = run(c, content, p).content
        end
        assert.same({ "Mail ", "Mail bob@", "Mail bob@exam",
                      "Mail bob@example.c", "Mail [redacted]",
                      "Mail [redacted] now" }, seen)
    end)

    it("applies the patterns in order after the e-mail rule", function()
        local c = conf({ patterns = { "%d%d%d%-%d%d%-%d%d%d%d", "secret" },
                         replacement = "***" })
        assert.equal("ssn *** and *** at ***",
                     redact.mask(c, "ssn 123-45-6789 and secret at a@b.io"))
    end)

    it("uses the replacement literally, % included", function()
        local c = conf({ emails = false, patterns = { "x" },
                         replacement = "%1%" })
        assert.equal("a%1%b", redact.mask(c, "axb"))
    end)

    it("is deterministic: the same content always gives the same text",
       function()
        local c = conf({ patterns = { "streamgate" } })
        local text = "the streamgate demo, streamgate@x.io"
        local first = redact.mask(c, text)
        for _ = 1, 5 do
            assert.equal(first, redact.mask(c, text))
        end
        assert.equal("the [redacted] demo, [redacted]", first)
    end)

    it("masks nothing in e-mails when emails = false", function()
        local c = conf({ emails = false, patterns = { "foo" } })
        assert.equal("[redacted] a@b.io", redact.mask(c, "foo a@b.io"))
    end)

    it("rejects an invalid Lua pattern with the reason", function()
        local _, err = schema.validate(sch, { patterns = { "ok", "%" } })
        assert.equal("config.patterns[2] = '%': expected a non-empty "
                     .. "string (invalid Lua pattern: malformed pattern "
                     .. "(ends with '%'))", err)
    end)

    it("rejects a pattern that matches the empty string", function()
        local _, err = schema.validate(sch, { patterns = { "a*" } })
        assert.equal("config.patterns[1] = 'a*': expected a non-empty "
                     .. "string (it matches the empty string)", err)
    end)

    it("rejects a config that would redact nothing", function()
        local _, err = schema.validate(sch, { emails = false })
        assert.equal("config.emails = false and config.patterns is empty: "
                     .. "expected at least one of them (nothing would be "
                     .. "redacted)", err)
    end)

    it("masks e-mails in linear time (no backtracking on long words)",
       function()
        local c = conf({})
        local word = string.rep("a", 200000)
        local t0 = os.clock()
        assert.equal(word, redact.mask(c, word))
        assert.equal(string.rep("a@", 50000),
                     redact.mask(c, string.rep("a@", 50000)))
        assert.is_true(os.clock() - t0 < 0.5)
        assert.equal("x [redacted] [redacted]. @ a@b",
                     redact.mask(c, "x bob@example.com a.b+c@x-y.co.uk. @ a@b"))
    end)

    it("rejects patterns that only fail on real text, or match nothing",
       function()
        for _, p in ipairs({ "x%", "x[a", "%f[%w]", "a*" }) do
            local _, err = schema.validate(sch, { patterns = { p } },
                                           "config")
            assert.truthy(err, p)
        end
    end)

    it("withholds the content when masking raises (fails closed)",
       function()
        local c = conf({})
        c.patterns = { "x[" } -- bypassing the schema on purpose
        local chunk = { content = "secret x stuff", chunk = "x" }
        redact.on_chunk(c, chunk)
        assert.equal("[redacted]", chunk.content)
        assert.is_nil(chunk.chunk)
    end)
end)
