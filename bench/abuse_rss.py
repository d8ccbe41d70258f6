#!/usr/bin/env python3
"""Memory after abuse: the appliance's resident set at start, after floods
of what anyone (or a key holder) can send, and after a restart's worth of
quiet, against the 2x-start-up bound of issue 19.

    bench/abuse_rss.py BIN [--requests N]

BIN is a tether binary (the release build: scripts/build-release.sh). It
runs `serve --dev` in a fresh directory on loopback and sends, over HTTP/1.1
keep-alive connections, with the standard library only:

  1. N anonymous GETs with 60 KiB paths (failed authentications);
  2. N/4 failed logins over 500 made-up accounts;
  3. N/10 gateway calls with 200 KiB model names, refused (model_not_allowed
     until the key's rpm, then 429);
  4. N/10 task creations with 100 KiB labels (refused, 400);
  5. N/10 accepted tasks with 60 KiB inputs (an authenticated flood that
     writes: the store's cache is what it would grow).

It prints one JSON line per stage: VmRSS and VmHWM (peak) in MiB, and the
data directory's size.
"""

import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time


def rss(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def dir_mib(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total / (1 << 20)


class Client:
    def __init__(self, host, port, ca_file):
        context = ssl.create_default_context(cafile=ca_file)
        context.set_alpn_protocols(["http/1.1"])
        self.args = (host, port, context)
        self.conn = None

    def send(self, method, path, body=None, headers=None):
        for _ in range(3):
            try:
                if self.conn is None:
                    host, port, context = self.args
                    self.conn = http.client.HTTPSConnection(host, port, context=context, timeout=30)
                data = None if body is None else json.dumps(body).encode()
                all_headers = {"content-type": "application/json"} if data is not None else {}
                all_headers.update(headers or {})
                self.conn.request(method, path, body=data, headers=all_headers)
                response = self.conn.getresponse()
                answer = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return response.status, answer
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
        return 0, b""


def flood(clients, count, make):
    """Sends `count` requests made by `make(i)` spread over the clients, one thread each."""
    statuses = {}
    lock = threading.Lock()

    def run(k, client):
        for i in range(k, count, len(clients)):
            status, _ = client.send(*make(i))
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=run, args=(k, c)) for k, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    n = int(sys.argv[sys.argv.index("--requests") + 1]) if "--requests" in sys.argv else 20000
    work = tempfile.mkdtemp(prefix="tether-abuse-")
    data = os.path.join(work, "data")
    env = dict(os.environ, TETHER_LOG="warn")
    proc = subprocess.Popen(
        [binary, "serve", "--dev", "--json", "--data-dir", data,
         "--listen", "127.0.0.1:0", "--worker-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        host, port = ready["listen"].rsplit(":", 1)
        token = ready["admin_token"]
        auth = {"authorization": f"Bearer {token}"}

        def report(stage, **extra):
            line = {"stage": stage, **{k: round(v, 1) for k, v in rss(proc.pid).items()},
                    "data_dir_mib": round(dir_mib(data), 1), **extra}
            print(json.dumps(line), flush=True)
            return line

        admin = Client(host, int(port), ready["ca_file"])
        time.sleep(1)
        start = report("start")
        clients = [Client(host, int(port), ready["ca_file"]) for _ in range(4)]

        path = "/api/v1/tasks/" + "a" * (60 * 1024)
        statuses = flood(clients, n, lambda i: ("GET", path))
        report("anonymous 60 KiB paths", requests=n, statuses=statuses)

        statuses = flood(clients, n // 4, lambda i: (
            "POST", "/api/v1/auth/login", {"username": f"user{i % 500}", "password": "not the password"}))
        report("failed logins", requests=n // 4, statuses=statuses)

        _, answer = admin.send("POST", "/api/v1/llm/keys", {"owner": "admin", "models": ["llama3"], "rpm": 600}, auth)
        key = json.loads(answer)["key"]
        model = "m" * (200 * 1024)
        statuses = flood(clients, n // 10, lambda i: (
            "POST", "/v1/chat/completions", {"model": model, "messages": []}, {"authorization": f"Bearer {key}"}))
        report("refused gateway calls, 200 KiB model names", requests=n // 10, statuses=statuses)

        labels = ["l" * (100 * 1024)]
        statuses = flood(clients, n // 10, lambda i: (
            "POST", "/api/v1/tasks", {"kind": "echo", "input": {}, "labels": labels}, auth))
        report("tasks with 100 KiB labels", requests=n // 10, statuses=statuses)

        pad = "x" * (60 * 1024)
        statuses = flood(clients, n // 10, lambda i: (
            "POST", "/api/v1/tasks", {"kind": "echo", "input": {"pad": pad}, "labels": ["nobody"]}, auth))
        report("accepted tasks with 60 KiB inputs", requests=n // 10, statuses=statuses)

        time.sleep(5)
        end = report("after 5 s quiet")
        print(json.dumps({"rss_start_mib": round(start["VmRSS"], 1), "rss_end_mib": round(end["VmRSS"], 1),
                          "peak_mib": round(end["VmHWM"], 1),
                          "end_over_start": round(end["VmRSS"] / start["VmRSS"], 2),
                          "goal": "end <= 2x start"}), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
