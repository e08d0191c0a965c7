-- Config of the rate-limiting plugin (docs/plugins.md).

local function validate_burst(conf)
    local burst = conf.frames_burst
    if burst ~= nil and burst < conf.frames_per_second then
        return nil, "config.frames_burst = " .. burst .. ": expected a "
            .. "number >= config.frames_per_second (" .. conf.frames_per_second
            .. ")"
    end
    return true
end


return {
    fields = {
        { frames_per_second = {
            type = "number", default = 20, min = 1,
            description = "inbound WebSocket frames allowed per second and "
                .. "key (any frame, pings included)",
        } },
        { frames_burst = {
            type = "integer", min = 1, max = 1000000,
            description = "frames allowed within one window of "
                .. "frames_burst / frames_per_second seconds; default "
                .. "frames_per_second (a one-second window)",
        } },
        { chat_per_minute = {
            type = "integer", default = 10, min = 0, max = 1000000,
            description = "POST /api/chat requests allowed per minute and "
                .. "key; 0 turns the HTTP limit off",
        } },
        { per = {
            type = "string", default = "user",
            one_of = { "user", "ip", "both" },
            description = "what a limit is counted for: the user id, the "
                .. "client address, or both (either one over the limit "
                .. "denies)",
        } },
        { fault_tolerant = {
            type = "boolean", default = true,
            description = "when Redis fails, let traffic through (true) or "
                .. "refuse it (false); failures are logged once a minute",
        } },
        { max_keys = {
            type = "integer", default = 10000, min = 1, max = 10000000,
            description = "embedded mode: most keys tracked at once; expired "
                .. "keys are swept when it is reached, then new keys are "
                .. "let through unlimited (and logged)",
        } },
    },
    validator = validate_burst,
}
