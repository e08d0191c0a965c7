-- The ai_service upstream: proxies the REST API to the original Python AI
-- service, as the Java server did (notes/original-system.md §3.1):
--
--   POST   /api/chat          -> POST   {AI}/chat          (passed through)
--   POST   /api/cancel        -> POST   {AI}/cancel        (passed through)
--   GET    /api/history/{sid} -> GET    {AI}/history/{sid} (passed through)
--   DELETE /api/history/{sid} -> DELETE {AI}/history/{sid} (our own 200)
--   GET    /api/ai-health     -> GET    {AI}/health
--
-- Errors are mapped like Java's: AI 4xx -> same status {"error":"Bad
-- request","detail":<raw AI body>}; AI 5xx -> 502 "AI service error"; no
-- connection or I/O error -> 502 "Communication error with AI service";
-- no answer within ai_service.timeout -> 504 "AI service timeout".
--
-- The answer itself never passes through here: the Python service
-- PUBLISHes it on chat:stream:{sid}, which the core ingests in Redis mode.
-- In embedded mode nothing reads that channel, so a warning is logged at
-- load. routes.lua does the validation and auth before calling `rest`.

local sg = sg
local json = sg.json
local type = type
local tostring = tostring


local DEFAULT_URL = "http://127.0.0.1:8000"
local DEFAULT_TIMEOUT = 30
local HEALTH_TIMEOUT = 5     -- seconds at most for /api/ai-health
local MAX_BODY = 8 * 1048576 -- a day of history can be large
local URL_FORM = "http://HOST[:port][/path], HOST an IPv4 literal or "
    .. "localhost"
local REASONS = {
    [500] = "Internal Server Error", [501] = "Not Implemented",
    [502] = "Bad Gateway", [503] = "Service Unavailable",
    [504] = "Gateway Timeout",
}
local ERR_BAD_REQUEST = "Bad request"
local ERR_AI = "AI service error"
local ERR_IO = "Communication error with AI service"
local ERR_TIMEOUT = "AI service timeout"
local JSON_HEADERS = { ["content-type"] = "application/json" }


local _M = {
    _VERSION = "0.1.0",
}


local function valid_ipv4(host)
    local a, b, c, d = host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then
        return false
    end
    for _, part in ipairs({ a, b, c, d }) do
        if #part > 3 or tonumber(part) > 255 then
            return false
        end
    end
    return true
end


--- parse_base(url) -> base url without trailing slashes | nil, err
-- Accepts http://HOST[:port][/path] with HOST an IPv4 literal or
-- localhost: sg.http.request never resolves names.
function _M.parse_base(url)
    if type(url) ~= "string" then
        return nil, "expected a string"
    end
    if url:find("^https://") then
        return nil, "https is not supported"
    end
    local rest = url:match("^http://(.*)$")
    if not rest then
        return nil, "expected the scheme http://"
    end
    local hostport, path = rest:match("^([^/]*)(.*)$")
    local host, port = hostport:match("^(.-):(.*)$")
    host = host or hostport
    if host ~= "localhost" and not valid_ipv4(host) then
        return nil, "host '" .. host .. "' is not an IPv4 literal or "
            .. "localhost (host names are not resolved)"
    end
    if port and not (port:find("^%d+$") and #port <= 5
                     and tonumber(port) >= 1 and tonumber(port) <= 65535) then
        return nil, "bad port '" .. port .. "': expected 1-65535"
    end
    if path:find("[%?#%s]") then
        return nil, "the path must not hold '?', '#' or spaces"
    end
    return (url:gsub("/+$", ""))
end


local conf = sg.config.ai_service or {}
local base, why = _M.parse_base(conf.url or DEFAULT_URL)
if not base then
    error("config: ai_service.url = '" .. tostring(conf.url) .. "': " .. why
          .. ": expected " .. URL_FORM, 0)
end
local timeout = conf.timeout or DEFAULT_TIMEOUT
_M.base, _M.timeout = base, timeout

if not (sg.config.redis and sg.config.redis.enabled) then
    sg.log("warn", "ai_service: embedded mode: the AI service publishes its "
           .. "answers on Redis (chat:stream:{sid}), which this node does "
           .. "not read, so no answer will reach the clients; set redis.url "
           .. "(REDIS_URL) to the AI service's Redis")
end


-- request(method, path, body, limit) -> res | nil, err, url
local function request(method, path, body, limit)
    local url = base .. path
    local res, err = sg.http.request({
        method = method,
        url = url,
        headers = body and JSON_HEADERS or nil,
        body = body,
        timeout = limit or timeout,
        max_body = MAX_BODY,
    })
    return res, err, url
