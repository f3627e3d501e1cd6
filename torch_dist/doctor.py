"""`mnist-dist doctor`'s ranks: `python -m torch_dist.doctor [--config FILE] [key=value ...]`, started by
any launcher as the trainers are. Every rank reports its host, how it resolves every node's name,
its interface towards the master, its CPUs and GPUs and its clock against rank 0's; then, measured:
a node x node TCP bandwidth and round-trip matrix (one pair at a time, each bounded in time) and an
all-reduce sweep over message sizes with gloo (and NCCL where every rank has a GPU), timed as
nccl-tests times them (launch.doctor.allreduce_sweep; tf_dist.doctor measures TensorFlow's collective after it). Rank 0 writes doctor.json and doctor.md to log.dir/log.run_name (default
log.dir/doctor-<time>); launch.doctor.findings reads them. The ranks talk over torch.distributed (gloo),
joined as torch_dist's ranks join.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import struct
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from launch.atomic_files import write_json, write_text
from launch.clock import stamp
from launch.cluster.devices import gpu_for_rank, node_gpus
from launch.cluster.rendezvous import interface_towards, local_address, resolve
from launch.cluster.world import World
from launch.config import DistConfig
from launch.doctor.allreduce_sweep import SIZES, bandwidth, times_to_run
from launch.doctor.findings import REPORT, findings, render
from launch.run import worker
from torch_dist import distributed

PROG = "torch_dist.doctor"
LINK_SECONDS = 0.25  # bulk transfer per link
PINGS = 20
SOCKET_TIMEOUT = 10.0


def main(argv: list[str] | None = None) -> None:
    worker.main(PROG, check, argv)


def check(config, world: World) -> int:
    world, store = distributed.find_hosts(world, config.dist.timeout)
    comm, _ = distributed.connect(DistConfig(backend="gloo", timeout=config.dist.timeout), world, 0, store)
    with contextlib.closing(comm):
        report = _measure(config, world)
        if world.is_chief:
            folder = Path(config.log.dir) / (config.log.run_name or f"doctor-{stamp(time.time())}")
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / REPORT, report)
            write_text(folder / "doctor.md", render(report))
            print(f"doctor: {folder / REPORT}", flush=True)
        dist.barrier()
        comm.shutdown()
    return 0


def _measure(config, world: World) -> dict:
    mine = _facts(world)
    ranks = _all(mine)
    nodes = list(dict.fromkeys(r["host"] for r in ranks))
    resolved = _all({name: _address_of(name) for name in nodes})  # every node's name, as this host resolves it
    offsets = _all(_clock_offset(world))
    for r, names, offset in zip(ranks, resolved, offsets):
        r["resolved"], r["clock_offset_s"] = names, offset
    report = {
        "nodes": nodes,
        "ranks": ranks,
        "cpus_per_rank": config.train.threads or 1,
        "links": _links(world, ranks, nodes),
        "allreduce": _allreduce_sweeps(world, ranks),
    }
    report["findings"] = findings(report)
    return report


def _facts(world: World) -> dict:
    master = resolve(world.master_addr)
    gpus = _gpu_models()
    return {
        "rank": world.rank,
        "host": socket.gethostname(),
        "interface": interface_towards(master) or "",
        "address": local_address(master),
        "cpus": sorted(os.sched_getaffinity(0)),
        "gpus": gpus,
        "node_gpus": node_gpus(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _all(value) -> list:
    """Every rank's `value` (JSON: lists, dicts with text keys, numbers, text), in rank order. Sent as
    JSON, not as all_gather_object's pickles, which would run whatever code a stranger on the port sent."""
    mine = torch.tensor(list(json.dumps(value).encode()), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(mine)]))
    width = max(int(n) for n in sizes)
    rows = [torch.zeros(width, dtype=torch.uint8) for _ in sizes]
    dist.all_gather(rows, torch.cat([mine, torch.zeros(width - len(mine), dtype=torch.uint8)]))
    return [json.loads(bytes(row[: int(n)].tolist())) for row, n in zip(rows, sizes)]


def _address_of(name: str) -> str | None:
    try:
        return socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except OSError:
        return None


def _gpu_models() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


# --- clocks -----------------------------------------------------------------------------------------


