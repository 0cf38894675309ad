"""The sweep's progress bar, moved by each training epoch, each attacked batch and each cell.

A group's code (robustbench_lfm/group.py, attacking.py) `report`s an `Epoch` after each training
epoch, `Images` after each batch an attack crafted and a `CellDone` after each cell, tagged with
its group's label (`lfm@seed0`); while an attack crafts a batch, `Crafting` every
`CRAFTING_EVERY_S` seconds at most, by the forward passes it has run on the model (`crafting`), so
a search whose batch takes minutes (AutoAttack's members, a ResNet-50's metric attack) moves the
bar as it goes. The sweep (runner._run_groups) listens with a `SweepBar`, whose
unit is an estimated second of work (robustbench_lfm/estimate.py): a group's trained epochs count
their share of its training, its finished cells their `estimate.cells_work`, the cell being
attacked the share of its scored images crafted so far (an ensemble's, each member's), and when
the group's result comes back the bar holds the group's whole estimate, so its "left" is the ETA
of the whole sweep as it runs. An attack whose work is known only within bounds (AutoAttack, whose
later members run only on the images the earlier ones left) is estimated at its most; each of its
batches says the share of those passes it ran, and the bar's total shrinks to what the attack
turns out to cost on the model (`SweepBar._realized`).

Worker processes of `--jobs N` send their events to the coordinator through a queue
(`forward_to`, robustbench_lfm/executors.py), dask workers through the scheduler's event log (a
topic the coordinating client subscribes to), submitit's jobs by appending them to a file each in
the job folder, which Slurm's nodes and the coordinator share (`appending_to`, `EventFiles`).
Progress is best effort: an event a worker cannot send, or a record the coordinator cannot read,
is dropped, never an error.
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from robustbench_lfm.spec import Cell


@dataclass(frozen=True)
class Epoch:
    """Group `label` has trained `done` of its model's `total` epochs."""

    label: str
    done: int
    total: int


@dataclass(frozen=True)
class CellDone:
    """Group `label` has finished `cell` (recorded or failed)."""

    label: str
    cell: Cell


@dataclass(frozen=True)
class Images:
    """Group `label` has crafted `n` more adversarial images for `cell` (one batch). `share`: for an
    attack whose work is known only within bounds (AutoAttack, estimate.bounded), the share of its
    most passes the batch ran (`crafting`); None for the others, which run all of theirs."""

    label: str
    cell: Cell
    n: int
    share: float | None = None


@dataclass(frozen=True)
class Crafting:
    """Group `label`'s attack on `cell` has done `images` images' worth of the batch it is crafting:
    the batch's images times the share of its passes run so far (at most the batch), which the
    batch's `Images` then replaces."""

    label: str
    cell: Cell
    images: float


Event = Epoch | CellDone | Images | Crafting
_local = threading.local()  # a sweep's groups and its bar share a thread: two sweeps in two threads stay apart


def _listeners() -> list[Callable[[Event], None]]:
    if not hasattr(_local, "listeners"):
        _local.listeners = []
    return _local.listeners


def report(event: Event) -> None:
    """Hand `event` to this thread's listeners (none: nothing happens)."""
    for listener in _listeners():
        listener(event)


@contextmanager
def listening(listener: Callable[[Event], None]) -> Iterator[None]:
    """`listener` gets this thread's events while the block runs."""
    _listeners().append(listener)
    try:
        yield
    finally:
        _listeners().remove(listener)


CRAFTING_EVERY_S = 0.25  # the most often a batch under way reports (`crafting`): a queue or a file gets a few a second


@dataclass
class _Batch:
    """A batch an attack is crafting: what its `Crafting` events say, and the passes counted so far."""

    label: str
    cell: Cell
    images: int
    passes: float  # image-passes the attack makes at most on this batch
    done: float = 0.0
    reported: float = field(default_factory=time.monotonic)

    def share(self) -> float:
        """The share of the batch's most passes run so far."""
        return min(1.0, self.done / self.passes)

    def forward(self, module: Any, args: tuple[Any, ...]) -> None:
        """A forward pre-hook: one more pass of the images `args[0]` holds."""
        shape: tuple[int, ...] = tuple(getattr(args[0], "shape", ())) if args else ()
        self.done += shape[0] if shape else 0
        now = time.monotonic()
        if now - self.reported >= CRAFTING_EVERY_S:
            self.reported = now
            report(Crafting(self.label, self.cell, self.images * self.share()))