end


--- `s` with every byte that is not part of valid UTF-8 replaced by
-- U+FFFD: the AI's raw body goes into a JSON string (lua-cjson does not
-- check UTF-8, so invalid bytes would make the answer invalid JSON).
local function utf8_clean(s)
    if not s:find("[\128-\255]") then
        return s
    end
    local out, n, i, len = {}, 0, 1, #s
    local byte = string.byte
    while i <= len do
        local c = byte(s, i)
        local need = c < 0x80 and 0 or c >= 0xC2 and c <= 0xDF and 1
            or c >= 0xE0 and c <= 0xEF and 2 or c >= 0xF0 and c <= 0xF4 and 3
            or -1
        local ok = need >= 0 and i + need <= len
        for k = 1, ok and need or 0 do
            local b = byte(s, i + k)
            if b < 0x80 or b > 0xBF then
                ok = false
                break
            end
        end
        n = n + 1
        if ok then
            out[n] = s:sub(i, i + need)
            i = i + need + 1
        else
            out[n] = "\239\191\189"
            i = i + 1
        end
    end
    return table.concat(out)
end
_M.utf8_clean = utf8_clean


--- The Java error mapping; nil when the AI answered below 400.
local function map_error(method, res, err, url)
    if not res then
        if err == "timeout" then
            return 504, { error = ERR_TIMEOUT,
                          detail = "no answer from " .. method .. " " .. url
                              .. " within " .. timeout .. " s" }
        end
        return 502, { error = ERR_IO,
                      detail = "I/O error on " .. method .. " request for \""
                          .. url .. "\": " .. tostring(err) }
    end

    local status, raw = res.status, utf8_clean(res.body or "")
    if status > 100 and status < 200 then
        -- an interim answer reported as final (lws 4.1.6 handles only
        -- 100 Continue): nothing a browser can use
        return 502, { error = ERR_AI, detail = "unexpected status " .. status }
    end
    if status >= 500 then
        local reason = REASONS[status]
        return 502, { error = ERR_AI,
                      detail = status .. (reason and " " .. reason or "")
                          .. ": " .. raw }
    end
    if status >= 400 then
        return status, { error = ERR_BAD_REQUEST, detail = raw }
    end
    return nil
end


--- The AI's status and body as they came, with its content type.
local function proxy(method, path, body)
    local res, err, url = request(method, path, body)
    local status, mapped = map_error(method, res, err, url)
    if status then
        return status, mapped
    end
    return res.status, res.body or "",
        { ["Content-Type"] = res.headers and res.headers["content-type"]
                             or "application/json" }
end


_M.rest = {}


function _M.rest.chat(body)
    return proxy("POST", "/chat", json.encode(body))
end


function _M.rest.cancel(body)
    return proxy("POST", "/cancel", json.encode(body))
end


function _M.rest.history_get(sid)
    return proxy("GET", "/history/" .. sid)
end


--- Java answered with its own body once the AI had cleared the list.
function _M.rest.history_clear(sid)
    local res, err, url = request("DELETE", "/history/" .. sid)
    local status, mapped = map_error("DELETE", res, err, url)
    if status then
        return status, mapped
    end
    return 200, {
        status = "success",
        message = "History cleared for session " .. sid,
    }
end


local function unreachable(why_text)
    return 503, { ai_service = "unreachable",
                  error = "Communication error: " .. why_text, url = base }
end


--- GET {AI}/health, bounded by HEALTH_TIMEOUT: a probe must not hang.
function _M.health()
    local limit = timeout < HEALTH_TIMEOUT and timeout or HEALTH_TIMEOUT
    local res, err = request("GET", "/health", nil, limit)
    if not res then
        if err == "timeout" then
            return unreachable("no answer within " .. limit .. " s")
        end
        return unreachable(tostring(err))
    end
    if res.status < 200 or res.status >= 300 then
        return unreachable("AI service answered " .. res.status .. ": "
                           .. (res.body or ""))
    end

    local decoded = json.decode(res.body or "")
    local status = type(decoded) == "table" and decoded.status
    if type(status) ~= "string" then
        status = "unknown"
    end
    return 200, { ai_service = "reachable", status = status, url = base }
end


--- Never called through routes (rest answers first); kept so that code
-- written for the demo's interface gets a clear error.
function _M.start()
    return nil, "the ai_service upstream answers /api/chat through rest.chat"
end


function _M.cancel()
    return { status = "error",
             message = "the ai_service upstream cancels through rest.cancel" }
end


return _M
