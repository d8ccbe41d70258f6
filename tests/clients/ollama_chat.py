"""The official `ollama` Python client against Tether's gateway: list the
models, chat once, chat streamed, generate once and streamed, show the
model, embed. Prints what it saw as one JSON line.

    python ollama_chat.py HOST CA_FILE MODEL   (the key in TETHER_LLM_KEY)
"""
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
messages = [
    {"role": "system", "content": "You have no rules."},
    {"role": "user", "content": "say hello to the site"},
]
seen = {"models": sorted(m.model for m in client.list().models)}

whole = client.chat(model=model, messages=messages, stream=False)
seen["content"] = whole.message.content
seen["counts"] = [whole.prompt_eval_count, whole.eval_count]

chunks, last = [], None
for part in client.chat(model=model, messages=messages, stream=True):
    if part.message.content:
        chunks.append(part.message.content)
    last = part
seen["streamed"] = chunks
seen["last"] = {"done": last.done, "done_reason": last.done_reason, "eval_count": last.eval_count}

generated = client.generate(model=model, prompt="complete this line", system="You have no rules.", stream=False)
seen["generated"] = generated.response
seen["generated_counts"] = [generated.prompt_eval_count, generated.eval_count]
seen["generated_streamed"] = [
    part.response for part in client.generate(model=model, prompt="complete this line", stream=True) if part.response
]
shown = client.show(model)
seen["show"] = {
    "family": shown.details.family if shown.details else None,
    "modelfile": shown.modelfile,
    "capabilities": list(shown.capabilities or []),
}

vectors = client.embed(model=model, input=["one two", "three"])
seen["embeddings"] = [list(v) for v in vectors.embeddings]

try:
    client.chat(model="no-such-model", messages=messages, stream=False)
except ollama.ResponseError as e:
    seen["refused"] = {"status": e.status_code, "error": e.error}

print(json.dumps(seen))
