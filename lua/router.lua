-- Inbound WebSocket frames (docs/protocol.md, "Client → server").
--
-- The text "ping" gets the text "pong". Text that does not look like JSON
-- (does not start with "{" or "[") is ignored, as the original did. Text
-- that looks like JSON but does not parse gets "Invalid JSON"; JSON that
-- is not an object with a string `type` gets "Missing message type". Known
-- types are dispatched through `_M.handlers`, which plugins may extend; an
-- unknown type gets an error frame naming it. The connection stays open.
-- Plugins add types to `_M.handlers` and may stop any frame through
-- `_M.pre_filter(conn, msg_or_nil, text) -> false` (init.lua wires both).

local sg = sg
local json = sg.json
local sg_send = sg.send
local json_decode = json.decode
local json_encode = json.encode
local type = type


local PONG = '{"type":"pong"}'
local HEARTBEAT_ACK = '{"type":"heartbeat_ack"}'
local ERR_RECOVERY = "Recovery failed"
local ERR_UNKNOWN_TYPE = "Unknown message type: "
local ERR_INVALID_JSON = "Invalid JSON"
local ERR_RESUME = "Resume failed"
local ERR_RESUME_BUSY = "Resume already in progress"
local ERR_RESUME_SINCE = "Invalid resume: since must be a non-negative integer"
local ERR_RESUME_EPOCH = "Invalid resume: epoch must be a string"
local ERR_CANCEL = "Invalid cancel: message_id must be a non-empty string"
local ERR_MISSING_TYPE = "Missing message type"


local _M = {
    _VERSION = "0.1.0",
    handlers = {},
}


-- The configured upstream, loaded on first use (it may need sg.config).
local function upstream()
    return require("upstreams." .. (sg.config.upstream or "demo"))
end


local function error_frame(text)
    return json_encode({
        type = "error",
        error = text,
        timestamp = sg.iso_now(),
    })
end


local function valid_reconnect(msg)
    local mid = msg.messageId
    if type(mid) ~= "string" or mid == "" then
        return false
    end

    local idx = msg.lastChunkIndex
    if idx ~= nil and (type(idx) ~= "number" or idx < -1
                       or idx ~= math.floor(idx))
    then
        return false
    end

    return true
end


local function valid_offset(n)
    return type(n) == "number" and n >= 0 and n == math.floor(n)
        and n < 9e15
end


function _M.handlers.ping(conn)
    return sg_send(conn, PONG)
end


function _M.handlers.heartbeat(conn)
    return sg_send(conn, HEARTBEAT_ACK)
end


--- Compat recovery: the stream coordinator sends the newest state of the
-- message and then recovery_status recovered / completed / not_found /
-- expired (docs/protocol.md).
function _M.handlers.reconnect(conn, msg)
    if not valid_reconnect(msg) then
        return sg_send(conn, error_frame(ERR_RECOVERY))
    end

    local ok, err = sg.reconnect(conn, msg.messageId, msg.lastChunkIndex)
    if not ok then
        sg.log("warn", "reconnect: ", err)
        return sg_send(conn, error_frame(ERR_RECOVERY))
    end
end


--- Native resume on an open socket (docs/protocol.md): the coordinator
-- replays what followed `since`, then sends "resumed".
function _M.handlers.resume(conn, msg)
    if not valid_offset(msg.since) then
        return sg_send(conn, error_frame(ERR_RESUME_SINCE))
    end

    if msg.epoch ~= nil and type(msg.epoch) ~= "string" then
        return sg_send(conn, error_frame(ERR_RESUME_EPOCH))
    end

    local ok, err = sg.resume(conn, msg.since, msg.epoch)
    if not ok then
        return sg_send(conn, error_frame(err == "busy" and ERR_RESUME_BUSY
                                         or ERR_RESUME))
    end
end


--- Native cancel (docs/protocol.md): same effect as POST /api/cancel; the
-- cancelled final reaches every socket through the stream.
function _M.handlers.cancel(conn, msg)
    local mid = msg.message_id
    if type(mid) ~= "string" or mid == "" then
        return sg_send(conn, error_frame(ERR_CANCEL))
    end

    local result = upstream().cancel(conn.session_id, mid)
    return sg_send(conn, json_encode({
        type = "cancel_status",
        message_id = mid,
        status = result.status,
    }))
end


-- What a frame is: "ping" (the text ping), "ignore" (text that does not
-- look like JSON), "invalid" (looks like JSON, does not parse) or "json"
-- with the decoded value.
local function parse(text)
    if text == "ping" then
        return "ping"
    end

    if not text:find("^%s*[%[{]") then
        return "ignore"
    end

    local msg = json_decode(text)
    if msg == nil then
        return "invalid"
    end
    return "json", msg
end


--- Every frame passes the plugins' pre-filter first (`_M.pre_filter`,
-- set by init.lua when a plugin has on_message), whatever it is, so a
-- rate limit counts pings and garbage too. The filter replies itself when
-- it stops a frame.
function _M.on_message(conn, text)
    local kind, msg = parse(text)

    local filter = _M.pre_filter
    if filter and filter(conn, type(msg) == "table" and msg or nil,
                         text) == false
    then
        return
    end

    if kind == "ping" then
        return sg_send(conn, "pong")
    end

    if kind == "ignore" then
        return
    end

    if kind == "invalid" then
        return sg_send(conn, error_frame(ERR_INVALID_JSON))
    end

    if type(msg) ~= "table" or type(msg.type) ~= "string" then
        return sg_send(conn, error_frame(ERR_MISSING_TYPE))
    end

    local handler = _M.handlers[msg.type]
    if not handler then
        return sg_send(conn, error_frame(ERR_UNKNOWN_TYPE .. msg.type))
    end

    return handler(conn, msg)
end


function _M.on_disconnect(conn)
end


return _M
