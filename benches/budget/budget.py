#!/usr/bin/env python3
"""Sorts the samples of `perf script -F comm,tid,ip,sym` (with call
graphs) into the parts of a request, and prints a markdown table of each
part's share and its microseconds of a request's CPU time.

usage: budget.py SCRIPT_OUTPUT CPU_US_PER_REQUEST

A sample goes to the first part (in the order below) whose test its stack
passes: the distinct subtrees first (a thread of its own, a TCP send, the
store's drop, instantiation, the guest), then, for what is left, the layer
of the innermost frame that belongs to one (the host, hyper, tokio)."""

import collections
import sys


def has(stack, *needles):
    return any(n in frame for frame in stack for n in needles)


def kernel(stack, *names):
    return any(frame.startswith(names) for frame in stack)


# A request's log without a span (host/src/telemetry/request_log.rs). Its
# `in_scope` wraps the whole request's poll: only the samples that stop in
# it (switching the thread's current request) are the log's.
REQUEST_LOG = ("request_log::RequestLines", "request_log::Fields", "request_log::TextFields",
               "request_log::write_time_and_level", "RequestLog::new", "RequestLog::routed",
               "RequestLog::event", "RequestLog::ended", "logs::request_log",
               "drop_in_place<shoal_host::telemetry::request_log")


def innermost_host(stack):
    return next((frame for frame in stack if frame.startswith(("shoal_", "<shoal_"))), "")


def leaf_layer(stack):
    for frame in stack:
        if frame.startswith(("shoal_", "<shoal_")):
            return "host"
        if "hyper" in frame or "httparse" in frame or frame.startswith(("http::", "<http::")):
            return "hyper"
        if "tokio" in frame or "mio::" in frame:
            return "tokio"
    return None


PARTS = [
    ("log writer thread (writes to stderr)",
     lambda comm, st: comm == "log-writer" or has(st, "tracing_appender::worker")),
    ("epoch ticker thread", lambda comm, st: comm == "epoch"),
    # Delivery over loopback runs in the sender's system call, up to waking
    # the client's thread: when the client sleeps on another CPU, that wake
    # (an interrupt to another virtual CPU) is a good part of a send's cost
    # here, and most of it when a run goes slow (benches/README.md). Sends
    # come before the other parts: the outbox sends held answers from
    # within them (the epoch callback of a guest that yields, the end of a
    # request's log), and a send is a send wherever it starts.
    ("kernel: waking the client (sock_def_readable, within a TCP send)",
     lambda comm, st: has(st, "sock_def_readable")),
    ("kernel: TCP send (writev, send; includes delivery to the client over loopback)",
     lambda comm, st: has(st, "writev", "write_vectored", "tcp_sendmsg")),
    ("store drop: linear memory and table reset (PAGEMAP_SCAN ioctl, madvise)",
     lambda comm, st: has(st, "reset_with_pagemap", "DecommitQueue", "deallocate_memory",
                          "deallocate_table", "decommit")),
    ("store drop: the rest (instance, resources, WASI context)",
     lambda comm, st: has(st, "Store<T> as core::ops::drop::Drop",
                          "drop_in_place<wasmtime::runtime::store::StoreInner",
                          "StoreOpaque as core::ops::drop::Drop", "deallocate_module")),
    ("instantiation (pool slot, imports, start functions' setup)",
     lambda comm, st: has(st, "Instantiator::run", "Instantiator::new", "instantiate_async",
                          "InstancePre<T>::_instantiate")),
    ("store and WASI context creation, the request and response resources",
     lambda comm, st: has(st, "new_store", "WasiCtxBuilder", "StoreState::new",
                          "new_incoming_request", "new_response_outparam")),
    ("component-model host calls from the guest (wasi:http, wasi:io, wasi:cli)",
     lambda comm, st: has(st, "HostFn::entrypoint", "HostFn::cabi_entrypoint",
                          "array_call_trampoline")),
    ("guest code (start and handler)",
     lambda comm, st: has(st, "catch_traps", "wasmtime_fiber", "fiber_start")),
    ("wasi:http body plumbing outside the guest",
     lambda comm, st: has(st, "wasmtime_wasi_http", "wasmtime_wasi_io", "HyperOutgoingBody",
                          "GuestBody")),
    ("logging: the request's log (a span before `57c41fd`) and the access line",
     lambda comm, st: has(st, "RequestRecord", "request_span", "tracing_subscriber",
                          "tracing_core", "tracing::span", *REQUEST_LOG)
     or "RequestLog::in_scope" in innermost_host(st)),
    ("kernel: TCP receive", lambda comm, st: has(st, "recvfrom", "__libc_recv", "tcp_recvmsg")),
    ("kernel: epoll, futex, scheduling",
     lambda comm, st: kernel(st, "do_epoll_wait", "__x64_sys_epoll_wait", "futex_wait",
                             "futex_wake", "__x64_sys_futex", "__schedule", "do_sched_yield",
                             "try_to_wake_up")),
    ("hyper: HTTP/1 parse, encode, dispatch", lambda comm, st: leaf_layer(st) == "hyper"),
    ("host: routing, admission, request ids, metrics, bodies",
     lambda comm, st: leaf_layer(st) == "host"),
    ("tokio: tasks, wakers, timers", lambda comm, st: leaf_layer(st) == "tokio"),
    ("other (unresolved frames)", lambda comm, st: True),
]


def main():
    samples, current = [], None
    for line in open(sys.argv[1], errors="replace"):
        if line.strip() and not line.startswith("\t"):
            current = (line.split()[0], [])
            samples.append(current)
        elif line.startswith("\t") and current is not None:
            fields = line.strip().split(None, 1)
            current[1].append(fields[1] if len(fields) > 1 else "")
    per_request = float(sys.argv[2])
    counts = collections.Counter()
    for comm, stack in samples:
        counts[next(name for name, test in PARTS if test(comm, stack))] += 1
    total = sum(counts.values())
    print("| part | share | µs / request |")
    print("| --- | --- | --- |")
    for name, _ in PARTS:
        share = counts[name] / total
        print(f"| {name} | {100 * share:.1f}% | {per_request * share:.1f} |")
    print(f"| all ({total} samples) | 100% | {per_request:.1f} |")


main()
