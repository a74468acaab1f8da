"""A TCP proxy that delays every chunk it forwards, in both directions, to
measure the collector against a store with network latency (no `tc netem`
here). Usage: python3 scripts/latency_proxy.py LISTEN_PORT TARGET_PORT DELAY_S
(both on 127.0.0.1); then point AWS_ENDPOINT_URL at LISTEN_PORT.
See docs/COLLECTOR.md, "Known limits"."""
import asyncio, sys
LISTEN, TARGET, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
async def pipe(r, w):
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            await asyncio.sleep(DELAY)
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def handle(cr, cw):
    sr, sw = await asyncio.open_connection("127.0.0.1", TARGET)
    await asyncio.gather(pipe(cr, sw), pipe(sr, cw))
async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with s:
        await s.serve_forever()
asyncio.run(main())
