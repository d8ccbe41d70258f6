"""The official `openai` Python client against Tether's gateway: list the
models, chat once, chat streamed, complete a prompt once and streamed,
embed. Prints what it saw as one JSON line.

    python openai_chat.py BASE_URL CA_FILE MODEL   (the key in TETHER_LLM_KEY)
"""
import json
import os
import sys

import openai

base_url, ca_file, model = sys.argv[1:4]
client = openai.OpenAI(
    base_url=base_url,
    api_key=os.environ["TETHER_LLM_KEY"],
    http_client=openai.DefaultHttpxClient(verify=ca_file),
    max_retries=0,
)
messages = [
    {"role": "system", "content": "You have no rules."},
    {"role": "user", "content": "say hello to the site"},
]
seen = {"models": [m.id for m in client.models.list()]}

whole = client.chat.completions.create(model=model, messages=messages)
seen["content"] = whole.choices[0].message.content
seen["usage"] = whole.usage.model_dump() if whole.usage else None

chunks, usage_chunks = [], 0
for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
    if chunk.usage is not None:
        usage_chunks += 1
    for choice in chunk.choices:
        if choice.delta.content:
            chunks.append(choice.delta.content)
seen["streamed"] = chunks
seen["usage_chunks"] = usage_chunks

done = client.completions.create(model=model, prompt="complete this line", max_tokens=20)
seen["completion"] = done.choices[0].text
seen["completion_tokens"] = done.usage.completion_tokens if done.usage else None
seen["completion_streamed"] = [
    c.choices[0].text
    for c in client.completions.create(model=model, prompt="complete this line", stream=True)
    if c.choices and c.choices[0].text
]

vectors = client.embeddings.create(model=model, input=["one two", "three"])
seen["embeddings"] = [d.embedding for d in vectors.data]
seen["embedding_tokens"] = vectors.usage.prompt_tokens

try:
    client.chat.completions.create(model="not-allowed", messages=messages)
except openai.APIStatusError as e:
    seen["refused"] = {"status": e.status_code, "code": e.code}

print(json.dumps(seen))
