# Benchmark helper, not part of the collection: records how long each task took and what it did per host.
"""Write per-task timings and per-host outcomes of an ansible-playbook run to $MTLS_BENCH_TIMER_OUT (JSON)."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: mtls_bench_timer
type: aggregate
short_description: task durations and per-host outcomes as JSON, for bench/
description:
  - Enabled by bench/ scripts with ANSIBLE_CALLBACKS_ENABLED=mtls_bench_timer; writes to $MTLS_BENCH_TIMER_OUT.
"""


def _host(result):
    host = getattr(result, "host", None) or getattr(result, "_host", None)
    return host.get_name() if host is not None else "?"


def _task(result):
    return getattr(result, "task", None) or getattr(result, "_task", None)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "mtls_bench_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.start = time.monotonic()
        self.tasks = []  # {name, action, start, end, hosts: {host: status}}
        self.by_uuid = {}

    def _begin(self, task, kind):
        entry = {"name": task.get_name(), "action": task.action, "kind": kind,
                 "start": time.monotonic() - self.start, "end": None, "hosts": {}}
        self.tasks.append(entry)
        self.by_uuid[task._uuid] = entry

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._begin(task, "task")

    def v2_playbook_on_handler_task_start(self, task):
        self._begin(task, "handler")

    def _end(self, result, status):
        task = _task(result)
        entry = self.by_uuid.get(getattr(task, "_uuid", None))
        if entry is None:
            return
        entry["end"] = time.monotonic() - self.start
        entry["hosts"][_host(result)] = status

    def v2_runner_on_ok(self, result, **kwargs):
        changed = bool(getattr(result, "_result", {}).get("changed")) if hasattr(result, "_result") else False
        self._end(result, "changed" if changed else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._end(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._end(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._end(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        out = os.environ.get("MTLS_BENCH_TIMER_OUT")
        if not out:
            return
        for entry in self.tasks:
            entry["seconds"] = round(entry["end"] - entry["start"], 4) if entry["end"] is not None else None
        recap = {h: stats.summarize(h) for h in sorted(stats.processed)}
        with open(out, "w") as f:
            json.dump({"seconds": round(time.monotonic() - self.start, 4), "tasks": self.tasks, "recap": recap}, f,
                      indent=1)
