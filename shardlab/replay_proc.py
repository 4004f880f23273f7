"""The processes of ``shardlab replay``: each interface server and worker in its own
operating-system process, and the parent that starts them, applies faults and
collects what they saw.

Children
--------
Every child is a ``multiprocessing`` process of the "spawn" context (a fresh
interpreter: no state inherited from the parent) running its own asyncio loop and its
own layer object: `layer.redis.RedisChannelLayer` (``stack = "shardlab"``) or the
installed ``channels_redis.core.RedisChannelLayer``. It talks to the parent over one
duplex pipe: it sends what it observes as small tuples, stamped with
``time.monotonic()`` (one system-wide clock on Linux, so the parent can compare the
stamps of different processes), and it receives control messages:

- ``("start", t0)``: the common start (wall seconds, monotonic clock);
- ``("config", hosts, cut)``: a new host list (shard names) and the shards this
  process cannot reach (a partition); the child builds a new layer object on it (as
  the simulator builds a new router: its round robin starts again) and re-issues
  its waiting receives there;
- ``("stop",)``: cancel everything, close the layer, say ``bye`` and exit.

- it reports ``("config", hosts, stamp)`` once a new host list took effect: the
  owner's host list at the moment a reply is written decides whether it is misrouted.

A child ignores SIGINT and SIGTERM from its first instruction (the parent starts it
with both ignored, `_child_start`: a Ctrl-C or ``kill -TERM -PGID`` reaches the
whole process group, and the parent alone decides when to stop), dies with its parent
(``PR_SET_PDEATHSIG`` on Linux, and it exits when the pipe closes), and is a daemon
process, killed in the parent's ``finally``. It imports this module and its layer
only. Its layer's blocking-pop timeout (the profile's ``receive_timeout``, 5 s) is
scaled like every other duration.

Interface server ``ifaceI`` generation G (G restarts so far) gets its part of the plan:
the requests the simulator would give it, each ``(id, scenario time, reply channel)``.
At each time it starts a receive on the reply channel and sends the request
``{"id", "reply"}`` on the request channel. Events: ``sending``, ``sent`` (outcome
ok / full / down / unreachable, and the shard the layer chose), ``recv``.
Worker ``workerJ`` loops: receive a request (``take``), wait its service time (the
simulator's ``SEED/workerJ/service`` stream, continued across restarts), ``served``,
then ``reply`` (the shard the profile's router in `layer.routing` predicts: kept only
for a send that never finishes) and ``replied`` (outcome, and the shard the layer's
own send chose, which decides placement and misroutes). A receive that fails because
its shard is down or cut off is tried again after `RECEIVE_RETRY_S`; any other error
of a receive or a send is reported (``("error", text)``) and stops the run with
`ReplayError`.

Where a message was written is captured without changing the layer: the router's
``send_shard`` (shardlab) or the package's ``consistent_hash`` and round-robin cycle
(channels_redis) are wrapped to record their answer in a context variable of the
sending task. A partition wraps the layer's ``connection(index)`` so that a cut shard
raises `Unreachable`.

Parent
------
`ReplayRun` plans the run (who sends which request, the fault timeline in wall time),
starts the children, waits until every one is ready, sends a common start time a
little ahead, and then loops: read events, fire due faults, update progress, stop
when done. Faults:

- ``shard_crash``: SIGKILL the redis-server of the shard (only with servers this run
  started), start it again on the same port, empty, when the fault ends (nested
  faults: when the last one ends, as in the simulator);
- ``worker_crash`` / ``iface_crash``: SIGKILL the child; after ``duration`` a fresh
  child (generation G+1: a new router stream ``SEED/NAME/layerG``; an interface
  server draws a new prefix from ``SEED/ifaceI``, a worker continues its service
  stream). Requests that arrive while an interface server is down go to the next one
  that is up, as in the simulator;
- ``partition``: ``config`` to that process with the shard added to (later removed
  from) its cut set;
- ``host_change``: ``config`` with the new host list to each named process; one that
  is down reads it when it restarts.

Fates
-----
After the run the parent inspects every server (the reply keys of every interface
server generation and the request key) and gives every message sent exactly one fate
(the run stops with `ReplayError` if they do not add up), with the simulator's
precedence (`sim.world`): a reply received in time is delivered; otherwise misrouted
wins, then orphaned for a response whose interface server died. A reply judged
misrouted that its owner received all the same, on an unchanged host list, means the
servers are not one per shard: `ReplayError`, not a finding.

``placement`` holds the same set as ``sim.runner``'s: each reply send that reached its
shard (written, or refused full), not one to a shard that was down or cut off from
the worker; a send whose outcome was never reported (the worker was killed, or the run
ended, during it) counts when the shard was up and reachable then (or holds it). The
same "reached" decides whether a reply can be misrouted: one that did not reach its
shard is ``lost_in_crash`` / ``unreachable``, as the simulator settles it first.

Request: ``delivered`` once a worker finished serving it; ``dropped_by_dead_worker``
when the worker that took it was killed first; ``rejected_full`` / ``lost_in_crash``
(its shard was down: connection refused) / ``unreachable`` (partition) by the send's
outcome; ``lost_in_crash`` when it was queued on a shard that crashed later;
``in_flight`` when still queued at the end, taken by a worker still serving, or not
observed at all; ``expired`` when found nowhere and older than ``expiry``.

Response: ``misrouted`` when written to a shard the owner does not listen on, by the
owner's router on its host list at that moment (while the owner is up);
``delivered`` / ``orphaned`` (after ``client_timeout``) when received;
``rejected_full`` / ``unreachable`` by the outcome; ``lost_in_crash`` when the shard
was down or crashed after the write; ``orphaned`` when its interface server died
before that; then ``in_flight`` if still stored, ``expired`` if found nowhere and
older than ``expiry``, else ``in_flight``.

Where the real run cannot tell fates apart (the simulator can):

- a request popped from Redis by a worker that was killed before it could report the
  take is found nowhere: counted ``dropped_by_dead_worker`` if a worker was killed
  after the request was sent, else ``in_flight`` (a receive cancelled at the end can
  lose one popped request the same way; `layer.redis` documents it);
- a message that vanished because its key's time-to-live ran out and one removed by
  a receive cancelled at the end look the same before ``expiry``: ``in_flight``;
- a process killed in the middle of a send may or may not have written it: the
  message counts as sent (its ``sending`` event came first) and its fate follows from
  what the servers hold;
- a reply popped by an interface server's layer and buffered when the process was
  killed is ``orphaned`` (the simulator agrees: its listener is gone); one popped by
  the layer it replaced at a host change or partition is moved to the new layer
  (`_Layers.adopt`), except what channels_redis itself drops when a receive is
  cancelled.

``expiry`` is the scenario's times the time scale, computed once (`ReplayRun.expiry`)
for the layers and for the fates; channels_redis takes whole seconds, so there it is
rounded (at least 1 s) and a warning says so.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import math
import multiprocessing
import multiprocessing.connection as mpc
import os
import random
import signal
import string
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

# A child imports this module and what its layer needs, nothing more: the parent-only
# imports (sim.ledger, sim.load, the CLI) are inside the parent's functions.
from layer.names import local_token, non_local_name
from layer.routing import make_router

__all__ = ["ReplayRun", "ReplayError", "Unreachable", "iface_prefixes", "RECEIVE_RETRY_S",
           "QUIET_S", "START_MARGIN_S", "LATE_S", "MAX_BEHIND_S", "MIN_DRAIN_S",
           "MAX_PROCESSES"]

#: Scenario seconds a receiver waits after an error before it tries again (the
#: simulator's ``sim.world.RECEIVE_RETRY_S``).
RECEIVE_RETRY_S = 1.0
#: Wall seconds without an event, once every request is handled, that end a replay.
QUIET_S = 0.5
#: Wall seconds between "every child is ready" and the common start.
START_MARGIN_S = 0.2
#: Wall seconds a child may take to start (import, connect) before the run fails.
READY_TIMEOUT_S = 60.0
#: Wall seconds children get to stop cleanly at the end before they are killed.
STOP_TIMEOUT_S = 5.0
#: Scenario seconds a send or a fault may come after its planned time before it counts
#: as late (``wall.late_sends``, ``faults_applied[].late``).
LATE_S = 0.1
#: Wall seconds past the planned end that a replay which fell behind may run on to
#: offer every planned request; what is still unsent then is ``wall.not_sent``.
MAX_BEHIND_S = 30.0
#: Wall seconds the drain lasts at least, whatever the time scale: processes need real
#: time to finish what they started (the run still ends early once all is settled).
MIN_DRAIN_S = 1.0
#: Interface servers plus workers a replay starts at most (one OS process each).
MAX_PROCESSES = 256
#: Signals a child ignores from its first instruction: the parent alone decides when
#: the children stop (a Ctrl-C or ``kill -TERM -PGID`` reaches the whole group).
_CHILD_IGNORES = (signal.SIGINT, signal.SIGTERM)

_PLACED: contextvars.ContextVar[int | None] = contextvars.ContextVar("placed", default=None)


class ReplayError(RuntimeError):
    """The replay itself failed (a child died unexpectedly, fates do not add up)."""


class Unreachable(ConnectionError):
    """A layer's connection to a shard that a partition cuts it off from."""


