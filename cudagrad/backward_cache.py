"""backward() of a small graph, without building its gradient graph every time.

`loss.backward()` normally builds the gradient graph at once (a lazy node per
rule) and reading `a.grad` realizes it. For a graph seen before, most of that is
repeated work: the gradient graph, and so its kernels, follow from the forward
graph's structure alone. So backward() of a small graph (at most
SMALL_GRAPH_NODES nodes under the output, every input a leaf that has no
gradient yet) only records what it was asked, a PendingBackward. Then:

- reading `.grad` runs the gradient kernels planned the first time this forward
  structure was differentiated (a GradientPlan: the plan of the gradient graph,
  and which forward inputs feed it), straight from the forward inputs' buffers;
  the first time, it builds the gradient graph and realizes it the usual way,
  learning the GradientPlan as it goes;
- anything that needs the gradients as graph nodes (`grad_tensor`, an
  optimizer's fused update, a second backward() accumulating) materializes
  them: the gradient graph is built as backward() would have built it.

Either way the values are the same; only the Python work differs (the tiny-op
path of issue 5).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

from cudagrad.capture import ACTIVE as _CAPTURING
from cudagrad.capture import note_gradients
from cudagrad.ir import ops as ir
from cudagrad.ir.autograd import gradients, topological_order
from cudagrad.ir.node import Node, Op, Storage
from cudagrad.realization import Plan, canonicalize, plan_for, run_plan

# Bigger graphs build their gradient graph in backward() as before: optimizers fuse
# it with the update anyway, and the walk here would be spent for nothing.
SMALL_GRAPH_NODES = 48

_GRADIENT_PLANS: dict = {}
_BUFFER = Op.BUFFER
# the C accelerator's realize_gradients and defer_backward (cudagrad/native), once installed
_native_gradients = None
_native_defer = None


@dataclass
class GradientPlan:
    """How to compute the leaves' gradients of a forward structure from its inputs."""
    plan: Plan
    node_count: int                          # nodes in the gradient graph's numbering
    inputs: tuple[tuple[int, int], ...]      # (gradient graph number, forward number)
    outputs: tuple[int | None, ...]          # per leaf: its gradient's number (None: no gradient)
    written: tuple[int, ...]                 # every number a kernel of the plan writes


class _Slot:
    """Stands in for an output node when a GradientPlan replays: receives the buffer."""
    __slots__ = ("realized",)

    def __init__(self):
        self.realized = None


