-- Config of the presence plugin (docs/plugins.md).

return {
    fields = {
        { broadcast = {
            type = "boolean", default = true,
            description = "send joins and leaves to the session's other "
                .. "connections on this node",
        } },
        { max_users = {
            type = "integer", default = 100, min = 1, max = 10000,
            description = "most user ids listed in a presence answer "
                .. "(sorted; `count` always tells the total)",
        } },
        { ttl = {
            type = "integer", default = 3600, min = 10, max = 604800,
            description = "redis mode: seconds the shared presence hash "
                .. "lives without a refresh (refreshed every ttl / 3 s "
                .. "while this node has users in the session)",
        } },
    },
}
