-- The demo upstream: answers with canned English texts, word by word, like
-- the original Python AI service (notes/original-system.md §4.2). Every
-- chunk goes through sg.append, the same idempotent append path as the
-- Python service's messages, so clients cannot tell the producers apart.
-- A cancel is noticed before the next word, never after the final.
--
-- start() stores the user message in history and returns its id; the
-- answer streams from an sg.timer coroutine. Active answers are kept per
-- session so that cancel() can answer like the Python service.

local sg = sg
local json = sg.json
local null = json.null


local CANCELLED_SUFFIX = "\n\n[Cancelled]"
local ANSWERS = {
    [0] = "Thanks for your message. This is the streamgate demo upstream, "
        .. "a built-in responder that needs no AI service at all. It sends "
        .. "a canned answer one word at a time so that you can watch a "
        .. "response stream into the page. Every word travels as a chat "
        .. "message whose content holds the whole text so far, exactly as "
        .. "the original Python service produced it. When the last word "
        .. "has been sent, a final message marks the answer complete and "
        .. "it is stored in the session history.",
    [1] = "Streaming works like this: the upstream produces the answer as a "
        .. "series of small chunks, and the gateway appends each chunk to "
        .. "the session stream before fanning it out to every connected "
        .. "socket of that session. Each chunk carries the full text so "
        .. "far, so a client that misses a frame loses nothing, because the "
        .. "next frame repairs it. A slow reader never slows the others: "
        .. "its queued partials are coalesced, and the final answer is "
        .. "always delivered last.",
    [2] = "Your history survives a reload. The gateway keeps every user "
        .. "message and every finished answer in a per-session list that "
        .. "expires after a day. When the page reconnects it first receives "
        .. "a welcome frame, then the stored history, then the latest state "
        .. "of any answer that is still being written, and finally the live "
        .. "frames. The subscription is confirmed before the history is "
        .. "read, so nothing published in between is lost or shown twice.",
    [3] = "Redis connects the nodes. In redis mode every node subscribes to "
        .. "the channel of each session it serves, and every chunk is "
        .. "appended to a bounded log before it is published. A node that "
        .. "joins late, or a client that moves to another node, reads what "
        .. "it missed from that log and then follows the live channel. "
        .. "Pub/sub alone would drop messages during a reconnect; the log "
        .. "is what makes recovery exact.",
    [4] = "Good question. The short answer is that the gateway separates "
        .. "what happens from how fast it happens. The C core owns sockets, "
        .. "buffers, timers and the connection to Redis, and it never "
        .. "blocks. Lua scripts decide the policy: who may connect, how "
        .. "frames are routed, which upstream answers, and what events are "
        .. "emitted. A script can wait for Redis or sleep without blocking "
        .. "anything, because each hook runs in its own coroutine.",
    [5] = "The workflow has four steps. First, the browser opens a socket "
        .. "for its session and receives the history. Second, it posts the "
        .. "question to the chat endpoint, which stores the user message "
        .. "and hands it to the upstream. Third, the upstream streams the "
        .. "answer as chunks that the gateway logs and fans out to every "
        .. "socket of the session. Fourth, the final chunk completes the "
        .. "answer, which is stored before it is announced, so a reload at "
        .. "any moment still shows it exactly once.",
}
local TOPICS = {
    { 1, { "streaming" } },
    { 2, { "reload", "history", "persistence" } },
    { 3, { "redis", "pubsub" } },
    { 5, { "workflow", "flow", "process" } },
    { 4, { "how", "what", "why", "when", "where" } },
}


local _M = {
    _VERSION = "0.1.0",
    ANSWERS = ANSWERS,
}

-- session_id -> { answers = { [message_id] = answer }, latest = id, n = k }
local active = {}
_M.active = active


-- Picks the canned answer by keyword, in the Python service's order.
function _M.pick_answer(message)
    local text = message:lower()
    for i = 1, #TOPICS do
        local topic = TOPICS[i]
        local words = topic[2]
        for j = 1, #words do
            if text:find(words[j], 1, true) then
                return ANSWERS[topic[1]]
            end
        end
    end
    return ANSWERS[0]
end