@contextmanager
def crafting(
    model: nn.Module, label: str, cell: Cell, images: int, passes: Callable[[], float]
) -> Iterator[_Batch | None]:
    """While the block runs an attack on a batch of `images` images for `cell`, each forward pass of
    `model` (a hook on it: any attack, ours, torchattacks' or a plugin's) counts toward the
    `passes()` passes an image the attack makes at most (estimate.cell_passes), reported as
    `Crafting` events; the block gets the count (None where nothing counts). Nothing is hooked when
    this thread has no listener; a model that takes no hook (a scripted one) or passes that cannot
    be counted leave the batch to its `Images`."""
    batch, hook = _hooked(model, label, cell, images, passes) if _listeners() and images > 0 else (None, None)
    try:
        yield batch
    finally:
        if hook is not None:
            hook.remove()


def _hooked(
    model: nn.Module, label: str, cell: Cell, images: int, passes: Callable[[], float]
) -> tuple[_Batch | None, Any]:
    """`crafting`'s count and its hook on `model`, or Nones where it cannot count (progress never
    fails an attack)."""
    try:
        batch = _Batch(label, cell, images, images * max(passes(), 1.0))
        return batch, model.register_forward_pre_hook(batch.forward)
    except Exception:
        return None, None


def forward_to(events: Any) -> None:
    """In a worker process: send every event to the coordinator through the multiprocessing
    SimpleQueue `events`. Its put writes to the pipe before it returns (no feeder thread), so a
    task's events are there before its result, and a worker exits with nothing left to flush."""
    _listeners().append(dropping_failures(events.put))  # the pool runs initialiser and tasks in one thread


def dropping_failures(send: Callable[[Event], Any]) -> Callable[[Event], None]:
    """`send` as a listener whose failure drops the event: a worker's progress never fails its task."""

    def listener(event: Event) -> None:
        with contextlib.suppress(Exception):
            send(event)

    return listener


def drain(events: Any) -> None:
    """In the coordinator: `report` what the workers have sent so far (a multiprocessing SimpleQueue,
    or the queue.SimpleQueue a dask client's subscription fills)."""
    try:
        while not events.empty():
            report(events.get())
    except (EOFError, OSError):  # a worker died mid-write: the pool reports that itself
        return


@contextmanager
def appending_to(path: Path) -> Iterator[None]:
    """In a job: this thread's events appended to `path` while the block runs, each as its pickle's
    length (4 bytes, little-endian) and the pickle, flushed at once."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = path.open("ab")
    except OSError:  # no progress, the job itself goes on
        yield
        return

    def append(event: Event) -> None:
        data = pickle.dumps(event)
        sink.write(len(data).to_bytes(4, "little") + data)
        sink.flush()

    try:
        with listening(dropping_failures(append)):
            yield
    finally:
        with contextlib.suppress(OSError):  # what a full disk left in the buffer is dropped too
            sink.close()


class EventFiles:
    """The coordinator's side of `appending_to`: one file a job in `folder`, read as it grows."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.offsets: dict[Path, int] = {}

    def path(self, job: int) -> Path:
        return self.folder / f"{job}.events"

    def drain(self) -> None:
        """`report` every whole record the jobs have appended since the last call (a record still
        being written waits for the next)."""
        for path in sorted(self.folder.glob("*.events")):
            offset = self.offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                continue
            at = 0
            while at + 4 <= len(data):
                size = int.from_bytes(data[at : at + 4], "little")
                if at + 4 + size > len(data):
                    break
                record, at = data[at + 4 : at + 4 + size], at + 4 + size
                try:
                    event = pickle.loads(record)
                except Exception:  # a damaged record is dropped; its length still frames the next
                    continue
                report(event)
            self.offsets[path] = offset + at

    def remove(self) -> None:
        """The folder and its files, once the sweep has read them."""
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class _Group:
    """What the bar expects of one (model, seed) group, and what it has counted of it."""

    training: float  # estimated seconds of its training (0: cached, or trained by an earlier group)
    per_work: float  # estimated seconds per megapixel-pass of its cells
    seconds: float  # the whole group's estimate, as the bar's total counts it
    shares: dict[Cell, float]  # each cell's megapixel-passes (estimate.cell_shares)
    done_work: float = 0.0  # megapixel-passes of the cells finished
    crafted: dict[Cell, int] = field(default_factory=dict)  # the cells under way: their images crafted
    batch: float = 0.0  # images' worth of the batch being crafted (`Crafting`), until its `Images`
    counted: float = 0.0
    bounded: frozenset[Cell] = frozenset()  # its cells whose attack is known only within bounds (estimate.bounded)
    realized: dict[Cell, tuple[int, float]] = field(default_factory=dict)  # images with a share, and share x images
    saved: dict[Cell, float] = field(default_factory=dict)  # megapixel-passes a cell is no longer expected to run


