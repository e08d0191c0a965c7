-- streamgate configuration: a Lua script that returns one table.
--
-- Every key is shown with its built-in default, so loading this file changes
-- nothing. Unknown keys are errors (they are almost always typos). Values set
-- here are overridden by environment variables (named in brackets below);
-- an empty environment variable counts as unset. docs/configuration.md has
-- the full reference with validation rules.
--
-- Only the base, string, table, math and os libraries are available, so
-- os.getenv("X") works for values that have no built-in override.

return {
    env = "development",       -- "development" | "production" [STREAMGATE_ENV]
    listen = "0.0.0.0",        -- listen address
    port = 8080,               -- 1-65535 [PORT]
    -- node_id = "web-1",      -- default "<hostname>-<pid>" [NODE_ID]
    upstream = "demo",         -- answer source: "demo" | "ai_service"

    -- Redis is off unless a url or a host is set (here or by environment).
    -- redis.url and redis.host are mutually exclusive; a url supplies host,
    -- port, username, password and db. Same as REDIS_URL=redis://...
    redis = {
        -- url = "redis://:password@127.0.0.1:6379/0", -- [REDIS_URL]
        -- host = "127.0.0.1",  -- [REDIS_HOST]
        port = 6379,            -- 1-65535 [REDIS_PORT]
        -- password = "...",    -- [REDIS_PASSWORD]; overrides the url's
        -- username = "...",    -- ACL user; default user when unset
        db = 0,                 -- database number, >= 0
        connect_timeout = 2,    -- seconds, > 0
        command_timeout = 5,    -- seconds, > 0
        reconnect_min_delay = 0.1, -- seconds, > 0; first reconnect backoff
        reconnect_max_delay = 5,   -- seconds, >= reconnect_min_delay
    },

    auth = {
        dev_mode = true,        -- off in production unless
                                -- STREAMGATE_DEV_MODE=1 [STREAMGATE_DEV_MODE]
        -- jwt_secret = "...",  -- [JWT_SECRET]; required (>= 32 bytes) in
                                -- production, dev mode falls back to
                                -- "streamgate-dev-secret-change-me"
        jwt_algorithm = "HS256", -- "HS256" | "HS384" | "HS512" [JWT_ALGORITHM]
        leeway = 30,            -- seconds of clock skew allowed, >= 0
        -- issuer = "...",      -- required "iss"; not checked when unset
        -- audience = "...",    -- required "aud"; not checked when unset
        token_ttl = 3600,       -- seconds, >= 1; lifetime of issued tokens
    },

    limits = {
        max_frame_bytes = 65536,    -- largest inbound WebSocket message
        max_body_bytes = 1048576,   -- largest HTTP request body
        max_connections = 10000,    -- concurrent connections, >= 1
    },

    stream = {
        max_pending_chunks = 1000,      -- per-connection send queue, >= 1
        max_pending_bytes = 4194304,    -- per-connection queued bytes, >= 1
        history_ttl = 86400,            -- seconds a session's history lives
        recovery_ttl = 600,             -- seconds chunk log + offsets live
        log_max_len = 10000,            -- chunk log entries kept per session
        max_message_bytes = 1048576,    -- largest producer message / question
        linger = 30,                    -- seconds an in-flight answer stays
                                        -- subscribed after its last client
    },

    http = {
        cors_origins = "*",     -- Access-Control-Allow-Origin [CORS_ORIGINS]
        static_dir = "public",  -- static files [STREAMGATE_STATIC_DIR]
    },

    lua = {
        path = "lua",               -- script directory [STREAMGATE_LUA_PATH]
        watch = false,              -- reload on file changes [STREAMGATE_LUA_WATCH]
        fast_path = false,          -- answer exact ping/heartbeat in C
        hook_timeout = 0.5,         -- seconds per hook resume; 0 = no budget
                                    -- (and the JIT stays on)
        memory_limit = 256,         -- MiB per Lua state; 0 = no limit
    },

    admin = {
        -- token = "...",           -- /admin/ routes need it [ADMIN_TOKEN];
                                    -- unset: loopback peers only
    },

    demo = {
        words_per_second = 30,      -- (0, 10000] [DEMO_WORDS_PER_SECOND]
    },

    -- upstream = "ai_service": /api/chat, /api/cancel, /api/history and
    -- /api/ai-health proxy to the original Python AI service, which
    -- publishes the answers on Redis (so Redis mode is needed). The host
    -- must be an IPv4 literal or localhost (names are not resolved).
    ai_service = {
        url = "http://127.0.0.1:8000", -- http://HOST[:port][/path]
                                       -- [AI_SERVICE_URL]
        timeout = 30,                  -- seconds per request, (0, 3600]
    },

    log = {
        level = "info",     -- "debug" | "info" | "warn" | "error" [LOG_LEVEL]
        format = "text",    -- "text" | "json" [LOG_FORMAT]
    },

    -- Plugins (lua/plugins/NAME/, docs/plugins.md). A listed plugin is
    -- enabled unless enabled = false; its config is validated at start-up
    -- and on reload even when disabled. Shown with their defaults:
    -- plugins = {
    --     ["rate-limiting"] = { enabled = true, config = {
    --         frames_per_second = 20, -- inbound frames per second, >= 1
    --         -- frames_burst = 40,   -- frames per burst window, >= rate
    --         chat_per_minute = 10,   -- POST /api/chat per minute; 0 = off
    --         per = "user",           -- "user" | "ip" | "both"
    --         fault_tolerant = true,  -- Redis down: let traffic through
    --         max_keys = 10000,       -- embedded mode: keys tracked
    --     } },
    --     redact = { enabled = true, config = {
    --         emails = true,          -- mask e-mail addresses
    --         patterns = {},          -- Lua patterns, e.g. "%d%d%d%-%d%d%d%d"
    --         replacement = "[redacted]",
    --     } },
    --     presence = { enabled = true, config = {
    --         broadcast = true,       -- joins/leaves to the session's sockets
    --         max_users = 100,        -- most users listed per answer
    --         ttl = 3600,             -- redis mode: seconds the hash lives
    --     } },
    -- },
}
