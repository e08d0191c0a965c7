-- Config of the redact plugin (docs/plugins.md).

-- Lua reports a malformed pattern only when matching reaches the broken
-- part, so a pattern is tried on texts that exercise every character
-- class (and every byte that can start a pattern item), not on "".
local SAMPLES = {
    "",
    "xX0 x-_.%()[]^$*+?@\t\n\0xyz Az09 bob@example.com 2026-12-03",
}
for b = 1, 255 do
    SAMPLES[#SAMPLES + 1] = string.char(b) .. "x" .. string.char(b)
end


local function valid_pattern(p)
    for i = 1, #SAMPLES do
        local ok, s, e = pcall(string.find, SAMPLES[i], p)
        if not ok then
            return nil, "invalid Lua pattern: "
                .. tostring(s):gsub("^.-: ", "")
        end
        if s and e < s then
            return nil, "it matches the empty string"
        end
    end
    return true
end


local function something_to_redact(conf)
    if not conf.emails and #conf.patterns == 0 then
        return nil, "config.emails = false and config.patterns is empty: "
            .. "expected at least one of them (nothing would be redacted)"
    end
    return true
end


return {
    fields = {
        { emails = {
            type = "boolean", default = true,
            description = "mask e-mail addresses (local@domain.tld)",
        } },
        { patterns = {
            type = "array", default = {}, max_length = 100,
            elements = { type = "string", min_length = 1,
                         check = valid_pattern },
            description = "Lua patterns to mask, applied in order after "
                .. "the e-mail rule; none may match the empty string",
        } },
        { replacement = {
            type = "string", default = "[redacted]", max_length = 256,
            description = "the text that replaces every match (taken "
                .. "literally: % has no special meaning)",
        } },
    },
    validator = something_to_redact,
}
