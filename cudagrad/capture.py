"""What cg.jit records while it captures a call: the hooks the rest of the library calls.

A capture is active in one thread while the function given to cg.jit runs for the
second time. Each hook below is a no-op (one list look-up) when no capture is
active. The library calls them where a captured call does something a replay must
repeat or must refuse:

- run_plan: kernels launched (recorded, with where each input buffer comes from);
- realize: a leaf rebound to its assigned value (replayed);
- host data turned into a tensor (refused on use, unless a provider recomputes it);
- a tensor's values read on the host (refused: the replay would reuse them);
- a collective between ranks (recorded: a replay runs it again, in order);
- a barrier between ranks (refused: a replay would not wait).
"""
from __future__ import annotations

import threading

# The captures being recorded (jit.py), by thread id; None while there are none, so that
# each hook costs one list look-up when nothing is captured.
ACTIVE: list = [None]
_active_lock = threading.Lock()


class JitError(RuntimeError):
    """A function given to cg.jit does something a replay could not repeat faithfully."""


def current():
    """The active capture of this thread, or None."""
    captures = ACTIVE[0]
    return captures.get(threading.get_ident()) if captures is not None else None


def begin(capture) -> None:
    """Make capture this thread's active one (one at a time per thread)."""
    with _active_lock:
        captures = dict(ACTIVE[0] or {})
        if threading.get_ident() in captures:
            raise JitError("cg.jit: this thread is already capturing a function")
        captures[threading.get_ident()] = capture
        ACTIVE[0] = captures


def end() -> None:
    with _active_lock:
        captures = dict(ACTIVE[0] or {})
        captures.pop(threading.get_ident(), None)
        ACTIVE[0] = captures or None


def note_host_buffer(buffer) -> None:
    """A buffer filled from host data (cg.tensor, from_numpy, ...) during the capture."""
    capture = current()
    if capture is not None:
        capture.host_buffers[id(buffer)] = buffer


def note_host_value(tensor, compute) -> None:
    """tensor holds host data that compute() recomputes at each replay (an optimizer's
    per-step scalar): the replay uploads compute()'s value instead of the captured one."""
    capture = current()
    if capture is not None:
        capture.add_host_value(tensor, compute)


def note_replay_hook(hook) -> None:
    """hook() runs at each replay, before the host values are recomputed (an
    optimizer's step counter)."""
    capture = current()
    if capture is not None:
        capture.host_actions.append(("hook", hook))


def forbid(what: str) -> None:
    """Refuse work a replay would not repeat (reading values, collectives, ...)."""
    capture = current()
    if capture is not None:
        raise JitError(f"cg.jit: {what} inside a captured function; a replay runs only the "
                       "captured kernels and would reuse what this call saw. Move it out of the "
                       "function, or read the function's results after it returns")


def note_gradients(leaves) -> None:
    """backward() gives these leaves a gradient (or adds to theirs). Adding to one from
    before the call would read a value the replay cannot know: refused."""
    capture = current()
    if capture is None:
        return
    for leaf in leaves:
        had_gradient = leaf._grad is not None or leaf._pending_backward is not None
        if had_gradient and id(leaf) not in capture.gradients:
            raise JitError(f"cg.jit: backward() adds to a gradient (of a tensor of shape "
                           f"{list(leaf.shape)}) left from before the call; a replay starts with "
                           "no gradients: call zero_grad() inside the function")
        capture.gradients.add(id(leaf))


def forget_host_buffer(tensor) -> None:
    """tensor's host data is the same at every call (made from constants): a replay may
    keep the captured buffer."""
    capture = current()
    if capture is not None:
        node = tensor._node
        capture.host_buffers.pop(id(node.realized if node.realized is not None else node.arg.buffer),
                                 None)


def note_gradient_read(leaf) -> None:
    """An optimizer reads leaf's gradient. One made before the call came from a backward()
    the replay would not repeat (its inputs are that call's data): refused."""
    capture = current()
    if capture is None:
        return
    has_gradient = leaf._grad is not None or leaf._pending_backward is not None
    if has_gradient and id(leaf) not in capture.gradients:
        raise JitError(f"cg.jit: the function reads a gradient (of a tensor of shape "
                       f"{list(leaf.shape)}) computed before the call; a replay would reuse that "
                       "backward's data. Call backward() inside the function")


def note_collective(run, send, send_node, recv) -> None:
    """A collective read send (the buffer of send_node) and wrote recv; run(send, recv,
    stream=...) runs it again (stream None: the library's own)."""
    capture = current()
    if capture is not None:
        capture.collective(run, send, send_node, recv)