def iface_prefixes(sc, i: int, gens: int) -> list[str]:
    """``ifaceI``'s reply prefix for generations 0..gens-1, as the simulator draws them
    (8 letters from the ``SEED/ifaceI`` stream per generation)."""
    rng = random.Random(f"{sc.seed}/iface{i}")
    return ["http.response." + "".join(rng.choice(string.ascii_letters) for _ in range(8))
            + "!" for _ in range(gens)]


# ======================================================================================
# the child side
# ======================================================================================

def _die_with_parent() -> None:
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the closed pipe still ends us
        pass


def child_main(spec: dict[str, Any], conn) -> None:
    """Entry point of one child process (run by multiprocessing). The parent starts it
    with SIGINT and SIGTERM ignored (`_child_start`); they stay ignored."""
    for sig in _CHILD_IGNORES:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _CHILD_IGNORES)  # (ignored all the same)
    _die_with_parent()
    if os.getppid() != spec["parent"]:
        os._exit(0)
    try:
        asyncio.run(_child(spec, conn))
    except BaseException as e:  # noqa: BLE001 - report it in one line, then exit
        import traceback
        where = traceback.extract_tb(e.__traceback__)[-1]
        try:  # fails when the parent is gone: then there is nobody to tell
            conn.send(("error", f"{spec['name']}: {type(e).__name__}: {e} "
                                f"({os.path.basename(where.filename)}:{where.lineno})"))
        except (OSError, ValueError):
            pass
        os._exit(1)