class PendingBackward:
    """A backward() not yet turned into gradient nodes or values."""
    __slots__ = ("output", "nodes", "key", "leaf_numbers", "leaves")

    def __init__(self, output: Node, nodes: list[Node], key: tuple, leaf_numbers: tuple[int, ...],
                 leaves: list):
        self.output = output
        self.nodes = nodes
        self.key = key
        self.leaf_numbers = leaf_numbers
        self.leaves = [weakref.ref(leaf) for leaf in leaves]

    def _waiting_leaves(self) -> list:
        """The leaves still waiting for this backward's gradient (None where not)."""
        waiting = []
        for ref in self.leaves:
            leaf = ref()
            waiting.append(leaf if leaf is not None and leaf._pending_backward is self else None)
        return waiting

    def gradient_nodes(self) -> list[Node | None]:
        """The gradient graph, as backward() builds it (one node per leaf, or None)."""
        output = self.output
        seed = ir.const(1, output.shape, output.dtype, output.device)
        order = topological_order(output)
        wrt = [self.nodes[number] for number in self.leaf_numbers]
        grads = []
        for grad in gradients(output, wrt, seed, order):
            if grad is not None and (grad.op is _BUFFER or grad.realized is not None):
                grad = ir.detach(grad)       # a gradient owns its buffer, never aliases data
            grads.append(grad)
        return grads

    def materialize(self) -> None:
        """Give each waiting leaf its gradient as a lazy node."""
        _give_gradients(self._waiting_leaves(), self.gradient_nodes())

    def realize(self) -> None:
        """Give each waiting leaf its gradient's value, by a GradientPlan when one is known."""
        plan_key = (self.output.device, self.key, self.leaf_numbers)
        known = _GRADIENT_PLANS.get(plan_key)
        if known is None:
            self._realize_and_learn(plan_key)
            return
        if _native_gradients is not None and _CAPTURING[0] is None:
            # the rest of this function, in C (cudagrad/native); NotImplemented: not taken
            # (CUDAGRAD_DEBUG logs the launches: run_plan below)
            if _native_gradients(self, known) is None:
                return
        slots: list = [None] * known.node_count
        nodes = self.nodes
        for number, forward_number in known.inputs:
            slots[number] = nodes[forward_number]
        for number in known.written:
            slots[number] = _Slot()
        run_plan(known.plan, slots)
        for leaf, number in zip(self._waiting_leaves(), known.outputs):
            if leaf is None:
                continue
            leaf._pending_backward = None
            if number is None:
                leaf._grad = None
                continue
            node = leaf._node
            device = node.device
            leaf._grad = Tensor(Node(_BUFFER, (), Storage(slots[number].realized, device),
                                     node.shape, node.dtype, device))

    def _realize_and_learn(self, plan_key) -> None:
        waiting = self._waiting_leaves()
        grads = self.gradient_nodes()
        targets = [grad for grad in grads if grad is not None]
        if not targets:                  # no gradient reaches any leaf (all under detach)
            _give_gradients(waiting, grads)
            return
        key, nodes = canonicalize(targets)
        plan = plan_for(key, nodes, targets, self.output.device)
        number = {id(node): index for index, node in enumerate(nodes)}
        forward_inputs = {id(node): index for index, node in enumerate(self.nodes)
                          if node.op is _BUFFER or node.realized is not None}
        inputs = []
        learnable = True
        for index, node in enumerate(nodes):
            if node.op is _BUFFER or node.realized is not None:
                forward_number = forward_inputs.get(id(node))
                if forward_number is None:      # reads a value made since: not this structure's plan
                    learnable = False
                    break
                inputs.append((index, forward_number))
        run_plan(plan, nodes)
        if learnable:
            outputs = tuple(number[id(grad)] if grad is not None else None for grad in grads)
            written = tuple(sorted({index for step in plan.steps for index in step.outputs}))
            _GRADIENT_PLANS[plan_key] = GradientPlan(plan, len(nodes), tuple(inputs), outputs,
                                                     written)
        _give_gradients(waiting, grads)


def _give_gradients(leaves: list, grads: list) -> None:
    """Each waiting leaf (None: no longer waiting) its gradient node, as a lazy tensor."""
    for leaf, grad in zip(leaves, grads):
        if leaf is not None:
            leaf._pending_backward = None
            leaf._grad = Tensor(grad) if grad is not None else None


def defer_backward(output: Node, leaf_owners: dict) -> bool:
    """Record a backward() of output instead of building its gradient graph, when the
    graph is small and every leaf under it still has no gradient. False: not taken
    (the caller builds the gradient graph as usual)."""
    if _native_defer is not None:          # this function in C (cudagrad/native), but in a capture
        deferred = _native_defer(output, leaf_owners, SMALL_GRAPH_NODES)
        if deferred is not NotImplemented:
            return deferred
    found = canonicalize([output], SMALL_GRAPH_NODES)
    if found is None:
        return False
    key, nodes = found
    leaf_numbers = []
    leaves = []
    for number, node in enumerate(nodes):
        if node.op is not _BUFFER:
            if node.realized is not None:       # a computed value under output: the usual path
                return False
            continue
        owner_ref = node.arg.owner
        if owner_ref is None:
            continue
        owner = owner_ref()
        if owner is None or not owner.requires_grad or owner._node is not node:
            continue
        if owner._grad is not None or owner._pending_backward is not None:
            return False                       # accumulating: the usual path adds the graphs
        leaf_numbers.append(number)
        leaves.append(owner)
    if not leaves:
        return False
    if _CAPTURING[0] is not None:
        note_gradients(leaves)
    pending = PendingBackward(output, nodes, key, tuple(leaf_numbers), leaves)
    for leaf, ref in zip(leaves, pending.leaves):
        leaf._pending_backward = pending
        leaf_owners[id(leaf)] = ref
    return True


# The Tensor layer imports this module as it finishes loading; these names are its own.
from cudagrad.tensor import Tensor  # noqa: E402
