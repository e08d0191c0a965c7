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


-- local part @ domain labels . top-level domain of 2+ letters
local EMAIL = "[%w%.%%%+%-_]+@[%w%-]+[%w%.%-]*%.%a%a+"


local _M = {
    PRIORITY = 500,
    VERSION = "0.1.0",
    EMAIL = EMAIL,
}


local function literal(replacement)
    return (gsub(replacement, "%%", "%%%%"))
end


--- The masked text: e-mails first, then each pattern in order.
function _M.mask(conf, text)
    local rep = literal(conf.replacement)
    if conf.emails then
        text = gsub(text, EMAIL, rep)
    end
    local patterns = conf.patterns
    for i = 1, #patterns do
        text = gsub(text, patterns[i], rep)
    end
    return text
end


function _M.on_chunk(conf, chunk)
    local content = chunk.content
    if content then
        chunk.content = _M.mask(conf, content)
    end
    chunk.chunk = nil
end


return _M
