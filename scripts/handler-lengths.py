#!/usr/bin/env python3
"""Lists the API's handlers longer than N body lines (default 15), longest
first: every `async fn` in appliance/api/src that takes `State<AppState>`.
ARCHITECTURE.md's *Handler exceptions* says why each one listed is longer.

Usage: scripts/handler-lengths.py [N]
"""
import glob
import os
import re
import sys


def handlers(root):
    for path in sorted(glob.glob(os.path.join(root, "appliance/api/src/**/*.rs"), recursive=True)):
        lines = open(path, encoding="utf-8").read().split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"^(pub(\(\w+\))? )?async fn (\w+)", lines[i])
            if not m:
                i += 1
                continue
            start = i
            while not lines[i].rstrip().endswith("{"):
                i += 1
            signature = "\n".join(lines[start : i + 1])
            end = i + 1
            while not lines[end].startswith("}"):
                end += 1
            if "State<AppState>" in signature:
                yield end - i - 1, os.path.relpath(path, root), start + 1, m.group(3)
            i = end + 1


def main():
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    for length, path, line, name in sorted(handlers(root), reverse=True):
        if length > limit:
            print(f"{length:4d}  {path}:{line}  {name}")


if __name__ == "__main__":
    main()
