"""The official `ollama` Python client's richer requests through Tether's
gateway: a JSON schema as `format`, `"json"`, tools (whole and streamed),
an image, sampling options, an option the server cannot take, the older
embeddings route, and `ps`. Prints what it saw as one JSON line.

    python ollama_features.py HOST CA_FILE MODEL   (the key in TETHER_LLM_KEY)
"""
import base64
import json
import os
import sys

import ollama

host, ca_file, model = sys.argv[1:4]
client = ollama.Client(
    host=host,
    headers={"Authorization": f"Bearer {os.environ['TETHER_LLM_KEY']}"},
    verify=ca_file,
)
# A one-pixel PNG.
png = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
weather = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
options = {"temperature": 0.2, "top_p": 0.9, "top_k": 20, "seed": 7, "num_predict": 50, "stop": ["END"],
           "repeat_penalty": 1.1}
ask = [{"role": "user", "content": "what is in this picture?", "images": [png]}]
seen = {}

shaped = client.chat(model=model, messages=ask, format=schema, options=options, stream=False)
seen["shaped"] = shaped.message.content
seen["json_mode"] = client.chat(model=model, messages=ask, format="json", stream=False).message.content

called = client.chat(model=model, messages=[{"role": "user", "content": "weather in Bern?"}], tools=[weather],
                     stream=False)
seen["tool_calls"] = [{"name": c.function.name, "arguments": dict(c.function.arguments)}
                      for c in called.message.tool_calls or []]
seen["tool_done_reason"] = called.done_reason
streamed = []
for part in client.chat(model=model, messages=[{"role": "user", "content": "weather in Bern?"}], tools=[weather],
                        stream=True):
    for c in part.message.tool_calls or []:
        streamed.append({"name": c.function.name, "arguments": dict(c.function.arguments)})
seen["streamed_tool_calls"] = streamed
answered = client.chat(model=model, tools=[weather], stream=False, messages=[
    {"role": "user", "content": "weather in Bern?"},
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Bern"}}}]},
    {"role": "tool", "content": "sunny", "tool_name": "weather"},
])
seen["after_tool"] = answered.message.content

try:
    client.chat(model=model, messages=ask, options={"num_ctx": 8192}, stream=False)
except ollama.ResponseError as e:
    seen["refused"] = {"status": e.status_code, "error": e.error}

seen["legacy_embedding"] = list(client.embeddings(model=model, prompt="one two three").embedding)
seen["ps"] = sorted(m.model for m in client.ps().models)
print(json.dumps(seen))
