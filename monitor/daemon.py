"""The daemon's life in phases: load, start, serve, drain, stop.

Modelled on uvicorn's server and hypercorn's run loop: every long-lived task
runs in one TaskGroup; a shutdown trigger (the signal handler by default, a
test's own event otherwise) ends the serve phase; shutdown stops intake
first, waits a bounded time for in-flight work, flushes the writer, and
returns.  A second signal cancels without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from monitor.config import ConfigError, load_config
from monitor.config.restart import restart_only_changes
from monitor.events import EventBus
from monitor.http.server import make_app
from monitor.listeners import Listener, build_listeners
from monitor.model import Config
from monitor.notifier import Notifier
from monitor.retention import RetentionJob
from monitor.runtime import Runtime, make_runtime
from monitor.scheduler import Scheduler
from monitor.sdnotify import notify, watchdog_interval
from monitor.store import open_store

log = structlog.get_logger("monitor.daemon")

DRAIN_SECONDS = 5.0
RESTART_BACKOFF_MAX = 30.0


@dataclass
class Daemon:
    config_path: str
    config: Config
    stop_event: asyncio.Event | None = None
    runtime: Runtime | None = None
    _force: bool = False

    async def run(self) -> None:
        config = self.config
        stop = self.stop_event or asyncio.Event()
        self.stop_event = stop
        loop = asyncio.get_running_loop()

        store = open_store(config.daemon.database, config.daemon.instance)
        await asyncio.to_thread(store.open)
        bus = EventBus()
        fan_out = getattr(store, "fan_out", None)
        if fan_out is not None:
            # PostgreSQL: the store's listener publishes every instance's
            # changes (ours too) in commit-safe order; ready before HTTP serves.
            await fan_out(bus.publish)
        rt = make_runtime(config, store, bus)
        self.runtime = rt
        listeners = build_listeners(rt)
        for listener in listeners:
            rt.set_listener(listener.name, False)

        app = make_app(rt)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=DRAIN_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, config.http.host, config.http.port, reuse_address=True)
        await site.start()
        log.info(
            "daemon started",
            http=f"http://{config.http.host}:{config.http.port}/",
            database=config.daemon.database,
            clock=config.daemon.clock,
            instance=config.daemon.instance,
            summary=config.summary(),
        )
        notify("READY=1\nSTATUS=serving")

        def on_term(signame: str) -> None:
            if stop.is_set():
                log.warning("second signal: forcing shutdown", signal=signame)
                self._force = True
                for task in tasks:
                    task.cancel()
                return
            log.info("shutdown requested", signal=signame)
            stop.set()

        reloads: set[asyncio.Task[bool]] = set()

        def on_hup() -> None:
            task = loop.create_task(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, on_term, "SIGTERM")
            loop.add_signal_handler(signal.SIGINT, on_term, "SIGINT")
            loop.add_signal_handler(signal.SIGHUP, on_hup)

        scheduler = Scheduler(rt.pipeline)
        notifier = Notifier(rt.pipeline, rt.clock, rt.metrics, rt.zone)
        tasks: list[asyncio.Task[None]] = []
        try:
            async with asyncio.TaskGroup() as tg:
                tasks.append(tg.create_task(self._supervise("scheduler", scheduler.run)))
                tasks.append(tg.create_task(self._supervise("notifier", notifier.run)))
                tasks.append(tg.create_task(self._supervise("retention", RetentionJob(rt).run)))
                for listener in listeners:
                    tasks.append(tg.create_task(self._supervise_listener(rt, listener)))
                interval = watchdog_interval()
                if interval:
                    tasks.append(tg.create_task(self._watchdog(interval)))
                await stop.wait()
                notify("STOPPING=1")
                # 1. stop intake: listeners first, then HTTP (in-flight
                #    requests get DRAIN_SECONDS to finish their commits).
                for listener in listeners:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(DRAIN_SECONDS):
                            await listener.stop()
                log.debug("listeners stopped; closing HTTP")
                await runner.cleanup()
                log.debug("HTTP closed; draining notices")
                # 2. let notices being sent finish, bounded.
                if not self._force:
                    await notifier.drain(DRAIN_SECONDS)
                log.debug("drained; stopping tasks")
                for task in tasks:
                    task.cancel()
        finally:
            log.debug("tasks stopped")
            with contextlib.suppress(Exception):
                await runner.cleanup()
            log.debug("closing store")
            # 3. flush the writer: everything queued is committed or failed.
            await asyncio.to_thread(store.close)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            log.info("daemon stopped")

    async def reload(self) -> bool:
        """SIGHUP: a new snapshot, or the old one kept with the reason logged."""
        rt = self.runtime
        if rt is None:
            return False
        notify("RELOADING=1")
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            for line in exc.errors:
                log.error("reload rejected; old config kept", error=line)
            rt.metrics.config_reloads.labels(outcome="rejected").inc()
            notify("READY=1")
            return False
        except OSError as exc:
            log.error("reload rejected; old config kept", error=str(exc))
            rt.metrics.config_reloads.labels(outcome="rejected").inc()
            notify("READY=1")
            return False
        rt.config.current = config
        rt.metrics.config_reloads.labels(outcome="ok").inc()
        rt.pipeline.scheduler_wake.set()
        log.info("config reloaded", summary=config.summary())
        # self.config: what the listeners, store and clock were built from.
        pending = restart_only_changes(self.config, config)
        rt.metrics.config_restart_pending.set(1 if pending else 0)
        if pending:
            log.warning("config changes that apply only after a restart", keys=pending)
        notify("READY=1")
        return True

    async def _supervise(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Run a component forever; a crash is logged and restarted with backoff."""
        delay = 0.5
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("component crashed; restarting", component=name, delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_BACKOFF_MAX)

    async def _supervise_listener(self, rt: Runtime, listener: Listener) -> None:
        async def run() -> None:
            try:
                await listener.run()
            finally:
                rt.set_listener(listener.name, False)

        await self._supervise(listener.name, run)

    async def _watchdog(self, interval: float) -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)