def _clock_offset(world: World) -> float:
    """This rank's clock minus rank 0's, from the round trip with the least delay (as NTP does)."""
    best = (float("inf"), 0.0)
    stamp_ = torch.zeros(1, dtype=torch.float64)
    for r in range(1, world.size):
        for _ in range(PINGS):
            if world.rank == r:
                sent = time.time()
                dist.send(torch.tensor([sent], dtype=torch.float64), 0)
                dist.recv(stamp_, 0)
                back = time.time()
                best = min(best, (back - sent, (sent + back) / 2 - stamp_.item()))
            elif world.is_chief:
                dist.recv(stamp_, r)
                dist.send(torch.tensor([time.time()], dtype=torch.float64), r)
    return best[1]


# --- links ------------------------------------------------------------------------------------------


def _links(world: World, ranks: list[dict], nodes: list[str]) -> list[list[dict | None]]:
    """node i -> node j for every ordered pair, one pair at a time, between each node's first rank."""
    agents = {node: next(r["rank"] for r in ranks if r["host"] == node) for node in nodes}
    server = _Server(ranks[world.rank]["address"]) if world.rank in agents.values() else None
    ports = _all(server.port if server else None)
    row = [None] * len(nodes)
    try:
        for i, a in enumerate(nodes):
            for j, b in enumerate(nodes):
                if i != j:
                    dist.barrier()
                    if world.rank == agents[a]:
                        row[j] = _measure_link(ranks[agents[b]]["address"], ports[agents[b]])
    finally:
        dist.barrier()
        if server:
            server.close()
    rows = _all(row)
    return [rows[agents[node]] for node in nodes]


class _Server:
    """Answers pings (one byte back for each) and counts a bulk transfer to its end (the count back)."""

    def __init__(self, address: str):
        self.sock = socket.create_server((address, 0))
        self.sock.settimeout(SOCKET_TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed, or no peer within the timeout: check whether to stop
                continue
            with conn:
                conn.settimeout(SOCKET_TIMEOUT)
                try:
                    for _ in range(PINGS):
                        conn.sendall(conn.recv(1))
                    total = 0
                    while chunk := conn.recv(1 << 20):
                        total += len(chunk)
                    conn.sendall(struct.pack("!Q", total))
                except OSError:
                    pass  # the client reports the failed link

    def close(self) -> None:
        self.stopped = True
        self.sock.close()
        self.thread.join(SOCKET_TIMEOUT + 1)


def _measure_link(address: str, port: int) -> dict:
    try:
        with socket.create_connection((address, port), timeout=SOCKET_TIMEOUT) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtts = []
            for _ in range(PINGS):
                sent = time.perf_counter()
                conn.sendall(b"p")
                conn.recv(1)
                rtts.append(time.perf_counter() - sent)
            chunk, started = bytes(1 << 20), time.perf_counter()
            while time.perf_counter() - started < LINK_SECONDS:
                conn.sendall(chunk)
            conn.shutdown(socket.SHUT_WR)
            (total,) = struct.unpack("!Q", conn.recv(8))
            seconds = time.perf_counter() - started
    except OSError as exc:
        return {"gbit": 0.0, "rtt_ms": float("nan"), "error": str(exc)}
    return {"gbit": total * 8 / seconds / 1e9, "rtt_ms": statistics.median(rtts) * 1000}


# --- all-reduce -------------------------------------------------------------------------------------


def _allreduce_sweeps(world: World, ranks: list[dict]) -> dict[str, list[dict]]:
    sweeps = {"gloo": _sweep(None, torch.device("cpu"), world.size)}
    if world.size > 1 and all(r["gpus"] for r in ranks):
        gpu = gpu_for_rank(torch.cuda.device_count(), world.local_rank, world.local_size)
        torch.cuda.set_device(gpu)
        sweeps["nccl"] = _sweep(dist.new_group(backend="nccl"), torch.device("cuda", gpu), world.size)
    return sweeps


def _sweep(group, device: torch.device, size: int) -> list[dict]:
    """Each size: a warm-up, then as many timed all-reduces as fit launch.doctor.allreduce_sweep's budget; the mean."""
    rows = []
    for nbytes in SIZES:
        tensor = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        slowest = max(_all(_timed_allreduce(tensor, group)))
        times = [_timed_allreduce(tensor, group) for _ in range(times_to_run(slowest))]
        rows.append(bandwidth(nbytes, statistics.fmean(times), size))
    return rows


def _timed_allreduce(tensor: torch.Tensor, group) -> float:
    began = time.perf_counter()
    dist.all_reduce(tensor, group=group)
    _sync(tensor.device)
    return time.perf_counter() - began


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
