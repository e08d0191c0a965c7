-- Server-Sent Events parser for bodies that arrive in arbitrary pieces
-- (sg.http.request's on_chunk). Feed it every piece; it returns the events
-- completed by that piece, following the WHATWG "event stream" rules:
-- lines end with CRLF, LF or CR; "data" lines are joined with "\n"; a
-- blank line dispatches; comments (":...") and unknown fields are
-- skipped; an event with no data is not dispatched; `id` persists for the
-- following events (the last event id); "retry" sets `parser.retry`.
-- An incomplete event at the end of the stream is discarded.
--
--   local sse = require "sse"
--   local p = sse.new()
--   sg.http.request{ url = ..., on_chunk = function(piece)
--       for _, ev in ipairs(p:feed(piece)) do
--           -- ev.event ("message" unless named), ev.data, ev.id
--       end
--   end }

local find = string.find
local sub = string.sub
local byte = string.byte
local concat = table.concat
local tonumber = tonumber
local setmetatable = setmetatable


local CR = 13
local LF = 10


local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }


--- Creates a parser: `buf` holds the unfinished line, `data` the data
--- lines of the event being built.
function _M.new()
    return setmetatable({
        buf = "",
        data = {},
        event = nil,
        id = nil,       -- last event id (persists across events)
        retry = nil,
    }, mt)
end


local function dispatch(self, out)
    local data = self.data
    local event = self.event
    self.data = {}
    self.event = nil
    if #data == 0 then
        return
    end
    out[#out + 1] = {
        event = event or "message",
        data = concat(data, "\n"),
        id = self.id,
    }
end


local function process_line(self, line, out)
    if line == "" then
        dispatch(self, out)
        return
    end
    if byte(line, 1) == 58 then -- ":" comment
        return
    end
    local field, value
    local colon = find(line, ":", 1, true)
    if colon then
        field = sub(line, 1, colon - 1)
        value = sub(line, colon + 1)
        if byte(value, 1) == 32 then
            value = sub(value, 2)
        end
    else
        field, value = line, ""
    end
    if field == "data" then
        self.data[#self.data + 1] = value
    elseif field == "event" then
        self.event = value
    elseif field == "id" then
        if not find(value, "\0", 1, true) then
            self.id = value
        end
    elseif field == "retry" then
        local n = tonumber(value)
        if n and value:match("^%d+$") then
            self.retry = n
        end
    end
end


--- Feeds one piece; returns the list of events it completed (maybe empty).
--- A CR at the very end of a piece waits for the next one, which may start
--- with the LF of the same CRLF.
function _M:feed(piece)
    local buf = self.buf .. (piece or "")
    local out = {}
    local pos, len = 1, #buf
    while pos <= len do
        local i = find(buf, "[\r\n]", pos)
        if not i then
            break
        end
        local stop = i
        if byte(buf, i) == CR then
            if i == len then
                break
            end
            if byte(buf, i + 1) == LF then
                stop = i + 1
            end
        end
        process_line(self, sub(buf, pos, i - 1), out)
        pos = stop + 1
    end
    self.buf = sub(buf, pos)
    return out
end


return _M
