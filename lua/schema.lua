-- A small schema validator for plugin configuration (Kong's schema.lua
-- model, flattened: a schema describes the plugin's `config` table).
--
--   return {
--       fields = {
--           { frames_per_second = { type = "integer", default = 20, min = 1,
--                                   description = "..." } },
--           { per = { type = "string", default = "user",
--                     one_of = { "user", "ip", "both" } } },
--           { patterns = { type = "array", default = {},
--                          elements = { type = "string" } } },
--       },
--       validator = function(conf) return true end, -- or nil, msg
--   }
--
-- Field types: "string", "number", "integer", "boolean", "array" (with
-- `elements`, itself a field without default). Attributes: default,
-- required, min, max (inclusive), one_of, min_length (strings: bytes;
-- arrays: items), max_length, check = function(v) -> true | nil, why,
-- description. A field without a default that is absent stays nil unless
-- it is required.
--
-- validate() returns a new table (defaults filled, input untouched) or
-- nil and one message of the form
--   config.frames_per_second = -1: expected an integer >= 1
-- naming the key, the value as written and what was expected.

local type = type
local pairs = pairs
local ipairs = ipairs
local next = next
local tostring = tostring
local concat = table.concat
local sort = table.sort
local floor = math.floor


local TYPES = {
    string = true, number = true, integer = true, boolean = true,
    array = true,
}
local ATTRIBUTES = {
    type = true, default = true, required = true, min = true, max = true,
    one_of = true, min_length = true, max_length = true, check = true,
    description = true, elements = true,
}


local _M = {
    _VERSION = "0.1.0",
}


-- How a value reads in a message: 5, 'text', true, nil, a table.
local function show(v)
    local t = type(v)
    if t == "string" then
        return "'" .. v .. "'"
    end
    if t == "number" or t == "boolean" or t == "nil" then
        return tostring(v)
    end
    return "a " .. t
end
_M.show = show


local function article(word)
    return (word:find("^[aeiou]") and "an " or "a ") .. word
end


local function bounds_text(f, unit)
    if f.min and f.max then
        return " between " .. f.min .. " and " .. f.max .. (unit or "")
    end
    if f.min then
        return " >= " .. f.min .. (unit or "")
    end
    if f.max then
        return " <= " .. f.max .. (unit or "")
    end
    return ""
end


local function length_text(f, what)
    if f.min_length and f.max_length then
        return " of " .. f.min_length .. " to " .. f.max_length .. " " .. what
    end
    if f.min_length then
        return " of at least " .. f.min_length .. " " .. what
    end
    if f.max_length then
        return " of at most " .. f.max_length .. " " .. what
    end
    return ""
end


--- What a field expects, in words: "an integer >= 1", "one of 'user',
-- 'ip', 'both'", "an array of strings". Used by every message so that a
-- type error also tells the bounds.
local function expectation(f)
    if f.one_of then
        local shown = {}
        for i, v in ipairs(f.one_of) do
            shown[i] = show(v)
        end
        return "one of " .. concat(shown, ", ")
    end

    local t = f.type
    if t == "number" or t == "integer" then
        return article(t) .. bounds_text(f)
    end

    if t == "string" then
        if f.min_length == 1 and not f.max_length then
            return "a non-empty string"
        end
        return "a string" .. length_text(f, "bytes")
    end

    if t == "array" then
        local head = "an array" .. length_text(f, "items")
        local e = expectation(f.elements)
        if f.elements.one_of then
            return head .. " whose items are " .. e
        end
        e = e:gsub("^an? ", ""):gsub("^non%-empty string", "string")
        return head .. " of " .. e:gsub("^(%a+)", "%1s", 1)
    end

    return article(t)
end
_M.expectation = expectation


local function is_array(v)
    local n = #v
    for k in pairs(v) do
        if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then
            return false
        end
    end
    return true
end


local function type_ok(f, v)
    local t = f.type
    if t == "integer" then
        return type(v) == "number" and v == floor(v)
            and v > -math.huge and v < math.huge
    end

    if t == "number" then
        return type(v) == "number" and v == v
    end

    if t == "array" then
        return type(v) == "table" and is_array(v)
    end

    return type(v) == t
end


local function in_one_of(f, v)
    for _, allowed in ipairs(f.one_of) do
        if v == allowed then
            return true
        end
    end
    return false
end


local function size_ok(f, n)
    return (not f.min_length or n >= f.min_length)
        and (not f.max_length or n <= f.max_length)
end


-- Checks one value against field `f`; returns true or nil, message.
local function check_value(f, v, key)
    local function fail(why)
        return nil, key .. " = " .. show(v) .. ": expected "
            .. expectation(f) .. (why and " (" .. why .. ")" or "")
    end

    if not type_ok(f, v) then
        return fail()
    end

    if f.one_of and not in_one_of(f, v) then
        return fail()
    end

    if (f.min and v < f.min) or (f.max and v > f.max) then
        return fail()
    end

    if (f.type == "string" or f.type == "array") and not size_ok(f, #v) then
        return fail()
    end

    if f.type == "array" then
        for i = 1, #v do
            local ok, err = check_value(f.elements, v[i],
                                        key .. "[" .. i .. "]")
            if not ok then
                return nil, err
            end
        end
    end

    if f.check then
        local ok, why = f.check(v)
        if not ok then
            return fail(why)
        end
    end

    return true
end


local function copy(v)
    if type(v) ~= "table" then
        return v
    end
    local out = {}
    for k, x in pairs(v) do
        out[k] = copy(x)
    end
    return out
end


local function check_field_def(name, f)
    if type(f) ~= "table" or not TYPES[f.type] then
        error("bad schema: field '" .. name .. "' needs a type (one of "
              .. "string, number, integer, boolean, array)", 3)
    end
    for attr in pairs(f) do
        if not ATTRIBUTES[attr] then
            error("bad schema: field '" .. name .. "' has an unknown "
                  .. "attribute '" .. tostring(attr) .. "'", 3)
        end
    end
    if f.type == "array" then
        check_field_def(name .. "[]", f.elements)
    end
end


--- The fields of a schema as an ordered list of { name, def }; raises on
-- a malformed schema (a bug in the plugin, not in the config).
local function field_list(schema)
    if type(schema) ~= "table" or type(schema.fields) ~= "table" then
        error("bad schema: expected a table with a `fields` array", 3)
    end
    local list = {}
    for i, entry in ipairs(schema.fields) do
        local name, f = next(entry)
        if type(name) ~= "string" or next(entry, name) ~= nil then
            error("bad schema: fields[" .. i .. "] must hold exactly one "
                  .. "{ name = definition }", 3)
        end
        check_field_def(name, f)
        list[i] = { name, f }
    end
    return list
end


local function unknown_field(list, input, prefix)
    local known = {}
    for _, nf in ipairs(list) do
        known[nf[1]] = true
    end

    local unknown = {}
    for k in pairs(input) do
        if not known[k] then
            unknown[#unknown + 1] = tostring(k)
        end
    end
    if #unknown == 0 then
        return nil
    end

    sort(unknown)
    local names = {}
    for i, nf in ipairs(list) do
        names[i] = nf[1]
    end
    sort(names)
    local k = unknown[1]
    return prefix .. k .. " = " .. show(input[k]) .. ": unknown field "
        .. "(expected one of: " .. concat(names, ", ") .. ")"
end


--- Validates `input` (a table or nil) against `schema`. Returns a new
-- config table with defaults filled in, or nil and a message. Keys in
-- messages are prefixed with `prefix` (default "config.").
function _M.validate(schema, input, prefix)
    prefix = prefix or "config."
    local list = field_list(schema)

    if input == nil then
        input = {}
    end
    if type(input) ~= "table" then
        return nil, prefix:gsub("%.$", "") .. " = " .. show(input)
            .. ": expected a table"
    end

    local err = unknown_field(list, input, prefix)
    if err then
        return nil, err
    end

    local conf = {}
    for _, nf in ipairs(list) do
        local name, f = nf[1], nf[2]
        local v = input[name]
        if v == nil then
            v = copy(f.default)
        end
        if v == nil and f.required then
            return nil, prefix .. name .. " = nil: expected "
                .. expectation(f) .. " (required)"
        end
        if v ~= nil then
            local ok, msg = check_value(f, v, prefix .. name)
            if not ok then
                return nil, msg
            end
        end
        conf[name] = v
    end

    if schema.validator then
        local ok, msg = schema.validator(conf)
        if not ok then
            return nil, msg
        end
    end

    return conf
end


return _M
