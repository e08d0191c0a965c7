-- The compat REST API under /api (docs/protocol.md). on_http(req) matches a
-- (method, path pattern) table and returns status, body[, headers]; a
-- table body is JSON-encoded by the host. nil means "no route" (the host
-- answers 404). The answers themselves come from the configured upstream
-- (lua/upstreams/*.lua), set with _M.init{ upstream = ... }. Plugins add
-- routes (_M.add_routes) and a pre-filter (_M.pre_filter); see plugins.lua.
--
-- An upstream that proxies a remote service (upstreams/ai_service.lua)
-- answers the data routes itself: after the checks below, routes hands the
-- request to upstream.rest.chat(body), .cancel(body), .history_get(sid) or
-- .history_clear(sid) and returns their status, body[, headers] unchanged.
-- `body` is the decoded request, with user_id resolved for chat.

local sg = sg
local json = sg.json
local type = type


local DEFAULT_USER = "default_user"
local MAX_SESSION_ID = 128
local ERR_BAD_REQUEST = "Bad request"
local ERR_BAD_JSON = "invalid JSON body"
local ERR_EMPTY_MESSAGE = "Message cannot be empty"
local ERR_SESSION_ID =
    "invalid session_id (expected 1-128 characters of A-Za-z0-9_.:-)"
local ERR_USER_ID = "user_id must be a non-empty string"
local ERR_CANCEL_FIELDS = "session_id and message_id are required strings"
local ERR_UNAVAILABLE = "Service unavailable"
local ERR_AUTH = "Authentication failed"
local ERR_UPSTREAM = "AI service error"


local _M = {
    _VERSION = "0.1.0",
}

local upstream
local authenticate


local function bad_request(detail)
    return 400, { error = ERR_BAD_REQUEST, detail = detail }
end


local function valid_session_id(sid)
    return type(sid) == "string" and #sid >= 1 and #sid <= MAX_SESSION_ID
        and sid:find("^[%w_%.:%-]+$") ~= nil
end


local function decode_body(req)
    local body = req.body and json.decode(req.body)
    if type(body) ~= "table" then
        return nil
    end
    return body
end


-- A stored entry that /api/history may return: an object with string
-- message_id, role and content (what the Python service validated).
local function valid_entry(entry)
    return type(entry) == "table" and type(entry.message_id) == "string"
        and type(entry.role) == "string"
        and type(entry.content) == "string"
end


-- The upstream's own handler for a data route (a proxying upstream), or
-- nil: then the route answers from the stream and history itself.
local function proxy(name)
    local rest = upstream.rest
    return rest and rest[name]
end


local function chat(req, _, claims)
    local body = decode_body(req)
    if not body then
        return bad_request(ERR_BAD_JSON)
    end

    local message = body.message
    if type(message) ~= "string" or not message:find("%S") then
        return bad_request(ERR_EMPTY_MESSAGE)
    end

    local max = sg.config.stream.max_message_bytes
    if max and #message > max then
        return 413, { error = "Payload too large",
                      detail = "message is " .. #message .. " bytes, over "
                               .. "stream.max_message_bytes (" .. max .. ")" }
    end

    local sid = body.session_id
    if not valid_session_id(sid) then
        return bad_request(ERR_SESSION_ID)
    end

    local user_id = body.user_id
    if user_id == nil then
        user_id = claims.sub or DEFAULT_USER

    elseif type(user_id) ~= "string" or user_id == "" then
        return bad_request(ERR_USER_ID)
    end

    if claims.sub ~= nil and claims.sub ~= user_id then
        return 403, { error = "Forbidden",
                      detail = "user_id does not match the token subject" }
    end

    local forward = proxy("chat")
    if forward then
        body.user_id = user_id
        return forward(body)
    end

    local message_id, err = upstream.start(sid, user_id, message)
    if not message_id then
        return 502, { error = ERR_UPSTREAM, detail = err }
    end

    return 200, {
        status = "streaming",
        message_id = message_id,
        session_id = sid,
        message = "AI is generating response...",
    }
end


local function cancel(req)
    local body = decode_body(req)
    if not body then
        return bad_request(ERR_BAD_JSON)
    end

    local sid, mid = body.session_id, body.message_id
    if type(sid) ~= "string" or type(mid) ~= "string" then
        return bad_request(ERR_CANCEL_FIELDS)
    end

    if not valid_session_id(sid) then
        return bad_request(ERR_SESSION_ID)
    end

    local forward = proxy("cancel")
    if forward then
        return forward(body)
    end

    return 200, upstream.cancel(sid, mid)
end


--- Builds the body by hand around encoded parts: lua-cjson encodes an
-- empty table as {} and "messages" must be [] when there are none.
local function history_get(req, sid)
    if not valid_session_id(sid) then
        return bad_request(ERR_SESSION_ID)
    end

    local forward = proxy("history_get")
    if forward then
        return forward(sid)
    end

    local items, err = sg.history.get(sid)
    if not items then
        return 503, { error = ERR_UNAVAILABLE,
                      detail = "failed to read history: " .. err }
    end

    local encoded, n = {}, 0
    for i = 1, #items do
        local entry = json.decode(items[i])
        if valid_entry(entry) then
            n = n + 1
            encoded[n] = json.encode(entry)
        end
    end

    return 200, '{"session_id":' .. json.encode(sid) .. ',"messages":['
        .. table.concat(encoded, ",") .. '],"count":' .. n .. '}'
end


local function history_clear(req, sid)
    if not valid_session_id(sid) then
        return bad_request(ERR_SESSION_ID)
    end

    local forward = proxy("history_clear")
    if forward then
        return forward(sid)
    end

    local ok, err = sg.history.clear(sid)
    if not ok then
        return 503, { error = ERR_UNAVAILABLE,
                      detail = "failed to clear history: " .. err }
    end

    return 200, {
        status = "success",
        message = "History cleared for session " .. sid,
    }
end


-- Dev mode only: mints a token for any user_id (the route does not exist
-- otherwise).
local function auth_token(req)
    if not sg.config.auth.dev_mode then
        return nil
    end

    local body = decode_body(req)
    if not body then
        return bad_request(ERR_BAD_JSON)
    end

    local user_id = body.user_id
    if type(user_id) ~= "string" or user_id == "" then
        return bad_request(ERR_USER_ID)
    end

    local token, err = sg.jwt.sign({ sub = user_id })
    if not token then
        return 500, { error = "Internal server error",
                      detail = "failed to sign token: " .. err }
    end

    return 200, { token = token, expires_in = sg.config.auth.token_ttl }
end


local function ai_health()
    local status, body = upstream.health()
    return status, body
end


-- { method, path pattern, handler, authenticated }
local ROUTES = {
    { "POST", "^/api/chat$", chat, true },
    { "POST", "^/api/cancel$", cancel, true },
    { "GET", "^/api/history/([^/]+)$", history_get, true },
    { "DELETE", "^/api/history/([^/]+)$", history_clear, true },
    { "POST", "^/api/auth/token$", auth_token, false },
    { "GET", "^/api/ai%-health$", ai_health, false },
}
_M.routes = ROUTES


function _M.init(opts)
    upstream = opts.upstream
    authenticate = opts.authenticate
end


--- Appends plugin routes { method, pattern, fn(req, capture, claims),
-- authenticated } after the built-in ones (which therefore win).
function _M.add_routes(list)
    for _, r in ipairs(list or {}) do
        ROUTES[#ROUTES + 1] = r
    end
end


--- Every request passes the plugins' pre-filter first (`_M.pre_filter`,
-- set by init.lua when a plugin has on_http): a status ends the request.
function _M.on_http(req)
    local filter = _M.pre_filter
    if filter then
        local status, body, headers = filter(req)
        if status ~= nil then
            return status, body, headers
        end
    end

    local method, path = req.method, req.path
    for i = 1, #ROUTES do
        local route = ROUTES[i]
        if route[1] == method then
            local m = path:match(route[2])
            if m then
                local claims = {}
                if route[4] and authenticate then
                    local err
                    claims, err = authenticate(req)
                    if not claims then
                        return 401, { error = ERR_AUTH, detail = err }
                    end
                end
                -- a pattern without captures returns the whole match
                return route[3](req, m, claims)
            end
        end
    end
    return nil
end


return _M
