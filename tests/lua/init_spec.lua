local fake_sg = require "tests.lua.helpers.fake_sg"


describe("init.lua", function()
    it("returns the four hooks wired to the modules", function()
        fake_sg.install()
        local hooks = dofile("lua/init.lua")
        assert.equal(require("auth").on_connect, hooks.on_connect)
        assert.equal(require("router").on_message, hooks.on_message)
        assert.equal(require("router").on_disconnect, hooks.on_disconnect)
        assert.equal(require("routes").on_http, hooks.on_http)
        local status, body = hooks.on_http({ method = "GET",
                                             path = "/api/ai-health" })
        assert.equal(200, status)
        assert.equal("demo", body.url)
    end)

    it("names the config key when the upstream does not exist", function()
        local fake = fake_sg.install()
        fake.sg.config.upstream = "nope"
        local ok, err = pcall(dofile, "lua/init.lua")
        assert.is_false(ok)
        assert.truthy(err:find("config: upstream = 'nope': no module "
                               .. "lua/upstreams/nope.lua", 1, true))
    end)
end)