class SweepBar:
    """Turns a phase's events into a tqdm bar's updates, in estimated seconds (module docstring)."""

    def __init__(self, bar: Any, work: Callable[[list[Cell]], float], scored: int) -> None:
        self.bar = bar
        self.work = work  # megapixel-passes of a group's cells: estimate.cells_work for the sweep
        self.scored = max(scored, 1)  # the images a cell scores (queries, test images): a whole cell's batches
        self.groups: dict[str, _Group] = {}

    def expect(
        self,
        label: str,
        training: float,
        per_work: float,
        seconds: float,
        shares: dict[Cell, float] | None = None,
        bounded: frozenset[Cell] = frozenset(),
    ) -> None:
        """Group `label` will run: its training's seconds, its cells' seconds per unit of work, its
        whole estimate, each cell's units (`work` counts a cell not among them) and the cells whose
        work is known only within bounds (`_realized`)."""
        self.groups[label] = _Group(training, per_work, seconds, dict(shares or {}), bounded=bounded)

    def __call__(self, event: Event) -> None:
        group = self.groups.get(event.label)
        if group is None:  # a group this phase does not run, or one already finished
            return
        if isinstance(event, Epoch):
            target = group.training * event.done / max(event.total, 1)
        elif isinstance(event, Images | Crafting):  # a group runs its cells one by one: the cell under way's
            images = group.crafted.get(event.cell, 0)
            if isinstance(event, Images):  # a whole batch: it replaces what its passes counted
                group.crafted[event.cell], group.batch = images + event.n, 0.0
                if event.share is not None:
                    self._realized(group, event.cell, event.n, event.share)
            else:  # the batch's passes, against what the cell's batches have run so far (`_realized`)
                ran = self._ran(group, event.cell)
                group.crafted[event.cell], group.batch = images, event.images / ran if ran > 0 else event.images
            under_way = sum(
                self._units(group, cell) * min(1.0, (n + (group.batch if cell == event.cell else 0.0)) / self.scored)
                for cell, n in group.crafted.items()
            )
            target = group.training + (group.done_work + under_way) * group.per_work
        else:
            group.done_work, group.crafted, group.batch = group.done_work + self._units(group, event.cell), {}, 0.0
            target = group.training + group.done_work * group.per_work
        self._advance(group, min(target, group.seconds))

    def _whole(self, group: _Group, cell: Cell) -> float:
        """`cell`'s megapixel-passes in `group` as estimated: its share, or for a cell the group did
        not list (an ensemble's member) its own work."""
        if cell not in group.shares:
            group.shares[cell] = self.work([cell])
        return group.shares[cell]

    def _units(self, group: _Group, cell: Cell) -> float:
        """`cell`'s megapixel-passes as now expected: less what its batches so far say it will not run."""
        return self._whole(group, cell) - group.saved.get(cell, 0.0)

    def _ran(self, group: _Group, cell: Cell) -> float:
        """The share of its most passes `cell`'s batches have run so far; before any said, the share
        the group's other such cells ran (the same attack on the same model); else 1."""
        images, shared = group.realized.get(cell, (0, 0.0))
        if not images:
            images = sum(n for c, (n, _) in group.realized.items() if c.eps > 0)  # eps 0 runs no pass
            shared = sum(r for c, (_, r) in group.realized.items() if c.eps > 0)
        return shared / images if images else 1.0

    def _realized(self, group: _Group, cell: Cell, n: int, share: float) -> None:
        """A batch of `cell`, an attack known only within bounds, ran `share` of its most passes:
        each such cell of the group is expected to run the share its batches so far ran on average
        (a cell yet to run, the group's: `_ran`), and the group's estimate and the bar's total
        shrink by the rest (or grow back), never below what the bar has counted of the group. So
        "left" follows what the attack turns out to cost on this model (AutoAttack's later members
        run only on the images the earlier ones left)."""
        images, shared = group.realized.get(cell, (0, 0.0))
        group.realized[cell] = (images + n, shared + n * share)
        for each in group.bounded.union(group.realized):
            expected = self._whole(group, each) * self._ran(group, each)
            less = min((self._units(group, each) - expected) * group.per_work, group.seconds - group.counted)
            if group.per_work > 0 and less != 0:
                group.seconds -= less
                self.bar.total -= less
                group.saved[each] = group.saved.get(each, 0.0) + less / group.per_work

    def finished(self, label: str) -> None:
        """Group `label`'s result came back: the bar holds its whole estimate."""
        group = self.groups.pop(label, None)
        if group is not None:
            self._advance(group, group.seconds)

    def _advance(self, group: _Group, target: float) -> None:
        step = min(target - group.counted, self.bar.total - self.bar.n)
        if step > 0:
            group.counted += step
            self.bar.update(step)