class _Layers:
    """Builds layer objects of one stack for one process."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.stack = spec["stack"]
        if self.stack == "channels_redis":
            from channels_redis import core
            self.core = core
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
        try:
            from channels.exceptions import ChannelFull
        except ImportError:  # pragma: no cover
            from layer.redis import ChannelFull
        self.full_error = ChannelFull
        #: what a crashed, killed or cut-off shard raises: retried, or a send's outcome
        self.down_errors = (RedisConnectionError, RedisTimeoutError, OSError)
        # The pre-send guess at a reply's shard (kept only for a send that never
        # finishes): the profile's own router from layer/, never a hash of our own.
        self.predictor = make_router(spec["router"], rng=random.Random(
            f"{spec['seed']}/{spec['name']}/predict{spec['gen']}"))

    def make(self, hosts: tuple[str, ...], cut: frozenset[str]):
        spec = self.spec
        urls = [spec["urls"][int(h[len("shard"):])] for h in hosts]
        if self.stack == "channels_redis":
            layer = self.core.RedisChannelLayer(hosts=urls, prefix=spec["prefix"],
                                                expiry=spec["expiry"],
                                                capacity=spec["capacity"])
            layer.client_prefix = spec["client_prefix"]
            orig_hash = layer.consistent_hash

            def consistent_hash(value):
                i = orig_hash(value)
                _PLACED.set(i)
                return i
            layer.consistent_hash = consistent_hash
            layer._send_index_generator = _recording(layer._send_index_generator)
        else:
            from layer.redis import RedisChannelLayer
            router = make_router(spec["router"], rng=random.Random(
                f"{spec['seed']}/{spec['name']}/layer{spec['gen']}"))
            orig_send = router.send_shard

            def send_shard(channel, names):
                i = orig_send(channel, names)
                _PLACED.set(i)
                return i
            router.send_shard = send_shard
            layer = RedisChannelLayer(urls, router=router, prefix=spec["prefix"],
                                      expiry=spec["expiry"], capacity=spec["capacity"],
                                      client_prefix=spec["client_prefix"], shard_names=hosts)
        # The profile's blocking-pop timeout is scenario time, as in the simulator (a
        # worker that stays on one shard waits this long before it may choose again).
        timeout = (self.core.RedisChannelLayer.brpop_timeout if self.stack == "channels_redis"
                   else layer.router.receive_timeout)
        layer.brpop_timeout = max(0.01, timeout * spec["time_scale"])
        if cut:
            orig_conn = layer.connection

            def connection(index):
                if hosts[index] in cut:
                    raise Unreachable(f"{hosts[index]} is cut off (partition)")
                return orig_conn(index)
            layer.connection = connection
        return layer

    def reply_shard(self, channel: str, hosts: tuple[str, ...]) -> str:
        """The shard the profile's router (`layer.routing`) says ``send(channel)``
        writes a process-specific channel to: a prediction, used only when the send
        never finishes (the shard the send really chose is captured, `_PLACED`)."""
        return hosts[self.predictor.send_shard(channel, hosts)]

    async def close(self, layer) -> None:
        try:
            if self.stack == "channels_redis":
                await asyncio.wait_for(layer.close_pools(), 2)
            else:
                await asyncio.wait_for(layer.close(), 2)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    async def adopt(self, old, new) -> None:
        """Hand what ``old`` (a replaced layer) pulled for this process to ``new``.

        Call it once every receive on ``old`` has been cancelled. layer.redis pulls a
        process's replies in a task of the layer's own (``_pullers``), which goes on
        popping for up to ``brpop_timeout`` after its receivers are gone: a reply it
        popped then would sit in a buffer nobody reads. So its pullers are stopped
        first (as ``close()`` stops them; the layer stays open for sends under way),
        and what either stack still holds in its buffers moves to ``new``'s.
        (channels_redis pulls inside the receive calls themselves, so cancelling them
        stopped its pulling; a cancelled one drops its own channel's buffer.)
        """
        if self.stack == "channels_redis":
            buffers = old.receive_buffer
        else:
            pending = {t for t in old._pullers.values() if not t.done()}
            while pending:  # cancel again: redis-py can absorb a first cancel
                for task in pending:
                    task.cancel()
                _, pending = await asyncio.wait(pending, timeout=0.05)
            old._pullers.clear()
            buffers = old._buffers
            new._recv_loop = asyncio.get_running_loop()  # keep what we put in its buffers
        for channel, buf in list(buffers.items()):
            while not buf.empty():
                item = buf.get_nowait()
                if not isinstance(item, dict):
                    continue  # a pull's error for the old layer's receivers
                if self.stack == "channels_redis":
                    new.receive_buffer[channel].put_nowait(item)
                else:
                    new._deliver(channel, item)

    def outcome(self, error: BaseException | None) -> str:
        if error is None:
            return "ok"
        if isinstance(error, self.full_error):
            return "full"
        if isinstance(error, Unreachable):
            return "unreachable"
        if isinstance(error, self.down_errors):
            return "down"
        return "error"


def _recording(cycle):
    for i in cycle:
        _PLACED.set(i)
        yield i


async def _child(spec: dict[str, Any], conn) -> None:
    loop = asyncio.get_running_loop()
    control: asyncio.Queue = asyncio.Queue()
    fd = conn.fileno()

    def readable() -> None:
        try:
            while conn.poll():
                control.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(fd)
            control.put_nowait(("stop",))
    loop.add_reader(fd, readable)

    def emit(*event) -> None:
        conn.send(event)

    node = (_IfaceNode if spec["role"] == "iface" else _WorkerNode)(spec, emit)
    emit("ready")
    message = await control.get()
    while message[0] == "config":  # a fault changed this process's setup as it started
        await _apply(node, message, emit)
        message = await control.get()
    if message[0] != "start":
        return
    main = asyncio.create_task(node.run(message[1]))
    stop = asyncio.create_task(_control(control, node, emit))
    done, _ = await asyncio.wait({main, stop}, return_when=asyncio.FIRST_COMPLETED)
    if main in done and main.exception() is not None:
        stop.cancel()
        raise main.exception()
    if stop not in done:
        await stop
    main.cancel()
    await asyncio.gather(main, return_exceptions=True)
    await node.shutdown()
    loop.remove_reader(fd)
    emit("bye")


async def _apply(node, message: tuple, emit) -> None:
    """Rebuild ``node``'s layer on a new host list / cut set and tell the parent when
    it took effect (the owner's host list decides where its replies belong)."""
    await node.reconfigure(tuple(message[1]), frozenset(message[2]))
    emit("config", list(message[1]), time.monotonic())


async def _control(control: asyncio.Queue, node, emit) -> None:
    while True:
        message = await control.get()
        if message[0] == "stop":
            return
        if message[0] == "config":
            await _apply(node, message, emit)


class _Node:
    def __init__(self, spec: dict[str, Any], emit):
        self.spec, self.emit = spec, emit
        self.scale = spec["time_scale"]
        self.retry = RECEIVE_RETRY_S * self.scale
        self.layers = _Layers(spec)
        self.hosts = tuple(spec["hosts"])
        self.layer = self.layers.make(self.hosts, frozenset(spec["cut"]))
        self.old: list = []
        self.tasks: set[asyncio.Task] = set()

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def fail(self, error: BaseException, doing: str) -> None:
        """Tell the parent about an error that is no fault of the scenario (not a full
        channel, nor a shard down or cut off): the run stops with `ReplayError`."""
        text = " ".join(str(error).split())
        self.emit("error", f"{self.spec['name']}: {doing}: {type(error).__name__}: {text}")

    async def send(self, layer, channel: str, message: dict) -> tuple[str, int | None]:
        """``(outcome, index)``: ok / full / down / unreachable (or error, reported to
        the parent), and the host index the layer's own send chose (None when it
        failed before choosing)."""
        _PLACED.set(None)
        try:
            await layer.send(channel, message)
            error = None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every outcome is an observation
            error = e
        outcome = self.layers.outcome(error)
        if outcome == "error":
            self.fail(error, f"send on {channel}")
        return outcome, _PLACED.get()

    async def shutdown(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for layer in [self.layer, *self.old]:
            await self.layers.close(layer)


class _IfaceNode(_Node):
    def __init__(self, spec, emit):
        super().__init__(spec, emit)
        self.waiting: dict[int, asyncio.Task] = {}   # request id -> its receive task
        self.channels: dict[int, str] = {}
        self.sends: dict[int, set[asyncio.Task]] = {}  # id(layer) -> sends under way

    async def run(self, t0: float) -> None:
        for rid, t, channel in self.spec["plan"]:
            delay = t0 + t * self.scale - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.channels[rid] = channel
            self.waiting[rid] = self.spawn(self.await_reply(rid, channel))
            self.spawn(self.send_request(rid, channel))
        await asyncio.Event().wait()  # keep listening until told to stop

    async def await_reply(self, rid: int, channel: str) -> None:
        while True:
            try:
                await self.layer.receive(channel)
                break
            except asyncio.CancelledError:
                raise
            except self.layers.down_errors:  # a crashed or cut shard: try again later
                await asyncio.sleep(self.retry)
            except Exception as e:  # noqa: BLE001 - anything else ends the run
                self.fail(e, f"receive on {channel}")
                return
        self.emit("recv", rid, time.monotonic())
        self.waiting.pop(rid, None)

    async def send_request(self, rid: int, channel: str) -> None:
        self.emit("sending", rid, time.monotonic())
        hosts, layer = self.hosts, self.layer
        sends = self.sends.setdefault(id(layer), set())
        sends.add(asyncio.current_task())
        try:
            outcome, index = await self.send(layer, self.spec["request_channel"],
                                             {"id": rid, "reply": channel})
        finally:
            sends.discard(asyncio.current_task())
        self.emit("sent", rid, outcome, None if index is None else hosts[index],
                  time.monotonic())

    async def reconfigure(self, hosts, cut) -> None:
        old, self.layer = self.layer, self.layers.make(hosts, cut)
        self.hosts = hosts
        # The receives under way on the old layer. One that starts while we wait below
        # is on the new layer already (await_reply reads self.layer): not moved again.
        moving = dict(self.waiting)
        for task in moving.values():
            task.cancel()
        await asyncio.gather(*moving.values(), return_exceptions=True)
        await self.layers.adopt(old, self.layer)
        # listen on the new layer at once (until then this process listens nowhere)
        for rid, task in moving.items():
            if self.waiting.get(rid) is task:  # not received meanwhile
                self.waiting[rid] = self.spawn(self.await_reply(rid, self.channels[rid]))
        self.spawn(self.retire(old))

    async def retire(self, old) -> None:
        """Close a replaced layer once the sends under way on it are done (closing it
        under a send would fail the send as if its shard were down)."""
        pending = self.sends.pop(id(old), set())
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        await self.layers.close(old)


class _WorkerNode(_Node):
    def __init__(self, spec, emit):
        super().__init__(spec, emit)
        self.rng = random.Random(f"{spec['seed']}/{spec['name']}/service")
        for _ in range(spec["skip"]):  # draws of earlier generations of this worker
            self.service_time()
        self.receiving: asyncio.Task | None = None

    def service_time(self) -> float:
        s, dist = self.spec["service_time"], self.spec["service_distribution"]
        if dist == "constant" or s == 0:
            return s
        return self.rng.expovariate(1.0 / s)

    async def run(self, t0: float) -> None:
        channel = self.spec["request_channel"]
        while True:
            self.receiving = self.spawn(self.layer.receive(channel))
            try:
                message = await self.receiving
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise
                continue  # reconfigured: receive again on the new layer
            except self.layers.down_errors:  # a crashed or cut shard: try again later
                await asyncio.sleep(self.retry)
                continue
            finally:  # anything else ends run(): the child reports it, the run stops
                self.receiving = None
            rid, reply = message["id"], message["reply"]
            self.emit("take", rid, time.monotonic())
            if asyncio.current_task().cancelling():
                # told to stop while the pop completed (redis-py can absorb a cancel):
                # the request is held at the end, as the simulator's holding worker
                raise asyncio.CancelledError()
            await asyncio.sleep(self.service_time() * self.scale)
            self.emit("served", rid, time.monotonic())
            layer, hosts = self.layer, self.hosts
            self.emit("reply", rid, self.layers.reply_shard(reply, hosts), time.monotonic())
            outcome, index = await self.send(layer, reply, {"id": rid})
            # where the layer's own send wrote (or tried to): placement and misroutes
            self.emit("replied", rid, outcome, None if index is None else hosts[index],
                      time.monotonic())

    async def reconfigure(self, hosts, cut) -> None:
        # the old layer may still be sending a reply: close it at the end
        self.old.append(self.layer)
        self.layer, self.hosts = self.layers.make(hosts, cut), hosts
        if self.receiving is not None:
            self.receiving.cancel()


# ======================================================================================
# the parent side
# ======================================================================================

@contextlib.contextmanager
def _child_start():
    """Around starting a child: SIGINT and SIGTERM ignored, so the child starts with
    both ignored (an ignored disposition survives exec, and CPython then installs no
    KeyboardInterrupt handler: no signal can reach it before `child_main` runs). They
    are blocked here too, so one sent to us meanwhile stays pending (Linux does not
    discard a blocked signal, ignored or not) and is raised once the handlers are
    back. And the parent's ``__main__`` is hidden from spawn, so that a child imports
    this module and its layer only, not the program that started the replay (the
    ``shardlab`` console script imports the whole CLI)."""
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()  # first: its own start unblocks SIGINT, SIGTERM
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _CHILD_IGNORES)
    if set(_CHILD_IGNORES) & signal.sigpending():  # one came just now: raise it first
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _CHILD_IGNORES)
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _CHILD_IGNORES}
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main
        for sig, handler in handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


