local fake_sg = require "tests.lua.helpers.fake_sg"


describe("schema.validate", function()
    local schema

    before_each(function()
        fake_sg.install()
        schema = require "schema"
    end)

    local function one(name, def)
        return { fields = { { [name] = def } } }
    end

    local function err_of(def, input)
        local conf, err = schema.validate(def, input)
        assert.is_nil(conf)
        return err
    end

    it("fills defaults and leaves the input untouched", function()
        local def = { fields = {
            { n = { type = "integer", default = 5 } },
            { list = { type = "array", default = { "a" },
                       elements = { type = "string" } } },
            { opt = { type = "string" } },
        } }
        local input = {}
        local conf = assert(schema.validate(def, input))
        assert.same({ n = 5, list = { "a" } }, conf)
        assert.same({}, input)
        conf.list[2] = "b"
        assert.same({ list = { "a" }, n = 5 },
                    assert(schema.validate(def, nil)))
    end)

    it("keeps given values over defaults, false included", function()
        local def = one("b", { type = "boolean", default = true })
        assert.same({ b = false }, assert(schema.validate(def, { b = false })))
    end)

    it("names key, value and type for every field type", function()
        assert.equal("config.s = 5: expected a string",
                     err_of(one("s", { type = "string" }), { s = 5 }))
        assert.equal("config.n = 'x': expected a number",
                     err_of(one("n", { type = "number" }), { n = "x" }))
        assert.equal("config.i = 1.5: expected an integer",
                     err_of(one("i", { type = "integer" }), { i = 1.5 }))
        assert.equal("config.b = 'yes': expected a boolean",
                     err_of(one("b", { type = "boolean" }), { b = "yes" }))
        assert.equal("config.a = 'x': expected an array of strings",
                     err_of(one("a", { type = "array",
                                       elements = { type = "string" } }),
                            { a = "x" }))
    end)

    it("rejects NaN as a number and infinity as an integer", function()
        assert.equal("config.n = nan: expected a number",
                     err_of(one("n", { type = "number" }), { n = 0 / 0 })
                         :gsub("%-nan", "nan"))
        assert.equal("config.i = inf: expected an integer",
                     err_of(one("i", { type = "integer" }),
                            { i = math.huge }))
    end)

    it("checks bounds inclusively with exact messages", function()
        local ge = one("n", { type = "number", min = 1 })
        assert.equal("config.n = -1: expected a number >= 1",
                     err_of(ge, { n = -1 }))
        assert.equal("config.n = 0.5: expected a number >= 1",
                     err_of(ge, { n = 0.5 }))
        assert.same({ n = 1 }, assert(schema.validate(ge, { n = 1 })))

        local le = one("n", { type = "integer", max = 10 })
        assert.equal("config.n = 11: expected an integer <= 10",
                     err_of(le, { n = 11 }))
        assert.same({ n = 10 }, assert(schema.validate(le, { n = 10 })))

        local between = one("n", { type = "integer", min = 1, max = 3 })
        assert.equal("config.n = 4: expected an integer between 1 and 3",
                     err_of(between, { n = 4 }))
        assert.equal("config.n = 'two': expected an integer between 1 "
                     .. "and 3", err_of(between, { n = "two" }))
    end)

    it("checks one_of and lists the allowed values", function()
        local def = one("per", { type = "string", default = "user",
                                 one_of = { "user", "ip", "both" } })
        assert.equal("config.per = 'host': expected one of 'user', 'ip', "
                     .. "'both'", err_of(def, { per = "host" }))
        assert.same({ per = "ip" }, assert(schema.validate(def,
                                                           { per = "ip" })))
    end)

    it("checks string and array lengths", function()
        assert.equal("config.s = '': expected a non-empty string",
                     err_of(one("s", { type = "string", min_length = 1 }),
                            { s = "" }))
        assert.equal("config.s = 'abcd': expected a string of at most 3 "
                     .. "bytes", err_of(one("s", { type = "string",
                                                   max_length = 3 }),
                                        { s = "abcd" }))
        assert.equal("config.a = a table: expected an array of at most 1 "
                     .. "items of integers",
                     err_of(one("a", { type = "array", max_length = 1,
                                       elements = { type = "integer" } }),
                            { a = { 1, 2 } }))
    end)

    it("names the index of a bad array element", function()
        local def = one("a", { type = "array",
                               elements = { type = "string",
                                            min_length = 1 } })
        assert.equal("config.a[2] = 7: expected a non-empty string",
                     err_of(def, { a = { "x", 7 } }))
        assert.equal("config.a = a table: expected an array of strings",
                     err_of(def, { a = { x = "y" } }))
    end)

    it("reports a required field that is missing", function()
        local def = one("n", { type = "integer", required = true, min = 0 })
        assert.equal("config.n = nil: expected an integer >= 0 (required)",
                     err_of(def, {}))
    end)

    it("rejects unknown fields and lists the known ones", function()
        local def = { fields = { { b = { type = "boolean" } },
                                 { a = { type = "integer" } } } }
        assert.equal("config.c = 1: unknown field (expected one of: a, b)",
                     err_of(def, { a = 1, c = 1 }))
    end)

    it("rejects a config that is not a table", function()
        assert.equal("config = 'x': expected a table",
                     err_of(one("a", { type = "integer" }), "x"))
    end)

    it("adds the reason of a field check", function()
        local def = one("p", { type = "string", check = function(v)
            if v:find("!") then return nil, "no bangs" end
            return true
        end })
        assert.equal("config.p = 'a!': expected a string (no bangs)",
                     err_of(def, { p = "a!" }))
        assert.same({ p = "a" }, assert(schema.validate(def, { p = "a" })))
    end)

    it("runs the cross-field validator on the filled config", function()
        local seen
        local def = {
            fields = { { lo = { type = "integer", default = 1 } },
                       { hi = { type = "integer", default = 2 } } },
            validator = function(conf)
                seen = conf
                if conf.hi < conf.lo then
                    return nil, "config.hi = " .. conf.hi .. ": expected "
                        .. ">= config.lo (" .. conf.lo .. ")"
                end
                return true
            end,
        }
        assert.same({ lo = 1, hi = 2 }, assert(schema.validate(def, {})))
        assert.same({ lo = 1, hi = 2 }, seen)
        assert.equal("config.hi = 0: expected >= config.lo (1)",
                     err_of(def, { hi = 0 }))
    end)

    it("uses the given key prefix", function()
        local conf, err = schema.validate(one("n", { type = "integer" }),
                                          { n = "x" }, "")
        assert.is_nil(conf)
        assert.equal("n = 'x': expected an integer", err)
    end)

    it("raises on a malformed schema (a plugin bug)", function()
        assert.has_error(function()
            schema.validate({ fields = { { n = { type = "float" } } } }, {})
        end, "bad schema: field 'n' needs a type (one of string, number, "
             .. "integer, boolean, array)")
        assert.has_error(function()
            schema.validate(one("n", { type = "integer", minimum = 1 }), {})
        end, "bad schema: field 'n' has an unknown attribute 'minimum'")
    end)
end)
