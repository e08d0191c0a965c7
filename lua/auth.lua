-- Connection authentication (docs/protocol.md, "Auth").
--
-- Dev mode (sg.config.auth.dev_mode) accepts the token "dev-token", or no
-- token, for any user; a real JWT is still verified when one is given.
-- Otherwise a JWT is required: signature, pinned algorithm, exp/nbf/iss/aud
-- are checked by sg.jwt.verify (which also strips an optional "Bearer "),
-- and its `sub` must equal the requested user_id.

local sg = sg


local DEV_TOKEN = "dev-token"
local ERR_MISSING_TOKEN = "missing token"
local ERR_SUBJECT = "token subject does not match user_id"


local _M = {
    _VERSION = "0.1.0",
}


local function is_dev_token(token)
    return token == nil or token == DEV_TOKEN
        or token == "Bearer " .. DEV_TOKEN
end


--- Verifies a JWT and binds it to the requested user.
local function verify_token(token, user_id)
    local claims, err = sg.jwt.verify(token)
    if not claims then
        return nil, err
    end

    if claims.sub ~= user_id then
        return nil, ERR_SUBJECT
    end

    return claims
end


-- on_connect(req) -> true, {user_id = ...} | false, reason
function _M.on_connect(req)
    local token = req.token
    if token == "" then
        token = nil
    end

    if sg.config.auth.dev_mode and is_dev_token(token) then
        return true, { user_id = req.user_id }
    end

    if not token then
        return false, ERR_MISSING_TOKEN
    end

    local _, err = verify_token(token, req.user_id)
    if err then
        return false, err
    end

    return true, { user_id = req.user_id }
end


--- REST calls (/api/*): in dev mode anyone may call them (the original
-- system's behaviour, with dev-token on the socket). Otherwise the
-- Authorization header must carry a valid JWT (defect 13: the original's
-- REST API was open even when the socket required JWTs).
-- Returns claims (dev mode: {}) or nil, reason.
function _M.authenticate_http(req)
    local header = req.headers and req.headers.authorization
    if sg.config.auth.dev_mode then
        if header == nil or is_dev_token(header) then
            return {}
        end
    end

    if header == nil or header == "" then
        return nil, ERR_MISSING_TOKEN
    end

    return sg.jwt.verify(header)
end


return _M
