"""The official A2A client (a2a-sdk, pinned) against the appliance: it
fetches the agent card, sends a message and waits for its task, streams
another, gets and lists tasks, cancels a running one and a finished one,
and subscribes to a finished task; prints what it saw as JSON.

usage: a2a_client.py BASE_URL CA_FILE   (the API token in TETHER_TOKEN)"""
import asyncio
import json
import os
import sys
import uuid

import httpx
from google.protobuf import json_format

from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
)


def as_dict(message):
    return json_format.MessageToDict(message)


def message(skill, data):
    m = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER)
    m.parts.append(json_format.ParseDict({"data": data}, Part()))
    m.metadata.update({"skill": skill})
    return m


async def main(base, ca):
    token = os.environ["TETHER_TOKEN"]
    out = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(verify=ca, headers=headers, timeout=90) as http:
        card = await A2ACardResolver(http, base).get_agent_card()
        out["card"] = as_dict(card)
        waiting = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        streaming = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)

        sent = [as_dict(e) async for e in waiting.send_message(SendMessageRequest(message=message("echo", {"say": "hi"})))]
        out["sent"] = sent
        done = sent[0]["task"]["id"]
        request = SendMessageRequest(message=message("command.steps", {}))
        out["streamed"] = [as_dict(e) async for e in streaming.send_message(request)]

        out["got"] = as_dict(await waiting.get_task(GetTaskRequest(id=done)))
        out["listed"] = as_dict(await waiting.list_tasks(ListTasksRequest(page_size=10)))

        at_once = SendMessageConfiguration(return_immediately=True)
        nap = SendMessageRequest(message=message("command.nap", {"seconds": 60}), configuration=at_once)
        napping = [e async for e in waiting.send_message(nap)][0]
        out["napping"] = as_dict(napping)
        out["cancelled"] = as_dict(await waiting.cancel_task(CancelTaskRequest(id=napping.task.id)))
        try:
            await waiting.cancel_task(CancelTaskRequest(id=done))
            out["cancel_finished"] = "no error"
        except Exception as e:  # the SDK's error for -32002
            out["cancel_finished"] = type(e).__name__

        out["subscribed"] = [as_dict(e) async for e in streaming.subscribe(SubscribeToTaskRequest(id=done))]
    print(json.dumps(out))


asyncio.run(main(sys.argv[1], sys.argv[2]))
