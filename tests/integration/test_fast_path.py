"""lua.fast_path: exact keep-alive frames are answered in C, everything
else still goes through the Lua router."""
import asyncio

import sgtest
from sgtest import run

INIT = r'''
return {
  on_connect = function() return true end,
  on_message = function(conn, text) sg.send(conn, "lua:" .. text) end,
}
'''


def start(server, tmp_path, fast):
    lua = tmp_path / "lua"
    lua.mkdir(exist_ok=True)
    (lua / "init.lua").write_text(INIT)
    return server(config={"lua": {"path": str(lua), "fast_path": fast}})


async def ask(ws, text):
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), 5)


def test_fast_path_answers_exact_keepalives_in_c(server, tmp_path):
    s = start(server, tmp_path, True)

    async def body():
        ws, _ = await sgtest.open_session(s.port, "fp")
        assert await ask(ws, "ping") == "pong"
        assert await ask(ws, '{"type":"ping"}') == '{"type":"pong"}'
        assert await ask(ws, '{"type":"heartbeat"}') == \
            '{"type":"heartbeat_ack"}'
        # anything else, even an equivalent frame, reaches Lua
        assert await ask(ws, '{"type": "ping"}') == 'lua:{"type": "ping"}'
        assert await ask(ws, "ping ") == "lua:ping "
        await ws.close()
    run(body())


def test_without_fast_path_every_frame_reaches_lua(server, tmp_path):
    s = start(server, tmp_path, False)

    async def body():
        ws, _ = await sgtest.open_session(s.port, "fp")
        assert await ask(ws, "ping") == "lua:ping"
        assert await ask(ws, '{"type":"ping"}') == 'lua:{"type":"ping"}'
        await ws.close()
    run(body())