-- A ChatMessage with all eight keys (chunk null when nil).
local function chat_message(id, sid, user_id, role, content, chunk, done)
    if chunk == nil then
        chunk = null
    end
    return json.encode({
        message_id = id,
        session_id = sid,
        user_id = user_id,
        role = role,
        content = content,
        chunk = chunk,
        timestamp = sg.now(),
        is_complete = done,
    })
end


local function register(answer)
    local s = active[answer.session_id]
    if not s then
        s = { answers = {}, n = 0 }
        active[answer.session_id] = s
    end
    s.answers[answer.id] = answer
    s.latest = answer.id
    s.n = s.n + 1
end


local function unregister(answer)
    local s = active[answer.session_id]
    s.answers[answer.id] = nil
    s.n = s.n - 1
    if s.n == 0 then
        active[answer.session_id] = nil

    elseif s.latest == answer.id then
        s.latest = next(s.answers)
    end
end


--- Appends the final to the stream, then stores it in history (the
-- Python service's order). A client joining in between finds it in the
-- stream snapshots but not in history and gets it as catch-up; storing
-- first would let it see the final in history and then the in-flight
-- partial from the snapshot (a partial after the final: defect 7).
local function finish(answer, content)
    local sid = answer.session_id
    local final = chat_message(answer.id, sid, answer.user_id, "assistant",
                               content, nil, true)
    local off, err = sg.append(sid, final)
    if not off then
        sg.log("warn", "demo: failed to append the final answer of ", sid,
               ": ", err)
    end

    local ok
    ok, err = sg.history.append(sid, final)
    if not ok then
        sg.log("error", "demo: failed to store the final answer of ", sid,
               ": ", err)
    end
    unregister(answer)
end


local function split_words(text)
    local words, n = {}, 0
    for w in text:gmatch("%S+") do
        n = n + 1
        words[n] = w
    end
    return words, n
end


-- Runs in its own coroutine (sg.timer): one partial per word, then the
-- final. The cancel flag is checked after every pause, before publishing.
local function stream(answer)
    local words, n = split_words(answer.text)
    local wps = sg.config.demo.words_per_second or 30
    local delay = wps > 0 and 1 / wps or 0
    local sid, content = answer.session_id, ""

    for i = 1, n do
        sg.sleep(delay)
        if answer.cancelled then
            return finish(answer, content .. CANCELLED_SUFFIX)
        end

        local chunk = i < n and words[i] .. " " or words[i]
        content = content .. chunk
        local off, err = sg.append(sid, chat_message(answer.id, sid,
            answer.user_id, "assistant", content, chunk, false))
        if not off then
            sg.log("warn", "demo: failed to append a chunk of ", sid, ": ",
                   err)
        end
    end

    return finish(answer, content)
end


-- start(session_id, user_id, message) -> user message id | nil, err
function _M.start(session_id, user_id, message)
    local user_msg_id = sg.uuid()
    local user_msg = chat_message(user_msg_id, session_id, user_id, "user",
                                  message, nil, true)
    -- Only stored: live user messages are never forwarded (defect 19).
    local ok, err = sg.history.append(session_id, user_msg)
    if not ok then
        return nil, "failed to store the message: " .. err
    end

    local answer = {
        id = sg.uuid(),
        session_id = session_id,
        user_id = user_id,
        text = _M.pick_answer(message),
        cancelled = false,
    }
    register(answer)
    sg.timer(0, stream, answer)
    return user_msg_id
end


-- cancel(session_id, message_id) -> the Python service's JSON reply
function _M.cancel(session_id, message_id)
    local s = active[session_id]
    local answer = s and s.answers[message_id]
    if answer then
        answer.cancelled = true
        return {
            status = "cancelled",
            message = "Streaming cancelled successfully",
            session_id = session_id,
            message_id = message_id,
        }
    end

    if s then
        return {
            status = "not_found",
            message = "Message ID mismatch - wrong message ID provided",
            detail = "Active message ID: " .. s.latest .. ", requested: "
                .. message_id,
        }
    end

    return {
        status = "completed",
        message = "Message already completed or not found",
        session_id = session_id,
        message_id = message_id,
    }
end


function _M.health()
    return 200, { ai_service = "reachable", status = "healthy", url = "demo" }
end


return _M
