"""Batches gathered ahead of the step, in a background thread.

A step's batch is the rows of the uint8 images at the sampler's indices. From a store these
rows come out of the memory map (page cache, or disk on a cold cache), so gathering them can
take a noticeable time; :class:`BatchGatherer` does it for the next steps while the current
one trains (the gather is a copy, which releases the GIL). On CUDA the gathered batch is
pinned so that its copy to the GPU can run asynchronously. The indices are the sampler's, so
the batches, and the run, are exactly those of gathering in the loop.

``wait_s`` is the time the loop spent waiting for a batch: the data time of a step that the
background thread did not hide.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import torch

from dogo.training.step import Sampler

_DONE = object()


class BatchGatherer:
    """``get(step)`` returns step ``step``'s uint8 batch, gathered ``depth`` steps ahead."""

    def __init__(
        self,
        images: torch.Tensor,
        sampler: Sampler,
        start: int,
        stop: int,
        device: torch.device | None = None,
        depth: int = 2,
    ) -> None:
        self.images, self.sampler = images, sampler
        self.pin = device is not None and device.type == "cuda"
        self.next_step, self.stop = start, stop
        self.wait_s = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(start, stop), name="dogo-gather", daemon=True)
        self._thread.start()

    def gather(self, step: int) -> torch.Tensor:
        """Step ``step``'s batch, gathered here and now (what the thread does ahead).

        The rows are copied by numpy, on this thread alone: torch's indexing would start an OpenMP
        team of its own in this thread, whose workers then compete for the cores with the step's
        (short steps on a CPU ran 12 % slower that way).
        """
        indices = self.sampler.indices(step)
        batch = torch.from_numpy(self.images.numpy()[indices.numpy()])
        return batch.pin_memory() if self.pin else batch

    def _run(self, start: int, stop: int) -> None:
        try:
            for step in range(start, stop):
                if self._closing.is_set():
                    return
                item = (step, self.gather(step))
                while not self._closing.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the loop, raised there
            self._queue.put((None, exc))
            return
        self._queue.put((None, _DONE))

    def get(self, step: int) -> torch.Tensor:
        """The batch of ``step`` (steps must be asked for in order, from ``start``)."""
        if step != self.next_step:
            raise ValueError(f"batch of step {step} asked for, the gatherer is at step {self.next_step}")
        began = time.perf_counter()
        got, batch = self._queue.get()
        self.wait_s += time.perf_counter() - began
        if got is None:
            if batch is _DONE:
                raise ValueError(f"step {step} is past the gatherer's last step {self.stop - 1}")
            raise batch
        self.next_step += 1
        return batch

    def close(self) -> None:
        """Stop the thread (batches gathered ahead are dropped)."""
        self._closing.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def __enter__(self) -> BatchGatherer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
