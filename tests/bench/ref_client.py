"""Minimal reference ComfyUI client, the yardstick for the benchmarks.

Usage: python tests/bench/ref_client.py URL WORKFLOW.json
"""
import json
import sys
import time
import uuid

import requests
import websocket

url, path = sys.argv[1].rstrip("/"), sys.argv[2]
client_id, prompt_id = uuid.uuid4().hex, str(uuid.uuid4())
ws = websocket.create_connection(url.replace("http", "ws", 1) + "/ws?clientId=" + client_id)
with open(path) as f:
    prompt = json.load(f)
requests.post(url + "/prompt", json={"prompt": prompt, "client_id": client_id,
                                     "prompt_id": prompt_id}).raise_for_status()
while True:
    frame = ws.recv()
    if not isinstance(frame, str):
        continue  # binary preview
    msg = json.loads(frame)
    if (msg["type"] in ("execution_success", "execution_error", "execution_interrupted")
            and msg["data"].get("prompt_id") == prompt_id):
        break
ws.close()
# The history entry lands a moment after the terminal event: poll briefly.
while prompt_id not in (history := requests.get(url + "/history/" + prompt_id).json()):
    time.sleep(0.005)
for node_output in history[prompt_id]["outputs"].values():
    for item in node_output.get("images", []):
        print(item["filename"])
sys.exit(0 if msg["type"] == "execution_success" else 1)
