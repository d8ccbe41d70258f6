"""Drives a broker-core `tether` (before the vault) to make the upgrade
fixture; see make-pre-vault-fixture.sh. Usage: BIN OUT.tar.gz"""

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

ECHO_TASKS = 1600
WAITING_TASKS = 400
IDEMPOTENT_EVERY = 2  # every other waiting task is created with an Idempotency-Key
CANCELLED = 3
FAILING = 6

WORKER_TOML = """
[handlers]
echo = true

[commands.boom]
argv = ["/bin/sh", "-c", "echo pre-vault-error-canary-$0 >&2; exit 3", "{word}"]
[commands.boom.params.word]
type = "string"

[commands.slow]
argv = ["/bin/sleep", "600"]
timeout = "15m"
"""


def main(binary, out):
    work = tempfile.mkdtemp(prefix="pre-vault-")
    data = os.path.join(work, "data")
    serve = subprocess.Popen(
        [binary, "serve", "--dev", "--json", "--data-dir", data,
         "--listen", "127.0.0.1:0", "--worker-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True)
    ready = json.loads(serve.stdout.readline())
    api = Api(ready["listen"], ready["admin_token"], ready["ca_file"])

    expected = {"admin_token": ready["admin_token"], "idempotency": [], "tasks": []}
    ids = []
    for i in range(ECHO_TASKS):
        canary = f"pre-vault-input-{i}-{secrets.token_hex(8)}"
        ids.append(api.create({"kind": "echo", "input": {"canary": canary, "n": i}, "priority": i % 10}))
    for i in range(FAILING):
        ids.append(api.create({"kind": "command", "input": {"command": "boom", "params": {"word": f"w{i}"}}}))
    slow = api.create({"kind": "command", "input": {"command": "slow"}})
    for i in range(WAITING_TASKS):
        body = {"kind": "echo", "labels": ["gpu"], "priority": i % 10,
                "input": {"canary": f"pre-vault-waiting-{i}-{secrets.token_hex(8)}"}}
        key = f"fixture-{i}" if i % IDEMPOTENT_EVERY == 0 else None
        task = api.create(body, key)
        if key:
            expected["idempotency"].append({"key": key, "task": task, "request": body})
        if i < CANCELLED:
            api.call("POST", f"/api/v1/tasks/{task}/cancel", {})

    config = os.path.join(work, "worker.toml")
    with open(config, "w") as f:
        f.write(WORKER_TOML)
    worker_argv = ready["worker_command"].split()
    worker_argv[worker_argv.index("--state-dir") + 1] = os.path.join(work, "worker")
    worker = subprocess.Popen(worker_argv + ["--config", config, "--concurrency", "4"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for task in ids:
        api.call("GET", f"/api/v1/tasks/{task}?wait=60")
    while api.call("GET", f"/api/v1/tasks/{slow}")["state"] != "leased":
        time.sleep(0.1)

    for task in api.all_tasks():
        expected["tasks"].append({k: task.get(k) for k in
                                  ("id", "kind", "state", "input", "result", "error", "labels", "priority")})
    # The appliance stops with the slow task still leased; the worker is
    # killed after, so its lease stays in the store.
    serve.send_signal(signal.SIGTERM)
    serve.wait(timeout=60)
    worker.kill()
    worker.wait()

    with open(os.path.join(work, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
    with tarfile.open(out, "w:gz") as tar:
        tar.add(data, arcname="data")
        tar.add(os.path.join(work, "expected.json"), arcname="expected.json")
    states = {}
    for t in expected["tasks"]:
        states[t["state"]] = states.get(t["state"], 0) + 1
    print(f"wrote {out}: {len(expected['tasks'])} tasks {states}", file=sys.stderr)


class Api:
    def __init__(self, listen, token, ca_file):
        self.base = f"https://{listen}"
        self.token = token
        self.tls = ssl.create_default_context(cafile=ca_file)

    def call(self, method, path, body=None, idempotency_key=None):
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, context=self.tls, timeout=90) as r:
            return json.loads(r.read())

    def create(self, body, idempotency_key=None):
        return self.call("POST", "/api/v1/tasks", body, idempotency_key)["id"]

    def all_tasks(self):
        tasks, before = [], None
        while True:
            page = self.call("GET", "/api/v1/tasks?limit=500" + (f"&before={before}" if before else ""))
            tasks += page["tasks"]
            before = page.get("next_before")
            if not before:
                return tasks


if __name__ == "__main__":
    main(*sys.argv[1:])
