-- redact: masks e-mail addresses and configured Lua patterns in every
-- answer chunk before it reaches the stream, so the log, every node and
-- every reader see the same masked text.
--
-- Content is cumulative and an address may arrive split across chunks
-- ("bob@exa" then "bob@example.com"), so the whole cumulative content is
-- masked every time and chunk.chunk is cleared: the core then derives the
-- delta from the masked content. Masking is a pure function of the
-- content, so several nodes ingesting the same message agree. A chunk is
-- never dropped. Caveat: a partly received address that does not match
-- yet ("bob@exa") is visible until it is completed.

local gsub = string.gsub
local find = string.find
local byte = string.byte
local sub = string.sub
local concat = table.concat


-- local part @ domain labels . top-level domain of 2+ letters
local EMAIL = "[%w%.%%%+%-_]+@[%w%-]+[%w%.%-]*%.%a%a+"
local DOMAIN_AT = "^[%w%-]+[%w%.%-]*%.%a%a+"
local LOCAL_BYTE = {}
for b = 0, 255 do
    local c = string.char(b)
    LOCAL_BYTE[b] = find(c, "[%w%.%%%+%-_]") ~= nil
end


local _M = {
    PRIORITY = 500,
    VERSION = "0.1.0",
    EMAIL = EMAIL,
}


local function literal(replacement)
    return (gsub(replacement, "%%", "%%%%"))
end


--- E-mail addresses (the EMAIL shape) replaced by `rep`, in linear time:
-- gsub(text, EMAIL) restarts at every byte of a long word without "@" and
-- is quadratic (a 25 000-character word froze the loop for seconds), so
-- the scan starts from each "@" and extends left over local-part bytes
-- (never past the previous "@") and right over the domain.
local function mask_emails(text, rep)
    local out, n, last, pos = {}, 0, 1, 1
    while true do
        local at = find(text, "@", pos, true)
        if not at then
            break
        end
        local s = at
        while s > last and LOCAL_BYTE[byte(text, s - 1)] do
            s = s - 1
        end
        local _, e = find(text, DOMAIN_AT, at + 1)
        if s < at and e then
            n = n + 1
            out[n] = sub(text, last, s - 1)
            n = n + 1
            out[n] = rep
            last = e + 1
            pos = e + 1
        else
            pos = at + 1
        end
    end
    if n == 0 then
        return text
    end
    out[n + 1] = sub(text, last)
    return concat(out)
end
_M.mask_emails = mask_emails


--- The masked text: e-mails first, then each pattern in order.
function _M.mask(conf, text)
    if conf.emails then
        text = mask_emails(text, conf.replacement)
    end
    local rep = literal(conf.replacement)
    local patterns = conf.patterns
    for i = 1, #patterns do
        text = gsub(text, patterns[i], rep)
    end
    return text
end


--- Fails closed: if masking raises (a pattern the schema check could not
-- catch), the whole content is replaced, so nothing unmasked leaks.
function _M.on_chunk(conf, chunk)
    local content = chunk.content
    if content then
        local ok, masked = pcall(_M.mask, conf, content)
        if not ok then
            sg.log("error", "redact: masking failed, content withheld: ",
                   masked)
            masked = conf.replacement
        end
        chunk.content = masked
    end
    chunk.chunk = nil
end


return _M
