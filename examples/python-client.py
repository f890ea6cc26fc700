#!/usr/bin/env python3
"""A client that is not ours: the original Inference API streaming example, against our server.

    inference-stream serve --port 8080 &            # or: npm run serve
    python3 examples/python-client.py ws://127.0.0.1:8080 builtin/sentiment

Needs the `websockets` package (Debian: python3-websockets).
"""
import asyncio
import json
import sys

import websockets


async def main(base, model):
    async with websockets.connect(f"{base}/bulk/stream/cpu/{model}") as ws:
        await ws.send(b"Bearer my-token")  # bytes, as the original examples send it
        texts = ["I love this product", "This is the worst purchase I ever made", "It arrived on Tuesday"]
        for i, text in enumerate(texts):
            await ws.send(json.dumps({"id": str(i), "inputs": text}))
        pending = {str(i) for i in range(len(texts))}
        while pending:
            msg = json.loads(await ws.recv())
            if msg["type"] == "status":
                print("status:", msg["message"])
            elif msg["type"] == "results":
                print(msg["id"], json.dumps(msg["outputs"]))
                pending.discard(msg["id"])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080",
                     sys.argv[2] if len(sys.argv) > 2 else "builtin/sentiment"))
