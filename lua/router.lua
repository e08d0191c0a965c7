-- Inbound WebSocket frames (PROTOCOL.md §2, "Client → server").
--
-- The text "ping" gets the text "pong". Text that does not look like JSON
-- (does not start with "{" or "[") is ignored, as the original did. Text
-- that looks like JSON but does not parse gets "Invalid JSON"; JSON that
-- is not an object with a string `type` gets "Missing message type". Known
-- types are dispatched through `_M.handlers`, which plugins may extend; an
-- unknown type gets an error frame naming it. The connection stays open.

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
local ERR_MISSING_TYPE = "Missing message type"
local MESSAGE_KEYS = {
    "message_id", "session_id", "user_id", "role", "content", "chunk",
    "timestamp", "is_complete",
}


local _M = {
    _VERSION = "0.1.0",
    handlers = {},
}


local function error_frame(text)
    return json_encode({
        type = "error",
        error = text,
        timestamp = sg.iso_now(),
    })
end


local function recovery_status(status)
    return json_encode({
        type = "recovery_status",
        status = status,
        chunksRecovered = 0,
    })
end


-- A stored ChatMessage with all eight keys (nulls where absent), as the
-- original server serialized it.
local function full_message(entry)
    local msg = {}
    for i = 1, #MESSAGE_KEYS do
        local k = MESSAGE_KEYS[i]
        local v = entry[k]
        if v == nil then
            v = json.null
        end
        msg[k] = v
    end
    return msg
end


-- The newest stored final answer with `message_id`, or nil.
local function find_final(items, message_id)
    for i = #items, 1, -1 do
        local entry = json_decode(items[i])
        if type(entry) == "table" and entry.message_id == message_id
            and entry.role == "assistant" and entry.is_complete == true
        then
            return entry
        end
    end
    return nil
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


function _M.handlers.ping(conn)
    return sg_send(conn, PONG)
end


function _M.handlers.heartbeat(conn)
    return sg_send(conn, HEARTBEAT_ACK)
end


--- Compat recovery, limited to history: a finished answer is sent once
-- more as a message frame + "completed"; anything else is "not_found".
function _M.handlers.reconnect(conn, msg)
    if not valid_reconnect(msg) then
        return sg_send(conn, error_frame(ERR_RECOVERY))
    end

    local items, err = sg.history.get(conn.session_id)
    if not items then
        sg.log("warn", "reconnect: failed to read history: ", err)
        return sg_send(conn, error_frame(ERR_RECOVERY))
    end

    local final = find_final(items, msg.messageId)
    if not final then
        return sg_send(conn, recovery_status("not_found"))
    end

    sg_send(conn, json_encode({ type = "message", data = full_message(final) }))
    return sg_send(conn, recovery_status("completed"))
end


function _M.on_message(conn, text)
    if text == "ping" then
        return sg_send(conn, "pong")
    end

    local first = text:match("^%s*([%[{])")
    if not first then
        return
    end

    local msg = json_decode(text)
    if msg == nil then
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
