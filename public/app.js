/* streamgate demo chat page.
 *
 * One WebSocket per tab to /ws/chat (no subprotocol); questions and cancels
 * go over REST (POST /api/chat, POST /api/cancel). Every bubble is keyed by
 * message_id and replaced with the cumulative `content` of each frame; an
 * assistant bubble is "streaming" until a frame with is_complete:true.
 * Server data is only ever written with textContent.
 * Protocol: docs/protocol.md sections 1, 2 and 4. */
'use strict';

(function () {
    const SESSION_KEY = 'chatSessionId';
    const USER_ID = 'demo_user';
    const TOKEN = 'dev-token';
    const PING_INTERVAL_MS = 30000;
    const RECONNECT_MIN_MS = 500;
    const RECONNECT_MAX_MS = 15000;

    const el = {
        status: document.getElementById('status'),
        sessionId: document.getElementById('session-id'),
        newSession: document.getElementById('new-session'),
        error: document.getElementById('error'),
        errorText: document.getElementById('error-text'),
        errorClose: document.getElementById('error-close'),
        messages: document.getElementById('messages'),
        empty: document.getElementById('empty'),
        composer: document.getElementById('composer'),
        question: document.getElementById('question'),
        send: document.getElementById('send'),
        cancel: document.getElementById('cancel'),
    };

    const state = {
        sessionId: null,
        ws: null,
        generation: 0,        /* bumped per socket; stale events are ignored */
        attempts: 0,          /* failed connects since the last open */
        pingTimer: null,
        reconnectTimer: null,
        bubbles: new Map(),   /* message_id -> bubble element */
        pending: new Map(),   /* temp_<ms> id -> question text (optimistic) */
        cancelling: false,
    };

    /* ---- session id ------------------------------------------------- */

    function storageGet(key) {
        try {
            return window.localStorage.getItem(key);
        } catch (e) {
            return null;
        }
    }

    function storageSet(key, value) {
        try {
            window.localStorage.setItem(key, value);
        } catch (e) {
            /* private mode: the id lives for this page only */
        }
    }

    function loadSessionId() {
        let sid = storageGet(SESSION_KEY);
        if (!sid) {
            sid = 'session_' + Date.now();
            storageSet(SESSION_KEY, sid);
        }
        return sid;
    }

    /* ---- status and errors ----------------------------------------- */

    function setStatus(stateName, text) {
        el.status.dataset.state = stateName;
        el.status.textContent = text;
    }

    function showError(text) {
        el.errorText.textContent = text;
        el.error.hidden = false;
    }

    function hideError() {
        el.error.hidden = true;
        el.errorText.textContent = '';
    }

    /* ---- bubbles ---------------------------------------------------- */

    function createBubble(id, role) {
        const bubble = document.createElement('div');
        bubble.className = 'msg';
        bubble.dataset.role = role;
        bubble.dataset.messageId = id;
        bubble.dataset.complete = 'false';
        const label = document.createElement('div');
        label.className = 'msg-role';
        label.textContent = role === 'user' ? 'You' : 'Assistant';
        const text = document.createElement('div');
        text.className = 'msg-text';
        bubble.append(label, text);
        el.messages.appendChild(bubble);
        el.empty.hidden = true;
        state.bubbles.set(id, bubble);
        return bubble;
    }

    function bubbleText(bubble) {
        return bubble.querySelector('.msg-text');
    }

    function setTimestamp(bubble, ms) {
        if (typeof ms === 'number' && isFinite(ms)) {
            bubble.title = new Date(ms).toLocaleString();
        }
    }

    /* Gives the optimistic bubble `tempId` its real id. If a bubble with
     * `realId` already exists (history or a live frame came first), the
     * optimistic copy is removed so the question shows once. */
    function adoptUserBubble(tempId, realId) {
        state.pending.delete(tempId);
        const temp = state.bubbles.get(tempId);
        if (!temp) {
            return;
        }
        state.bubbles.delete(tempId);
        delete temp.dataset.pending;
        const existing = state.bubbles.get(realId);
        if (existing && existing !== temp) {
            temp.remove();
            return;
        }
        temp.dataset.messageId = realId;
        state.bubbles.set(realId, temp);
    }

    /* A user message we have not seen by id may be our own optimistic copy
     * whose POST has not answered yet: match it by text. */
    function findPendingTwin(content) {
        for (const [tempId, text] of state.pending) {
            if (text === content) {
                return tempId;
            }
        }
        return null;
    }

    /* Applies one ChatMessage (history entry or `message` frame). */
    function upsertMessage(m) {
        if (!m || typeof m !== 'object' || typeof m.message_id !== 'string' ||
            typeof m.content !== 'string') {
            return;
        }
        const role = m.role === 'user' ? 'user' : 'assistant';
        const complete = role === 'user' || m.is_complete === true;
        let bubble = state.bubbles.get(m.message_id);
        if (!bubble && role === 'user') {
            const twin = findPendingTwin(m.content);
            if (twin) {
                adoptUserBubble(twin, m.message_id);
                bubble = state.bubbles.get(m.message_id);
            }
        }
        if (bubble) {
            if (bubble.dataset.complete === 'true' && !complete) {
                return;     /* never reopen a finished answer */
            }
        } else {
            bubble = createBubble(m.message_id, role);
        }
        bubbleText(bubble).textContent = m.content;
        bubble.dataset.complete = complete ? 'true' : 'false';
        setTimestamp(bubble, m.timestamp);
        updateCancelButton();
        scrollToEnd();
    }

    function clearMessages() {
        for (const bubble of state.bubbles.values()) {
            bubble.remove();
        }
        state.bubbles.clear();
        state.pending.clear();
        el.empty.hidden = false;
        updateCancelButton();
    }

    function streamingAnswer() {
        let last = null;
        for (const bubble of state.bubbles.values()) {
            if (bubble.dataset.role === 'assistant' &&
                bubble.dataset.complete === 'false') {
                last = bubble;
            }
        }
        return last;
    }

    function updateCancelButton() {
        el.cancel.disabled = state.cancelling || streamingAnswer() === null;
    }

    function scrollToEnd() {
        el.messages.scrollTop = el.messages.scrollHeight;
    }

    /* ---- WebSocket -------------------------------------------------- */

    function socketUrl() {
        const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
        return proto + '//' + window.location.host + '/ws/chat' +
            '?session_id=' + encodeURIComponent(state.sessionId) +
            '&user_id=' + encodeURIComponent(USER_ID) +
            '&token=' + encodeURIComponent(TOKEN);
    }

    function connect() {
        stopTimers();
        const gen = ++state.generation;
        setStatus('connecting', 'connecting…');
        let ws;
        try {
            ws = new WebSocket(socketUrl());
        } catch (e) {
            showError('Cannot open WebSocket: ' + e.message);
            scheduleReconnect();
            return;
        }
        state.ws = ws;
        ws.onopen = () => {
            if (gen !== state.generation) return;
            state.attempts = 0;
            setStatus('open', 'connected');
            startPing();
        };
        ws.onmessage = (ev) => {
            if (gen !== state.generation) return;
            if (typeof ev.data === 'string') handleFrame(ev.data);
        };
        ws.onclose = (ev) => {
            if (gen !== state.generation) return;
            state.ws = null;
            stopTimers();
            scheduleReconnect(ev.code);
        };
        ws.onerror = () => { /* a close event follows */ };
    }

    /* Closes the current socket without triggering a reconnect. */
    function disconnect() {
        state.generation++;
        stopTimers();
        if (state.ws) {
            state.ws.close(1000, 'client closing');
            state.ws = null;
        }
    }

    function scheduleReconnect(code) {
        const base = Math.min(RECONNECT_MAX_MS,
                              RECONNECT_MIN_MS * Math.pow(2, state.attempts));
        /* 1001 = server draining: go at once (another node will take us) */
        const delay = code === 1001 ? 0 :
            Math.round(base * (0.5 + Math.random() * 0.5));
        state.attempts++;
        const secs = Math.max(1, Math.round(delay / 1000));
        setStatus('closed', 'disconnected, retrying in ' + secs + ' s');
        state.reconnectTimer = setTimeout(connect, delay);
    }

    function startPing() {
        state.pingTimer = setInterval(() => {
            if (state.ws && state.ws.readyState === WebSocket.OPEN) {
                state.ws.send(JSON.stringify({ type: 'ping' }));
            }
        }, PING_INTERVAL_MS);
    }

    function stopTimers() {
        clearInterval(state.pingTimer);
        clearTimeout(state.reconnectTimer);
        state.pingTimer = null;
        state.reconnectTimer = null;
    }

    function handleFrame(text) {
        if (text === 'pong') {
            return;
        }
        let frame;
        try {
            frame = JSON.parse(text);
        } catch (e) {
            return;
        }
        if (!frame || typeof frame !== 'object') {
            return;
        }
        switch (frame.type) {
        case 'welcome':
            el.status.dataset.welcome = 'true';
            break;
        case 'history':
            if (Array.isArray(frame.messages)) {
                frame.messages.forEach(upsertMessage);
            }
            el.messages.dataset.history = 'true';
            break;
        case 'message':
            upsertMessage(frame.data);
            break;
        case 'error':
            showError(String(frame.error || 'unknown server error'));
            break;
        default:
            break;  /* pong, heartbeat_ack, recovery_status, plugins */
        }
    }

    /* ---- REST ------------------------------------------------------- */

    async function postJson(path, body) {
        const res = await fetch(path, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(body),
        });
        let data = null;
        try {
            data = await res.json();
        } catch (e) {
            data = null;
        }
        if (!res.ok) {
            let why = 'HTTP ' + res.status;
            if (data && data.error) why += ': ' + data.error;
            if (data && data.detail) why += ' (' + data.detail + ')';
            throw new Error(why);
        }
        return data;
    }

    async function sendQuestion(ev) {
        ev.preventDefault();
        const text = el.question.value.trim();
        if (!text || el.send.disabled) {
            return;
        }
        const sid = state.sessionId;
        el.question.value = '';
        const tempId = 'temp_' + Date.now();
        const bubble = createBubble(tempId, 'user');
        bubbleText(bubble).textContent = text;
        bubble.dataset.complete = 'true';
        bubble.dataset.pending = 'true';
        state.pending.set(tempId, text);
        scrollToEnd();
        el.send.disabled = true;
        try {
            const data = await postJson('/api/chat', {
                session_id: sid, message: text, user_id: USER_ID,
            });
            if (data && typeof data.message_id === 'string') {
                adoptUserBubble(tempId, data.message_id);
            } else {
                state.pending.delete(tempId);
                delete bubble.dataset.pending;
            }
        } catch (e) {
            state.pending.delete(tempId);
            delete bubble.dataset.pending;
            bubble.dataset.failed = 'true';
            showError('Sending failed: ' + e.message);
        } finally {
            el.send.disabled = false;
            el.question.focus();
        }
    }

    async function cancelAnswer() {
        const bubble = streamingAnswer();
        if (!bubble) {
            return;
        }
        state.cancelling = true;
        updateCancelButton();
        try {
            await postJson('/api/cancel', {
                session_id: state.sessionId,
                message_id: bubble.dataset.messageId,
            });
        } catch (e) {
            showError('Cancel failed: ' + e.message);
        } finally {
            state.cancelling = false;
            updateCancelButton();
        }
    }

    function newSession() {
        disconnect();
        clearMessages();
        hideError();
        delete el.messages.dataset.history;
        state.sessionId = 'session_' + Date.now();
        storageSet(SESSION_KEY, state.sessionId);
        el.sessionId.textContent = state.sessionId;
        state.attempts = 0;
        connect();
        el.question.focus();
    }

    /* ---- wiring ----------------------------------------------------- */

    el.composer.addEventListener('submit', sendQuestion);
    el.question.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
            ev.preventDefault();
            el.composer.requestSubmit();
        }
    });
    el.cancel.addEventListener('click', cancelAnswer);
    el.newSession.addEventListener('click', newSession);
    el.errorClose.addEventListener('click', hideError);
    window.addEventListener('online', () => {
        if (!state.ws) {
            state.attempts = 0;
            connect();
        }
    });

    state.sessionId = loadSessionId();
    el.sessionId.textContent = state.sessionId;
    connect();
})();