@dataclass
class _Req:
    id: int
    iface: str
    gen: int
    channel: str
    t: float                          # planned scenario time
    sending: float | None = None      # wall: the send began
    outcome: str | None = None
    shard: str | None = None          # where the request was written (or tried)
    sent_at: float | None = None
    taker: tuple[str, int] | None = None
    taken_at: float | None = None
    served: bool = False
    reply_shard: str | None = None    # where the reply was written (or tried)
    reply_predicted: str | None = None  # the router's answer before the send
    reply_at: float | None = None
    reply_outcome: str | None = None
    recv: list[float] = field(default_factory=list)


@dataclass
class _Child:
    name: str
    gen: int
    proc: Any
    conn: Any
    ready: bool = False
    killed: bool = False
    done: bool = False


class ReplayRun:
    """One replay of one scenario on the servers at ``urls`` (one per shard).

    ``servers`` (a `shardlab.servers.RedisServers`) is needed for shard crashes.
    `run` returns the result dict (the shape of ``shardlab run --json``'s runs).

    Keeping up: every send, fault and restart is compared with its planned time. The
    drain lasts the scenario's ``drain`` after the last request was actually offered
    (not after its planned time), and the run goes on past the planned end, up to
    `MAX_BEHIND_S` wall seconds, until every planned request was offered; so a run
    that falls behind (startup, a slow restart, a time scale the machine cannot
    follow) still offers and serves what it planned, later. ``wall`` records how far
    behind it fell (``late_sends``, ``max_send_lateness_s``, ``not_sent``,
    ``overrun_s``) and ``warnings`` says so in words.
    """

    def __init__(self, sc, urls: list[str], stack: str, time_scale: float, prefix: str,
                 servers=None, progress=None):
        self.sc, self.urls, self.stack = sc, list(urls), stack
        self.scale, self.prefix = time_scale, prefix
        self.servers, self.progress = servers, progress
        self.ctx = multiprocessing.get_context("spawn")
        self.children: dict[tuple[str, int], _Child] = {}
        self.by_conn: dict[Any, _Child] = {}
        self.hosts = {p: sc.shard_names for p in self._names()}
        # process -> [(wall, hosts)], sorted: when each host list took effect in it
        self.host_history: dict[str, list[tuple[float, tuple[str, ...]]]] = {
            p: [(-math.inf, sc.shard_names)] for p in self._names()}
        self.cut: dict[str, set[str]] = {p: set() for p in self._names()}
        self.cut_spans: dict[tuple[str, str], list[list[float]]] = {}
        self.gen = {p: 0 for p in self._names()}
        self.ended: dict[tuple[str, int], float] = {}    # (process, gen) -> wall killed
        self.shard_down: dict[str, list[list[float]]] = {s: [] for s in sc.shard_names}
        self.worker_kills: list[float] = []
        self.takes = {f"worker{j}": 0 for j in range(sc.workers)}
        self.faults_on: dict[tuple, int] = {}
        self.applied: list[dict[str, Any]] = []
        self.restarting: dict[tuple[str, int], tuple[dict[str, Any], float, float]] = {}
        # (process, gen) -> fault notes whose configuration it has not applied yet
        self.configuring: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.t0 = math.inf
        self.last_event = time.monotonic()
        self.last_send = -math.inf
        self.late_sends = 0
        self.max_lateness = 0.0
        self.offered = 0
        self.stopping = False
        #: wall seconds a message lives in the layers (and before "expired" is judged)
        self.expiry = sc.expiry * time_scale
        if stack == "channels_redis":
            self.expiry = max(1, round(self.expiry))  # the package takes whole seconds
        self._plan()

    def _names(self) -> list[str]:
        return ([f"iface{i}" for i in range(self.sc.interface_servers)]
                + [f"worker{j}" for j in range(self.sc.workers)])

    def _scen(self, wall: float) -> float:
        """Wall time (monotonic) as scenario seconds since the common start."""
        return round((wall - self.t0) / self.scale, 6)

    # -- planning -----------------------------------------------------------------------
    def _plan(self) -> None:
        """Requests per interface server generation, and the fault timeline."""
        from sim.load import load_end, schedule

        sc = self.sc
        n = sc.interface_servers
        down: dict[str, list[tuple[float, float]]] = {f"iface{i}": [] for i in range(n)}
        for f in sc.faults:
            if f.kind == "iface_crash":
                spans = down[f.target]
                if not spans or f.at >= spans[-1][1]:  # a crash of a down server: ignored
                    spans.append((f.at, f.at + f.duration))

        def gen_at(name: str, t: float) -> int | None:
            g = 0
            for a, b in down[name]:
                if a <= t < b:
                    return None
                if b <= t:
                    g += 1
            return g
        gens = {name: len(spans) + 1 for name, spans in down.items()}
        self.prefixes = {f"iface{i}": iface_prefixes(sc, i, gens[f"iface{i}"])
                         for i in range(n)}
        counts: dict[tuple[str, int], int] = {}
        self.reqs: list[_Req] = []
        self.plan: dict[tuple[str, int], list[tuple[int, float, str]]] = {}
        self.not_offered = 0
        for t, i in schedule(sc):  # the simulator's arrivals (sim.load)
            for j in range(n):
                name = f"iface{(i + j) % n}"
                g = gen_at(name, t)
                if g is not None:
                    break
            else:
                self.not_offered += 1  # every interface server down: nobody takes it
                continue
            c = counts.get((name, g), 0)
            counts[(name, g)] = c + 1
            req = _Req(len(self.reqs), name, g, self.prefixes[name][g] + local_token(c), t)
            self.reqs.append(req)
            self.plan.setdefault((name, g), []).append((req.id, t, req.channel))
        self.unsent = dict(counts)  # (iface, gen) -> planned requests not offered yet
        self.load_end = load_end(sc)  # the simulator's: trailing gap, timed duration
        sim_end = self.load_end + sc.drain
        # (scenario time, order, action, fault); an action at or after the end never fires
        actions: list[tuple[float, int, str, Any]] = []
        for k, f in enumerate(sc.faults):
            actions.append((f.at, 2 * k, "begin", f))
            if f.kind != "host_change":
                actions.append((f.at + f.duration, 2 * k + 1, "end", f))
        self.actions = sorted(a for a in actions if a[0] < sim_end)
        self.min_end = max([a[0] for a in self.actions], default=0.0)
        self.sim_end = sim_end

    # -- children -------------------------------------------------------------------------
    def _spec(self, name: str, gen: int) -> dict[str, Any]:
        sc = self.sc
        iface = name.startswith("iface")
        expiry = self.expiry
        return {
            "parent": os.getpid(), "role": "iface" if iface else "worker", "name": name,
            "gen": gen, "stack": self.stack, "router": sc.router, "seed": sc.seed,
            "urls": self.urls, "hosts": self.hosts[name], "cut": sorted(self.cut[name]),
            "prefix": self.prefix, "expiry": expiry, "capacity": sc.capacity,
            "client_prefix": (self.prefixes[name][gen][len("http.response."):-1] if iface
                              else name),
            "plan": self.plan.get((name, gen), []) if iface else [],
            "request_channel": sc.request_channel, "service_time": sc.service_time,
            "service_distribution": sc.service_distribution,
            "skip": 0 if iface else self.takes[name], "time_scale": self.scale,
        }

    def _start_child(self, name: str, gen: int) -> _Child:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=child_main, args=(self._spec(name, gen), child),
                                name=f"shardlab-{name}.{gen}", daemon=True)
        try:
            with _child_start():
                proc.start()
                # known before a signal held back meanwhile is raised: stopped with the rest
                c = _Child(name, gen, proc, parent)
                self.children[(name, gen)] = c
                self.by_conn[parent] = c
        finally:
            child.close()
        return c

    def _live(self, name: str) -> _Child | None:
        c = self.children.get((name, self.gen[name]))
        return c if c is not None and not c.killed and not c.done else None

    def _tell(self, c: _Child, *message) -> None:
        try:
            c.conn.send(message)
        except OSError:
            pass

    def _kill_child(self, c: _Child) -> None:
        c.killed = True
        if c.proc.is_alive():
            os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.join(5)

    def _stop_all(self) -> None:
        """Kill every child still running (the parent's ``finally``; children ignore
        SIGTERM, and hold nothing that a clean exit would save)."""
        for c in self.children.values():
            if c.proc.is_alive():
                c.proc.kill()
        for c in self.children.values():
            c.proc.join(5)
            try:
                c.conn.close()
            except OSError:
                pass

    # -- events ---------------------------------------------------------------------------
    def _read(self, timeout: float) -> None:
        conns = [c.conn for c in self.by_conn.values() if not c.done]
        if not conns:
            time.sleep(max(0.0, timeout))
            return
        for conn in mpc.wait(conns, timeout):
            c = self.by_conn[conn]
            try:
                while not c.done and conn.poll():
                    self._event(c, conn.recv())
            except (EOFError, OSError):
                c.done = True
                if not c.killed and not self.stopping:
                    c.proc.join(1)
                    raise ReplayError(f"{c.name} (process {c.proc.pid}) exited unexpectedly "
                                      f"with code {c.proc.exitcode}") from None

    def _event(self, c: _Child, ev: tuple) -> None:
        kind = ev[0]
        now = self.last_event = time.monotonic()
        if kind == "ready":
            c.ready = True
            if self.t0 != math.inf:
                self._tell(c, "start", self.t0)
            restart = self.restarting.pop((c.name, c.gen), None)
            if restart is not None:
                self._restarted(*restart, now)
            return
        if kind == "bye":
            c.done = True
            return
        if kind == "error":
            raise ReplayError(f"a replay process failed: {ev[1]}")
        if kind == "config":  # the process now uses this host list
            bisect.insort(self.host_history[c.name], (ev[2], tuple(ev[1])),
                          key=lambda e: e[0])
            notes = self.configuring.get((c.name, c.gen), [])
            if notes:
                note = notes.pop(0)
                note["_waiting"].discard((c.name, c.gen))
                note["applied_by"] = max(note.get("applied_by") or -math.inf,
                                         self._scen(ev[2]))
            return
        r = self.reqs[ev[1]]
        if kind == "sending":
            r.sending = ev[2]
            self.unsent[(r.iface, r.gen)] -= 1
            self.last_send = max(self.last_send, ev[2])
            late = ev[2] - (self.t0 + r.t * self.scale)
            if late > LATE_S * self.scale:
                self.late_sends += 1
            self.max_lateness = max(self.max_lateness, late)
            self.offered += 1
            if self.progress is not None:
                self.progress(self.offered)
        elif kind == "sent":
            r.outcome, r.shard, r.sent_at = ev[2], ev[3], ev[4]
        elif kind == "recv":
            r.recv.append(ev[2])
        elif kind == "take":
            r.taker, r.taken_at = (c.name, c.gen), ev[2]
            self.takes[c.name] += 1
        elif kind == "served":
            r.served = True
        elif kind == "reply":  # before the send: the router's prediction
            r.reply_shard = r.reply_predicted = ev[2]
            r.reply_at = ev[3]
        elif kind == "replied":  # the shard the send itself chose replaces the guess
            r.reply_outcome = ev[2]
            if ev[3] is not None:
                r.reply_shard = ev[3]

    # -- faults ---------------------------------------------------------------------------
    def _restarted(self, note: dict[str, Any], down_since: float, duration: float,
                   ready: float) -> None:
        """A restarted process or server is ready: say when, and whether it stayed
        down longer than the fault's duration."""
        note["ready_at"] = self._scen(ready)
        down = (ready - down_since) / self.scale
        note["down_s"] = round(down, 6)
        note["outlasted_duration"] = down > duration + LATE_S

    def _fire(self, phase: str, f, planned: float) -> None:
        now = time.monotonic()
        kind = f.kind
        note: dict[str, Any] = {"at": None, "planned_at": round(planned, 6), "kind": kind,
                                "phase": phase}
        if kind == "shard_crash":
            idx = int(f.target[len("shard"):])
            key = ("down", f.target)
            if phase == "begin":
                self.faults_on[key] = self.faults_on.get(key, 0) + 1
                if self.faults_on[key] == 1:
                    self.servers.kill(idx)
                    self.shard_down[f.target].append([now, math.inf])
                    note["action"] = f"SIGKILL redis-server of {f.target}"
            else:
                self.faults_on[key] -= 1
                if self.faults_on[key] == 0:
                    since = self.shard_down[f.target][-1][0]
                    self.servers.restart(idx)  # returns once it answers PING
                    ready = time.monotonic()
                    self.shard_down[f.target][-1][1] = ready
                    note["action"] = f"restarted {f.target} empty on its port"
                    self._restarted(note, since, f.at + f.duration - self._down_planned(
                        f.target, f), ready)
        elif kind in ("worker_crash", "iface_crash"):
            name = f.target
            if phase == "begin":
                c = self._live(name)
                if c is None:
                    self._skip.add(id(f))  # already down: the simulator ignores it
                    return
                self._kill_child(c)
                self.ended[(name, c.gen)] = now
                if kind == "worker_crash":
                    self.worker_kills.append(now)
                note["action"] = f"SIGKILL {name} (generation {c.gen})"
            elif id(f) not in self._skip:
                since = self.ended[(name, self.gen[name])]
                self.gen[name] += 1
                self._start_child(name, self.gen[name])
                note["action"] = f"started {name} generation {self.gen[name]}"
                note["ready_at"] = None  # set when the new process says it is ready
                self.restarting[(name, self.gen[name])] = (note, since, f.duration)
        elif kind == "partition":
            key = ("cut", f.target, f.shard)
            spans = self.cut_spans.setdefault((f.target, f.shard), [])
            if phase == "begin":
                self.faults_on[key] = self.faults_on.get(key, 0) + 1
                self.cut[f.target].add(f.shard)
                if self.faults_on[key] == 1:
                    spans.append([now, math.inf])
            else:
                self.faults_on[key] -= 1
                if self.faults_on[key]:
                    return
                self.cut[f.target].discard(f.shard)
                spans[-1][1] = now
            self._configure(f.target, note)
            note["action"] = (f"{f.target} cut off from {f.shard}" if phase == "begin"
                              else f"{f.target} reaches {f.shard} again")
        elif kind == "host_change":
            for name in f.processes:
                if name not in self.hosts:
                    continue
                self.hosts[name] = tuple(f.hosts)
                if self._live(name) is not None:
                    self._configure(name, note)  # in the history once it applied it
                else:  # down: it starts on the new list
                    bisect.insort(self.host_history[name], (now, tuple(f.hosts)),
                                  key=lambda e: e[0])
            note["action"] = f"hosts {list(f.hosts)} for {len(f.processes)} process(es)"
        if "action" in note:
            note["at"] = self._scen(now)
            note["late"] = note["at"] - planned > LATE_S
            self.applied.append(note)

    def _down_planned(self, shard: str, f) -> float:
        """Scenario time the shard's (possibly nested) crash began, as planned."""
        begins = [g.at for g in self.sc.faults if g.kind == "shard_crash"
                  and g.target == shard and g.at <= f.at + f.duration
                  and g.at + g.duration >= f.at]
        return min(begins, default=f.at)

    def _configure(self, name: str, note: dict[str, Any] | None = None) -> None:
        c = self._live(name)
        if c is not None:
            self._tell(c, "config", list(self.hosts[name]), sorted(self.cut[name]))
            if note is not None:  # its "applied_by" waits for this process too
                note.setdefault("_waiting", set()).add((c.name, c.gen))
                self.configuring.setdefault((c.name, c.gen), []).append(note)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.stopping = False
        self.offered = 0
        self._skip: set[int] = set()
        started = time.monotonic()
        try:
            for name in self._names():
                self._start_child(name, 0)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not all(c.ready for c in self.children.values()):
                if time.monotonic() > deadline:
                    raise ReplayError(f"replay processes not ready after {READY_TIMEOUT_S:g} s")
                self._read(0.05)
            self.t0 = time.monotonic() + START_MARGIN_S
            for c in self.children.values():
                self._tell(c, "start", self.t0)
            ready_s = self.t0 - started
            end = loop_end = self._loop()
            self.stopping = True
            for c in self.children.values():
                if not c.killed and not c.done:
                    self._tell(c, "stop")
            stop_by = time.monotonic() + STOP_TIMEOUT_S
            while (time.monotonic() < stop_by
                   and any(not c.done for c in self.children.values() if not c.killed)):
                self._read(0.05)
            # the end for the fates: when the processes had stopped (what they did while
            # stopping was seen, and is on the servers the inspection reads)
            end = time.monotonic()
        except BaseException:
            self.stopping = True
            self._stop_all()  # an interrupted run: the servers go with it, no restore
            raise
        self._stop_all()
        self._restore_shards()
        found, found_req, queued = self._inspect()
        result = self._fates(found, found_req, end)
        result["queued_at_end"] = queued
        planned_end = self.t0 + self.sim_end * self.scale
        not_sent = sum(1 for r in self.reqs if r.sending is None)
        result["wall"] = {
            "elapsed_s": round(loop_end - self.t0, 3), "startup_s": round(ready_s, 3),
            "stop_s": round(end - loop_end, 3),
            "latency_s": self._wall_latency, "late_sends": self.late_sends,
            "max_send_lateness_s": round(max(0.0, self.max_lateness), 3),
            "not_sent": not_sent, "overrun_s": round(max(0.0, loop_end - planned_end), 3)}
        for note in self.applied:
            if note.pop("_waiting", None):  # a process never applied it (killed first)
                note.setdefault("applied_by", None)
        result["end_time_s"] = self._scen(end)
        result["warnings"] = self._warnings(result, not_sent)
        return result

    def _warnings(self, result: dict[str, Any], not_sent: int) -> list[str]:
        """Where the real run did not follow its plan, in words."""
        scale, out = self.scale, []
        late = self.max_lateness / scale
        if self.late_sends or not_sent:
            line = (f"the real run fell behind its plan: {self.late_sends} of "
                    f"{result['sent']['request']} requests sent more than {LATE_S:g} "
                    f"scenario s late (at most {late:.3g} scenario s, "
                    f"{self.max_lateness:.3g} wall s)")
            if not_sent:
                line += (f"; {not_sent} planned requests never sent (their interface "
                         "server was killed, or the run ended, before it got to them)")
            line += (f"; it ran {result['wall']['overrun_s']:g} wall s past the planned "
                     "end: shares and latencies are those of this slower run, not of the "
                     "scenario's timing (a larger --time-scale keeps up better)")
            out.append(line)
        slow = [a for a in self.applied if a.get("outlasted_duration")]
        if slow:
            what = ", ".join(f"{a['action'].split(' ')[1]} down {a['down_s']:g} s"
                             if a.get("ready_at") is not None else
                             f"{a['action'].split(' ')[1]} not ready before the end"
                             for a in slow)
            out.append(f"restarts took longer than their faults' durations: {what} "
                       "(scenario s)")
        spread = [a for a in self.applied if a.get("applied_by") is not None
                  and a["applied_by"] - a["planned_at"] > LATE_S]
        if spread:
            worst = max(spread, key=lambda a: a["applied_by"] - a["planned_at"])
            out.append(f"{len(spread)} configuration changes (host list, partition) took "
                       f"effect in the processes late: '{worst['action']}' planned at "
                       f"t={worst['planned_at']:g} s, in every process only by "
                       f"t={worst['applied_by']:g} s (the simulator changes them at once; "
                       "a reply written in between can be misrouted for real)")
        asked = self.sc.expiry * scale
        if self.expiry != asked:
            out.append(f"expiry {self.sc.expiry:g} s at time scale {scale:g} is {asked:.3g} "
                       f"wall s, but channels_redis takes whole seconds: its messages lived "
                       f"{self.expiry:g} wall s ({self.expiry / scale:g} scenario s), and "
                       "the fates judge 'expired' by that")
        guessed = [r for r in self.reqs if r.reply_outcome is not None
                   and r.reply_predicted != r.reply_shard]
        if guessed:
            out.append(f"{len(guessed)} replies were written to another shard than "
                       f"{self.sc.router}'s router predicted (first {guessed[0].channel}: "
                       f"{guessed[0].reply_shard}, not {guessed[0].reply_predicted}); "
                       "fates follow where they were written")
        late_faults = [a for a in self.applied if a.get("late")]
        if late_faults:
            worst = max(a["at"] - a["planned_at"] for a in late_faults)
            out.append(f"{len(late_faults)} fault actions applied more than {LATE_S:g} "
                       f"scenario s after their planned time (at most {worst:.3g} s late)")
        if out:
            for kind, reasons in result["in_flight_by_reason"].items():
                if reasons:
                    why = ", ".join(f"{k} {v}" for k, v in reasons.items())
                    out.append(f"{sum(reasons.values())} {kind}s still in flight at the "
                               f"end ({why})")
        return out

    def _loop(self) -> float:
        scale, t0 = self.scale, self.t0
        actions = list(self.actions)
        load_end = t0 + self.load_end * scale
        min_end = t0 + self.min_end * scale
        planned_end = t0 + self.sim_end * scale
        drain = max(self.sc.drain * scale, MIN_DRAIN_S)
        while True:
            now = time.monotonic()
            while actions and t0 + actions[0][0] * scale <= now:
                at, _, phase, f = actions.pop(0)
                self._fire(phase, f, at)
            if any(n for key, n in self.unsent.items() if key not in self.ended):
                deadline = planned_end + MAX_BEHIND_S  # still offering what it planned
            else:  # the drain follows the last request actually offered
                deadline = max(planned_end, self.last_send + drain,
                               load_end + MIN_DRAIN_S)
            if now >= deadline:
                return now
            if now >= load_end and now >= min_end and not actions and self._all_handled():
                if (all(r.recv for r in self.reqs if r.sending is not None)
                        or now - self.last_event > QUIET_S):
                    return now
            wait = 0.05 if not actions else min(0.05, t0 + actions[0][0] * scale - now)
            self._read(max(0.0, wait))

    def _all_handled(self) -> bool:
        """Every planned request is settled as far as the processes can tell: offered
        (or its interface server is gone) and then answered, refused or dropped."""
        for r in self.reqs:
            if r.sending is None:
                if (r.iface, r.gen) in self.ended:
                    continue
                return False
            if r.recv or r.reply_outcome is not None:
                continue
            if r.outcome is not None and r.outcome != "ok":
                continue
            if self._crashed_after(r.shard, r.sent_at, math.inf) is not None:
                continue
            if r.taker is not None and r.taker in self.ended:
                continue
            return False
        return True

    def _restore_shards(self) -> None:
        """Bring back a shard whose crash outlasted the run (the next run needs it)."""
        for shard, spans in self.shard_down.items():
            if spans and spans[-1][1] == math.inf:
                self.servers.restart(int(shard[len("shard"):]))

    # -- after the run -------------------------------------------------------------------------
    def _inspect(self) -> tuple[dict[str, set[str]], dict[int, set[str]],
                                dict[str, dict[str, int]]]:
        """What each server still holds: reply channels and request ids by shard, and
        the messages left under each key (``queued_at_end``: shard -> key -> count,
        the simulator's shape; keys without the replay's prefix)."""
        import msgpack
        import redis
        found: dict[str, set[str]] = {}
        found_req: dict[int, set[str]] = {}
        queued: dict[str, dict[str, int]] = {}
        keys = sorted({self.prefix + p for gens in self.prefixes.values() for p in gens})
        request_key = self.prefix + non_local_name(self.sc.request_channel)
        for shard, url in zip(self.sc.shard_names, self.urls):
            client = redis.Redis.from_url(url, socket_timeout=5)
            left: dict[str, int] = {}
            try:
                for key in [request_key, *keys]:
                    members = client.zrange(key, 0, -1)
                    if members:
                        left[key[len(self.prefix):]] = len(members)
                    for member in members:
                        body = msgpack.unpackb(member[12:], raw=False)
                        if key == request_key:
                            found_req.setdefault(body.get("id"), set()).add(shard)
                            continue
                        target = body.get("__asgi_channel__")
                        for ch in ([target] if isinstance(target, str) else target or []):
                            found.setdefault(ch, set()).add(shard)
            except redis.exceptions.ConnectionError:
                pass  # a shard still down at the end holds nothing
            finally:
                client.close()
            if left:
                queued[shard] = left
        return found, found_req, queued

    def _hosts_at(self, owner: str, at: float) -> tuple[str, ...]:
        """The host list ``owner`` used at wall time ``at``."""
        history = self.host_history[owner]
        i = bisect.bisect_right(history, at, key=lambda e: e[0])
        return history[max(0, i - 1)][1]

    def _listen_shard(self, owner: str, channel: str, at: float) -> str:
        """Where ``owner`` listened for ``channel`` at wall time ``at``: its profile's
        router (`layer.routing`; channels_redis-4 or live:channels_redis for the
        installed package) on the host list it had applied then."""
        hosts = self._hosts_at(owner, at)
        if not hasattr(self, "_router"):
            self._router = make_router(self.sc.router)
        return hosts[self._router.listen_shards(non_local_name(channel), hosts)[0]]

    def _crashed_after(self, shard: str | None, at: float | None, end: float) -> float | None:
        if shard is None or at is None:
            return None
        for a, _ in self.shard_down.get(shard, ()):
            if at < a <= end:
                return a
        return None

    def _reachable(self, sender: str, shard: str, at: float) -> bool:
        """``shard`` was up, and not cut off from ``sender``, at wall time ``at``."""
        spans = [*self.shard_down.get(shard, ()), *self.cut_spans.get((sender, shard), ())]
        return not any(a <= at < b for a, b in spans)

    def _down_at(self, shard: str, at: float) -> float | None:
        """When ``shard``'s crash that covers wall time ``at`` began, or None."""
        return next((a for a, b in self.shard_down.get(shard, ()) if a <= at < b), None)

    def _fates(self, found, found_req, end: float) -> dict[str, Any]:
        from sim.ledger import FATES, KINDS

        sc, scale = self.sc, self.scale
        expiry = self.expiry  # what the layers were given
        by_kind = {k: dict.fromkeys(FATES, 0) for k in KINDS}
        sent = dict.fromkeys(KINDS, 0)
        writes = {k: dict.fromkeys(sc.shard_names, 0) for k in KINDS}
        placement: dict[str, str] = {}
        misroutes: list[dict[str, Any]] = []
        contradictions: list[str] = []
        full = {"request": 0, "response": 0, "scripted": 0}
        latencies: list[float] = []
        waiting = {"request": {}, "response": {}}   # in_flight, by reason

        def still(kind: str, reason: str) -> str:
            waiting[kind][reason] = waiting[kind].get(reason, 0) + 1
            return "in_flight"

        failed = [r.id for r in self.reqs if "error" in (r.outcome, r.reply_outcome)]
        if failed:  # the child reported it, which stops the run: no fate to give
            raise ReplayError(f"{len(failed)} sends (first of request {failed[0]}) failed "
                              "with an error that is neither a full channel nor a shard "
                              "down or cut off")
        for r in self.reqs:
            if r.sending is None:
                continue
            sent["request"] += 1
            if r.outcome == "ok" and r.shard is not None:
                writes["request"][r.shard] += 1
            if r.outcome == "full":
                full["request"] += 1
            if r.served:
                fate = "delivered"
            elif r.taker is not None:
                fate = ("dropped_by_dead_worker" if r.taker in self.ended
                        else still("request", "being served"))
            elif r.outcome == "full":
                fate = "rejected_full"
            elif r.outcome == "down":
                fate = "lost_in_crash"
            elif r.outcome == "unreachable":
                fate = "unreachable"
            elif self._crashed_after(r.shard, r.sent_at or r.sending, end) is not None:
                fate = "lost_in_crash"
            elif r.id in found_req:
                fate = still("request", "queued")
            elif r.outcome is None:
                fate = still("request", "send unfinished")
            elif end - r.sending > expiry:
                fate = "expired"
            elif any(k > r.sending for k in self.worker_kills):
                fate = "dropped_by_dead_worker"
            else:
                fate = still("request", "not found (popped by a receive cancelled at the end)")
            by_kind["request"][fate] += 1

            if r.reply_shard is None:
                continue
            sent["response"] += 1
            owner_end = self.ended.get((r.iface, r.gen), math.inf)
            if r.reply_outcome == "ok":
                writes["response"][r.reply_shard] += 1
            # reached its shard (written, or refused full), as sim.world's _reachable
            # lets a send through to placement and the rendezvous check: not one to a
            # shard that was down or cut off (the simulator settles that first, as
            # lost_in_crash / unreachable); a send that never finished counts when its
            # shard was up and reachable then, or holds it
            blocked = (r.reply_outcome is None and not r.recv
                       and not self._reachable(r.taker[0], r.reply_shard, r.reply_at)
                       and r.reply_shard not in found.get(r.channel, ()))
            reached = r.reply_outcome in ("ok", "full") or (
                r.reply_outcome is None and not blocked)
            if reached:
                placement[r.channel] = r.reply_shard
            if r.reply_outcome == "full":
                full["response"] += 1
            listen = self._listen_shard(r.iface, r.channel, r.reply_at)
            misrouted = reached and r.reply_at < owner_end and r.reply_shard != listen
            if misrouted:  # a rendezvous violation, as the simulator's monitor counts it
                misroutes.append({"time": self._scen(r.reply_at), "sender": r.taker[0],
                                  "channel": r.channel, "shard_written": r.reply_shard,
                                  "shards_listened": [listen]})
            if r.recv:
                if misrouted and (self._hosts_at(r.iface, r.recv[0])
                                  == self._hosts_at(r.iface, r.reply_at)):
                    # written where its owner does not listen, yet received there
                    contradictions.append(r.channel)
                lat = r.recv[0] - r.sending
                if lat <= sc.client_timeout * scale:
                    fate = "delivered"  # delivered wins over misrouted, as in sim.world
                    latencies.append(lat)
                else:
                    fate = "misrouted" if misrouted else "orphaned"
            elif misrouted:  # wins over expired, lost_in_crash, orphaned, full, in flight
                fate = "misrouted"
            elif r.reply_outcome == "full":
                fate = "rejected_full"
            elif r.reply_outcome == "unreachable" or (
                    blocked and self._down_at(r.reply_shard, r.reply_at) is None):
                fate = "unreachable"
            elif r.reply_outcome == "down" or blocked:
                fate = "orphaned" if owner_end <= r.reply_at else "lost_in_crash"
            else:
                crash = self._crashed_after(r.reply_shard, r.reply_at, end)
                if crash is not None:
                    fate = "orphaned" if owner_end <= crash else "lost_in_crash"
                elif owner_end <= end:
                    fate = "orphaned"
                elif r.reply_shard in found.get(r.channel, ()):
                    fate = still("response", "queued")
                elif r.reply_outcome is None:
                    fate = still("response", "send unfinished")
                elif end - r.reply_at > expiry:
                    fate = "expired"
                else:
                    fate = still("response", "not found (popped, not yet reported)")
            by_kind["response"][fate] += 1
        if contradictions:
            raise ReplayError(
                f"{len(contradictions)} replies (first {contradictions[0]}) were received "
                "although written to a shard their owner does not listen on: the servers "
                "are not one per shard (is one Redis server given for two shards?)")
        dupes = sum(len(r.recv) - 1 for r in self.reqs if len(r.recv) > 1)
        by_kind["response"]["duplicate"] += dupes
        sent["response"] += dupes
        unbalanced = [k for k in KINDS if sum(by_kind[k].values()) != sent[k]]
        conservation = {"holds": not unbalanced, "violations": len(unbalanced),
                        "checked": len(KINDS), "first_violation": (
                            {"kind": unbalanced[0], "sent": sent[unbalanced[0]],
                             "fates": sum(by_kind[unbalanced[0]].values())}
                            if unbalanced else None)}
        if unbalanced:  # one fate per message, or no result at all
            raise ReplayError(f"fates do not add up for {', '.join(unbalanced)}: sent {sent}, "
                              f"fates {by_kind}")
        fates = {f: sum(by_kind[k][f] for k in KINDS) for f in FATES}
        misroutes.sort(key=lambda m: m["time"])
        latencies.sort()

        def q(xs: list[float], p: float) -> float | None:
            if not xs:
                return None
            return xs[min(len(xs) - 1, max(0, math.ceil(p * len(xs)) - 1))]

        def scaled(x):
            return None if x is None else round(x / scale, 6)
        self._wall_latency = {"p50": q(latencies, 0.5), "p99": q(latencies, 0.99)}
        totals = {s: sum(writes[k][s] for k in KINDS) for s in sc.shard_names}
        total = sum(totals.values())
        mean = total / len(totals)
        return {
            "router": sc.router,
            "scenario": sc.name,
            "seed": sc.seed,
            "shards": sc.shards,
            "mode": "real",
            "stack": self.stack,
            "time_scale": scale,
            "processes": "separate",
            "sent": sent,
            "fates": fates,
            "fates_by_kind": by_kind,
            "in_flight_by_reason": waiting,
            "latency_s": {"p50": scaled(q(latencies, 0.5)), "p99": scaled(q(latencies, 0.99))},
            "invariants": {
                "rendezvous": {"holds": not misroutes, "violations": len(misroutes),
                               "checked": sent["response"],
                               "first_violation": misroutes[0] if misroutes else None},
                "at_most_once": {"holds": dupes == 0, "violations": dupes,
                                 "checked": sent["response"], "first_violation": None},
                "conservation": conservation,
            },
            "channel_full_errors": full,
            "shard_writes": totals,
            "shard_load": {
                "by_kind": writes,
                "imbalance": round(max(totals.values()) / mean, 4) if total else None,
                "hot_shards": [s for s, w in totals.items() if len(totals) > 1
                               and mean >= 5.0 and w > 1.5 * mean]},
            "placement": {"response": dict(sorted(placement.items()))},
            "cross_channel_full": {"count": 0, "first": None},
            "faults_applied": self.applied,
            "not_offered": self.not_offered,
            "config": sc.to_dict(),
        }
