local fake_sg = require "tests.lua.helpers.fake_sg"


describe("auth.on_connect", function()
    local fake, auth

    local function connect(token, user_id)
        return auth.on_connect({ session_id = "s1",
                                 user_id = user_id or "alice",
                                 token = token, path = "/ws/chat" })
    end

    before_each(function()
        fake = fake_sg.install()
        auth = require "auth"
        fake.claims["jwt-alice"] = { sub = "alice", exp = 2000000000 }
        fake.claims["jwt-expired"] = "token expired"
    end)

    describe("in dev mode", function()
        it("accepts dev-token for any user", function()
            local ok, id = connect("dev-token", "bob")
            assert.is_true(ok)
            assert.same({ user_id = "bob" }, id)
        end)

        it("accepts a missing or empty token", function()
            assert.is_true((connect(nil)))
            assert.is_true((connect("")))
        end)

        it("accepts dev-token with a Bearer prefix", function()
            assert.is_true((connect("Bearer dev-token")))
        end)

        it("still checks a real JWT", function()
            assert.same({ true, { user_id = "alice" } },
                        { connect("jwt-alice", "alice") })
            assert.same({ false, "token subject does not match user_id" },
                        { connect("jwt-alice", "mallory") })
            assert.same({ false, "token expired" }, { connect("jwt-expired") })
        end)
    end)

    describe("in production mode", function()
        before_each(function()
            fake.sg.config.auth.dev_mode = false
        end)

        it("requires a token", function()
            assert.same({ false, "missing token" }, { connect(nil) })
            assert.same({ false, "missing token" }, { connect("") })
        end)

        it("rejects dev-token", function()
            assert.same({ false, "malformed token or bad signature" },
                        { connect("dev-token") })
        end)

        it("accepts a valid JWT whose sub is the user", function()
            assert.same({ true, { user_id = "alice" } },
                        { connect("jwt-alice", "alice") })
        end)

        it("rejects a JWT for another user", function()
            assert.same({ false, "token subject does not match user_id" },
                        { connect("jwt-alice", "bob") })
        end)

        it("passes the verifier's reason through", function()
            assert.same({ false, "token expired" }, { connect("jwt-expired") })
        end)
    end)

    describe("authenticate_http", function()
        local function rest(authorization)
            return auth.authenticate_http({ headers = {
                authorization = authorization } })
        end

        it("lets anyone call the API in dev mode", function()
            assert.same({}, rest(nil))
            assert.same({}, rest("Bearer dev-token"))
        end)

        it("still verifies a real token in dev mode", function()
            fake.claims["Bearer jwt-alice"] = { sub = "alice" }
            assert.same({ sub = "alice" }, rest("Bearer jwt-alice"))
            assert.same({ nil, "malformed token or bad signature" },
                        { rest("Bearer junk") })
        end)

        it("requires a valid JWT outside dev mode", function()
            fake.sg.config.auth.dev_mode = false
            fake.claims["Bearer jwt-alice"] = { sub = "alice" }
            assert.same({ nil, "missing token" }, { rest(nil) })
            assert.same({ nil, "missing token" }, { rest("") })
            assert.same({ nil, "malformed token or bad signature" },
                        { rest("Bearer dev-token") })
            assert.same({ sub = "alice" }, rest("Bearer jwt-alice"))
        end)
    end)
end)
