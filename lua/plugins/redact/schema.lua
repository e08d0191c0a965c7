-- Config of the redact plugin (docs/plugins.md).

local function valid_pattern(p)
    local ok, err = pcall(string.find, "", p)
    if not ok then
        return nil, "invalid Lua pattern: " .. tostring(err):gsub("^.-: ", "")
    end
    if err then
        return nil, "it matches the empty string"
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
