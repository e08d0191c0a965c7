-- A hostile site plugin for test_adversarial2.py: every frame type misuses
-- the host in one way.
local sg = sg
local _M = { PRIORITY = 1, VERSION = "0.0.1", frame_types = {} }
local F = _M.frame_types

local function spin() while true do end end
local function pcall_spin() while true do pcall(spin) end end

F.spin = function() spin() end
F.pcall_spin = function() pcall_spin() end
-- the budget hook cannot yield across the C frame of table.sort/gsub: its
-- "attempt to yield across C-call boundary" error is caught by pcall
F.sort_spin = function()
    table.sort({ 3, 2, 1 }, function(a, b) pcall_spin() return a < b end)
end
F.gsub_spin = function() string.gsub("x", "x", function() pcall_spin() end) end
F.alloc = function()
    local t = {}
    while true do t[#t + 1] = string.rep("x", 1e6) .. #t end
end
F.sort_alloc = function()
    table.sort({ 3, 2, 1 }, function(a, b)
        local t = {}
        while true do pcall(function()
            t[#t + 1] = string.rep("y", 1e6) .. #t end) end
    end)
end
F.recurse = function() local function f() return 1 + f() end return f() end
F.err_table = function() error({ code = 1 }) end
F.err_nil = function() error(nil) end
F.err_tostring = function()
    error(setmetatable({}, { __tostring = function() spin() end }))
end
F.ok = function(conf, conn) sg.send(conn, '{"type":"ok"}') end

_M.on_chunk = function(conf, chunk)
    if chunk.content:find("SPIN", 1, true) then spin() end
    if chunk.content:find("SORTSPIN", 1, true) then
        table.sort({ 3, 2, 1 }, function(a, b) pcall_spin() return a < b end)
    end
end

-- {"type":"http","url":..,"timeout":..,"max_body":..,"stream":bool,
--  "slow":bool}: the outcome of sg.http.request as a frame
F.http = function(conf, conn, msg)
    local got, pieces = 0, 0
    local opts = { url = msg.url, timeout = msg.timeout,
                   max_body = msg.max_body }
    if msg.stream then
        opts.on_chunk = function(piece)
            got = got + #piece
            pieces = pieces + 1
            if msg.slow then sg.sleep(0.05) end
        end
    end
    local t0 = sg.now()
    local res, err = sg.http.request(opts)
    sg.send(conn, sg.json.encode({ type = "http", ok = res ~= nil,
        err = err, status = res and res.status,
        len = res and res.body and #res.body or got, pieces = pieces,
        ms = sg.now() - t0 }))
end
return _M
