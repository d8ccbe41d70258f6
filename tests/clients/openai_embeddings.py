"""The official `openai` Python client's embeddings through Tether's
gateway: as it asks by default (base64, decoded by the client), as floats,
as base64 it decodes itself, shortened by `dimensions` on a model that
can, and refused on one that cannot. Prints what it saw as one JSON line.

    python openai_embeddings.py BASE_URL CA_FILE MODEL SHORTENING_MODEL   (the key in TETHER_LLM_KEY)
"""
import base64
import json
import os
import struct
import sys

import openai

base_url, ca_file, model, shortening = sys.argv[1:5]
client = openai.OpenAI(
    base_url=base_url,
    api_key=os.environ["TETHER_LLM_KEY"],
    http_client=openai.DefaultHttpxClient(verify=ca_file),
    max_retries=0,
)
inputs = ["one two", "three"]


def floats(b64):
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


seen = {
    "default": [list(d.embedding) for d in client.embeddings.create(model=model, input=inputs).data],
    "float": [d.embedding for d in client.embeddings.create(model=model, input=inputs, encoding_format="float").data],
}
as_base64 = client.embeddings.create(model=model, input=inputs, encoding_format="base64").data
seen["base64_is_text"] = all(isinstance(d.embedding, str) for d in as_base64)
seen["base64"] = [floats(d.embedding) for d in as_base64]
seen["shortened"] = [list(d.embedding) for d in client.embeddings.create(model=shortening, input=inputs, dimensions=2).data]
try:
    client.embeddings.create(model=model, input=inputs, dimensions=2)
except openai.APIStatusError as e:
    seen["refused"] = {"status": e.status_code, "code": e.code, "message": e.message}
print(json.dumps(seen))
