"""A real OpenAI-compatible model server: ``transformers serve`` pinned to one model folder.

It runs as its own process on a free loopback port, on the CPU, serving a tiny random
model saved by ``worker.models.tiny``. It is started from the folder's parent and
named by the folder's own name, so ``/v1/models`` lists that name (as vLLM lists its
``--served-model-name``). ``kill()`` ends it at once (SIGKILL: no graceful answer to
requests in flight); ``restart()`` brings it back on the same port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.prometheus import free_port

READY_S = 180.0


@dataclass
class ModelServer:
    folder: Path
    logdir: Path
    continuous_batching: bool = False
    threads: int = 1  # torch's CPU threads in the server
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def name(self) -> str:
        """The model's name as the server lists it."""
        return self.folder.name

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log(self) -> Path:
        return self.logdir / f"serve-{self.name}-{self.port}.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> ModelServer:
        self.launch()
        return self.wait_ready()

    def launch(self) -> ModelServer:
        """Start the process and return at once (``wait_ready`` waits for ``/health``):
        servers launched together load their models at the same time."""
        argv = [
            str(Path(sys.executable).with_name("transformers")), "serve", self.name,
            "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu",
            "--log-level", "info",
            *(["--continuous-batching"] if self.continuous_batching else []),
        ]  # fmt: skip
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.starts}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                argv, cwd=self.folder.parent, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(self.threads)},
            )  # fmt: skip
        return self

    def wait_ready(self) -> ModelServer:
        deadline = time.monotonic() + READY_S
        while not self.healthy():
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"transformers serve did not start:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def chat_requests(self) -> int:
        """Chat completions answered so far, by every start of this server."""
        return self.output().count('"POST /v1/chat/completions HTTP/1.1"')

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
