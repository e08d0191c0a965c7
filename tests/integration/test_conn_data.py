"""sg.data: per-connection values kept in C. (Their survival across a hot
reload is tested with the reload tests.)"""
import asyncio
import json
import pathlib

import sgtest
from sgtest import run

INIT = r'''
return {
  on_connect = function(req) return true, { user_id = req.user_id } end,
  on_message = function(conn, text)
    local cmd, key, value = text:match("^(%w+) (%S+) ?(.*)$")
    if cmd == "set" then
      local v = value
      if value == "num" then v = 42.5
      elseif value == "bool" then v = true
      elseif value == "tbl" then v = { a = 1, b = { "x" } }
      elseif value == "nil" then v = nil end
      local ok, err = sg.data.set(conn, key, v)
      sg.send(conn, ok and "ok" or ("err " .. err))
    elseif cmd == "get" then
      local v = sg.data.get(conn, key)
      sg.send(conn, sg.json.encode({ t = type(v), v = v }))
    elseif cmd == "big" then
      local ok, err = sg.data.set(conn, key, string.rep("x", 70000))
      sg.send(conn, ok and "ok" or ("err " .. err))
    end
  end,
}
'''


def test_sg_data_keeps_typed_values_per_connection(server, tmp_path):
    lua = tmp_path / "lua"
    lua.mkdir()
    (lua / "init.lua").write_text(INIT)
    s = server(config={"lua": {"path": str(lua)}})

    async def body():
        a, _ = await sgtest.open_session(s.port, "d1")
        b, _ = await sgtest.open_session(s.port, "d1")

        async def ask(ws, text):
            await ws.send(text)
            return await asyncio.wait_for(ws.recv(), 5)

        assert await ask(a, "set s hello") == "ok"
        assert await ask(a, "set n num") == "ok"
        assert await ask(a, "set f bool") == "ok"
        assert await ask(a, "set t tbl") == "ok"
        assert json.loads(await ask(a, "get s")) == {"t": "string",
                                                      "v": "hello"}
        assert json.loads(await ask(a, "get n")) == {"t": "number",
                                                      "v": 42.5}
        assert json.loads(await ask(a, "get f")) == {"t": "boolean",
                                                      "v": True}
        assert json.loads(await ask(a, "get t")) == {
            "t": "table", "v": {"a": 1, "b": ["x"]}}
        # another connection of the same session has its own store
        assert json.loads(await ask(b, "get s")) == {"t": "nil"}
        # nil deletes; oversize values are refused with a reason
        assert await ask(a, "set s nil") == "ok"
        assert json.loads(await ask(a, "get s")) == {"t": "nil"}
        assert await ask(a, "big k") == "err too big"
        await a.close()
        await b.close()
    run(body())
