"""Reliability, part 6: a fuzzer of random graphs against a numpy float64 reference.

Hypothesis draws a random program: 1 to 3 leaves of random shapes (rank 0 to
3), then 1 to 8 ops, each applied to a value already built: elementwise
functions, scalar and tensor arithmetic with numpy broadcasting (against a new
leaf of a broadcastable shape or an earlier value), reductions (sum, mean,
max, min over random axes, keepdim or not; softmax, log_softmax), views
(reshape, permute, transpose, slices with any step, int and None indexing,
expand, squeeze, flatten), matmul (plain, batched, broadcast batch), cat /
stack, and realizing an intermediate mid-graph. Each op is mirrored by a numpy float64 closure. The fuzzer checks

- the forward value of the last op against numpy (shape and values);
- the gradient of sum(out * W) (W a random constant) with respect to every
  leaf, from backward() or cg.grad(), against central finite differences of
  the numpy reference (coordinates at a kink, where two step sizes disagree,
  are skipped).

200 examples by default (derandomized, so a run is reproducible and its
kernels are in the disk cache the next time); `pytest -m fuzz` runs
CUDAGRAD_FUZZ_EXAMPLES (default 3000) fresh random examples per device.
Every failure found so far is pinned as a regression test at the bottom.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import cudagrad as cg

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DEFAULT_EXAMPLES = 200
FUZZ_EXAMPLES = int(os.environ.get("CUDAGRAD_FUZZ_EXAMPLES", "3000"))
MAX_DEPTH = 8
FUZZ_STATS = {"examples": 0, "ops": 0, "gradients_checked": 0}


def _cuda_ok() -> bool:
    try:
        return bool(cg.cuda_available()[0])
    except Exception:
        return False


# ----------------------------------------------------------------- values ---------

class Value:
    """A cudagrad tensor and the numpy float64 closure that computes the same value
    from the leaves' arrays; `value` is the reference at the drawn leaves."""

    def __init__(self, tensor, ref, label: str, env):
        self.tensor = tensor
        self.ref = ref
        self.label = label
        self.value = np.asarray(ref(env), dtype=np.float64)
        assert self.value.shape == tuple(tensor.shape), \
            f"fuzzer bug: {label}: reference shape {self.value.shape} != {tuple(tensor.shape)}"

    @property
    def shape(self):
        return tuple(self.tensor.shape)


class Program:
    def __init__(self, data, device: str, dtype):
        self.data = data
        self.device = device
        self.dtype = dtype
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
        self.leaves: list = []          # cudagrad leaves
        self.env: list = []             # their float64 arrays
        self.pool: list[Value] = []
        self.lines: list[str] = []

    def draw(self, strategy, label=None):
        return self.data.draw(strategy, label=label)

    def leaf(self, shape) -> Value:
        array = self.rng.standard_normal(shape)
        if self.dtype == cg.float32:
            array = array.astype(np.float32).astype(np.float64)     # exactly what cudagrad holds
        tensor = cg.tensor(array, dtype=self.dtype, device=self.device)
        index = len(self.leaves)
        self.leaves.append(tensor)
        self.env.append(array)
        value = Value(tensor, lambda env, i=index: env[i], f"leaf{index}{list(shape)}", self.env)
        self.lines.append(f"leaf{index} = randn({list(shape)})")
        return value

    def add(self, tensor, ref, text: str) -> Value:
        label = f"v{len(self.pool)}"
        value = Value(tensor, ref, label, self.env)
        self.pool.append(value)
        self.lines.append(f"{label} = {text}    # shape {list(value.shape)}")
        note(self.lines[-1])
        return value


def random_shape(program: Program, max_rank: int = 3):
    rank = program.draw(st.integers(0, max_rank), label="rank")
    return tuple(program.draw(st.integers(1, 4)) for _ in range(rank))


def broadcast_partner_shape(program: Program, shape):
    """A shape that broadcasts with `shape`: some dims set to 1, some leading dims
    dropped, or one leading dim added."""
    choice = program.draw(st.integers(0, 3), label="partner")
    if choice == 0:
        return shape
    if choice == 1:
        return tuple(1 if program.draw(st.booleans()) else size for size in shape)
    if choice == 2 and shape:
        return shape[program.draw(st.integers(1, len(shape))):]
    if len(shape) < 3:
        return (program.draw(st.integers(2, 3)),) + shape
    return shape


def broadcasts(a, b) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------- ops ------------
# Each op takes (program, x: Value) and returns a new Value, or None when it does
# not apply to x (its shape or values); guards keep values in the domain where
# float32 and float64 agree (no log of ~0, no exp overflow, no division by ~0).

def _elementwise(name, cg_fn, np_fn, guard=None):
    def op(p: Program, x: Value):
        if guard is not None and x.value.size and not guard(x.value):
            return None
        return p.add(cg_fn(x.tensor), lambda env, r=x.ref: np_fn(r(env)), f"{name}({x.label})")
    op.__name__ = name
    return op


def _small(limit):
    return lambda v: np.abs(v).max() < limit


def _positive(limit):
    return lambda v: v.min() > limit


def _away_from_zero(limit):
    return lambda v: np.abs(v).min() > limit


UNARY_OPS = [
    _elementwise("neg", lambda t: -t, lambda a: -a),
    _elementwise("exp", lambda t: t.exp(), np.exp, _small(8)),
    _elementwise("log", lambda t: t.log(), np.log, _positive(0.05)),
    _elementwise("log_sq1", lambda t: (t * t + 1.0).log(), lambda a: np.log(a * a + 1.0), _small(1e3)),
    _elementwise("sqrt", lambda t: t.sqrt(), np.sqrt, _positive(0.05)),
    _elementwise("tanh", lambda t: t.tanh(), np.tanh),
    _elementwise("sigmoid", lambda t: t.sigmoid(), lambda a: 1 / (1 + np.exp(-a))),
    _elementwise("sin", lambda t: t.sin(), np.sin, _small(100)),
    _elementwise("cos", lambda t: t.cos(), np.cos, _small(100)),
    _elementwise("relu", lambda t: t.relu(), lambda a: np.maximum(a, 0)),
    _elementwise("abs", lambda t: t.abs(), np.abs),
    _elementwise("square", lambda t: t ** 2, lambda a: a ** 2, _small(1e3)),
    _elementwise("cube", lambda t: t ** 3, lambda a: a ** 3, _small(100)),
    _elementwise("pow1.5", lambda t: t ** 1.5, lambda a: a ** 1.5, _positive(0.05)),
    _elementwise("scale", lambda t: t * -1.75, lambda a: a * -1.75),
    _elementwise("shift", lambda t: 0.5 - t, lambda a: 0.5 - a),
    _elementwise("rdiv", lambda t: 2.0 / t, lambda a: 2.0 / a, _away_from_zero(0.2)),
    _elementwise("div_scalar", lambda t: t / 3.0, lambda a: a / 3.0),
    _elementwise("clamp", lambda t: t.clamp(-0.5, 0.75), lambda a: np.clip(a, -0.5, 0.75)),
    _elementwise("maximum_scalar", lambda t: cg.maximum(t, 0.25), lambda a: np.maximum(a, 0.25)),
    # float32 -> float64 -> float32 only: float64 -> float32 -> float64 rounds, which finite
    # differences cannot follow (test_cast_roundtrip_rounds_to_float32 checks its values)
    _elementwise("cast_roundtrip", lambda t: t.double().float() if t.dtype == cg.float32 else t,
                 lambda a: a, _small(1e3)),
]


def _binary(name, cg_fn, np_fn, guard=None):
    def op(p: Program, x: Value):
        # the other operand: an earlier value that broadcasts, or a new leaf
        candidates = [v for v in p.pool if broadcasts(v.shape, x.shape)]
        if candidates and p.draw(st.booleans(), label="reuse"):
            y = p.draw(st.sampled_from(candidates), label="other")
        else:
            y = p.leaf(broadcast_partner_shape(p, x.shape))
        a, b = (x, y) if p.draw(st.booleans(), label="order") else (y, x)
        if guard is not None and not guard(a.value, b.value):
            return None
        return p.add(cg_fn(a.tensor, b.tensor), lambda env, ra=a.ref, rb=b.ref: np_fn(ra(env), rb(env)),
                     f"{name}({a.label}, {b.label})")
    op.__name__ = name
    return op


def _with_size(guard):
    return lambda a, b: (a.size == 0 or b.size == 0) or guard(a, b)


BINARY_OPS = [
    _binary("add", lambda a, b: a + b, lambda a, b: a + b),
    _binary("sub", lambda a, b: a - b, lambda a, b: a - b),
    _binary("mul", lambda a, b: a * b, lambda a, b: a * b, _with_size(lambda a, b: np.abs(a).max() * np.abs(b).max() < 1e4)),
    _binary("div", lambda a, b: a / b, lambda a, b: a / b, _with_size(lambda a, b: np.abs(b).min() > 0.2)),
    _binary("maximum", cg.maximum, np.maximum),
    _binary("minimum", cg.minimum, np.minimum),
    _binary("where_gt", lambda a, b: cg.where(a > b, a, b * 0.5), lambda a, b: np.where(a > b, a, b * 0.5)),
    _binary("pow", lambda a, b: a.abs() ** b.tanh(), lambda a, b: np.abs(a) ** np.tanh(b),
            _with_size(lambda a, b: np.abs(a).min() > 0.1 and np.abs(a).max() < 100)),
]


def _axes(p: Program, ndim: int):
    """None, one axis (maybe negative) or a tuple of distinct axes."""
    kind = p.draw(st.integers(0, 2), label="axes")
    if kind == 0 or ndim == 0:
        return None if ndim == 0 or kind == 0 else 0
    if kind == 1:
        return p.draw(st.integers(-ndim, ndim - 1), label="axis")
    axes = p.draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True), label="axis tuple")
    return tuple(axes)


def _np_reduce(function, a, axis, keepdim):
    if a.ndim == 0:
        return a if keepdim or axis is not None else a.reshape(1)
    out = function(a, axis=axis, keepdims=keepdim)
    if axis is None and not keepdim:
        out = np.reshape(out, (1,))       # cudagrad's full reductions have shape [1]
    return np.asarray(out)


def reduction(p: Program, x: Value):
    name = p.draw(st.sampled_from(["sum", "mean", "max", "min"]), label="reduction")
    axis = _axes(p, len(x.shape))
    keepdim = p.draw(st.booleans(), label="keepdim")
    np_fn = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}[name]
    tensor = getattr(x.tensor, name)(axis, keepdim=keepdim)
    return p.add(tensor, lambda env, r=x.ref: _np_reduce(np_fn, r(env), axis, keepdim),
                 f"{x.label}.{name}({axis}, keepdim={keepdim})")


def _np_softmax(a, axis, log):
    if a.ndim == 0:
        return np.asarray(0.0 if log else 1.0)
    shifted = a - a.max(axis=axis, keepdims=True)
    if log:
        return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def softmax(p: Program, x: Value):
    ndim = len(x.shape)
    axis = p.draw(st.integers(-max(ndim, 1), max(ndim, 1) - 1), label="axis")
    log = p.draw(st.booleans(), label="log")
    tensor = x.tensor.log_softmax(axis) if log else x.tensor.softmax(axis)
    return p.add(tensor, lambda env, r=x.ref: _np_softmax(r(env), axis, log),
                 f"{x.label}.{'log_softmax' if log else 'softmax'}({axis})")


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def reshape(p: Program, x: Value):
    numel = int(np.prod(x.shape, dtype=np.int64))
    rank = p.draw(st.integers(0 if numel == 1 else 1, 3), label="new rank")
    shape, remaining = [], numel
    for _ in range(max(rank - 1, 0)):
        size = p.draw(st.sampled_from(_divisors(remaining)), label="size")
        shape.append(size)
        remaining //= size
    if rank:
        shape.append(remaining)
    if shape and p.draw(st.booleans(), label="minus one"):
        shape[p.draw(st.integers(0, len(shape) - 1))] = -1
    shape = tuple(shape)
    return p.add(x.tensor.reshape(*shape) if shape else x.tensor.reshape(()),
                 lambda env, r=x.ref: np.reshape(r(env), shape), f"{x.label}.reshape{shape}")


def permute(p: Program, x: Value):
    if len(x.shape) < 2:
        return None
    order = tuple(p.draw(st.permutations(range(len(x.shape))), label="order"))
    if p.draw(st.booleans(), label="transpose"):
        d0, d1 = p.draw(st.integers(-len(x.shape), -1)), p.draw(st.integers(-len(x.shape), -1))
        return p.add(x.tensor.transpose(d0, d1), lambda env, r=x.ref: np.swapaxes(r(env), d0, d1),
                     f"{x.label}.transpose({d0}, {d1})")
    return p.add(x.tensor.permute(*order), lambda env, r=x.ref: np.transpose(r(env), order),
                 f"{x.label}.permute{order}")


def _slice_item(p: Program, size: int):
    kind = p.draw(st.integers(0, 3), label="index kind")
    if kind == 0:
        return slice(None)
    if kind == 1:
        return p.draw(st.integers(-size, size - 1), label="int index")
    start = p.draw(st.one_of(st.none(), st.integers(-size - 1, size + 1)), label="start")
    stop = p.draw(st.one_of(st.none(), st.integers(-size - 1, size + 1)), label="stop")
    step = p.draw(st.sampled_from([None, 1, 2, 3, -1, -2]), label="step")
    item = slice(start, stop, step)
    if len(range(*item.indices(size))) == 0:
        return slice(None, None, step)          # keep the fuzz graphs non-empty
    return item


def index(p: Program, x: Value):
    if not x.shape:
        item = p.draw(st.sampled_from([None, Ellipsis]), label="0-d index")
        key = (item,)
    else:
        key = tuple(_slice_item(p, size) for size in x.shape[:p.draw(st.integers(1, len(x.shape)))])
        if p.draw(st.booleans(), label="insert None"):
            at = p.draw(st.integers(0, len(key)))
            key = key[:at] + (None,) + key[at:]
        if p.draw(st.booleans(), label="ellipsis") and Ellipsis not in key:
            key = key + (Ellipsis,)
    return p.add(x.tensor[key], lambda env, r=x.ref: np.asarray(r(env)[key]), f"{x.label}[{key!r}]")


def expand(p: Program, x: Value):
    ndim = len(x.shape)
    if ndim >= 4:
        return None
    at = p.draw(st.integers(0, ndim), label="new axis")
    size = p.draw(st.integers(2, 3), label="expanded size")
    shape = x.shape[:at] + (size,) + x.shape[at:]
    # grow existing size-1 dims too, sometimes, and use -1 for kept dims
    shape = tuple(p.draw(st.integers(2, 3)) if s == 1 and p.draw(st.booleans()) else s for s in shape)
    spelled = tuple(-1 if i != at and s == x.shape[i - (i > at)] and s != 1 and p.draw(st.booleans()) else s
                    for i, s in enumerate(shape))
    tensor = x.tensor.unsqueeze(at).expand(*spelled)
    return p.add(tensor, lambda env, r=x.ref: np.broadcast_to(np.expand_dims(r(env), at), shape).copy(),
                 f"{x.label}.unsqueeze({at}).expand{spelled}")


def squeeze(p: Program, x: Value):
    choice = p.draw(st.integers(0, 2), label="squeeze kind")
    if choice == 0:
        return p.add(x.tensor.squeeze(), lambda env, r=x.ref: np.squeeze(r(env)), f"{x.label}.squeeze()")
    if choice == 1 and x.shape:
        start = p.draw(st.integers(0, len(x.shape) - 1), label="flatten start")
        shape = x.shape[:start] + (int(np.prod(x.shape[start:])),)
        return p.add(x.tensor.flatten(start), lambda env, r=x.ref: np.reshape(r(env), shape),
                     f"{x.label}.flatten({start})")
    at = p.draw(st.integers(-len(x.shape) - 1, len(x.shape)), label="unsqueeze at")
    return p.add(x.tensor.unsqueeze(at), lambda env, r=x.ref: np.expand_dims(r(env), at),
                 f"{x.label}.unsqueeze({at})")


def matmul(p: Program, x: Value):
    if not x.shape:
        return None
    a = x
    if len(x.shape) == 1:
        a = p.add(x.tensor.reshape(1, x.shape[0]), lambda env, r=x.ref: np.reshape(r(env), (1, -1)),
                  f"{x.label}.reshape(1, {x.shape[0]})")
    m = p.draw(st.integers(1, 4), label="columns")
    side = p.draw(st.integers(0, 2), label="matmul side")
    if side == 0:       # a @ leaf, the leaf maybe batched (broadcast batch dims)
        batch = a.shape[:-2]
        if batch and p.draw(st.booleans(), label="batched right"):
            right_batch = tuple(1 if p.draw(st.booleans()) else s for s in batch)
        else:
            right_batch = ()
        b = p.leaf(right_batch + (a.shape[-1], m))
        left, right = a, b
    elif side == 1:     # leaf @ a
        b = p.leaf((m, a.shape[-2]))
        left, right = b, a
    else:               # a @ a^T: both operands from the graph
        right = p.add(a.tensor.transpose(-2, -1), lambda env, r=a.ref: np.swapaxes(r(env), -2, -1),
                      f"{a.label}.transpose(-2, -1)")
        left = a
    return p.add(left.tensor @ right.tensor, lambda env, ra=left.ref, rb=right.ref: ra(env) @ rb(env),
                 f"{left.label} @ {right.label}")


def concatenate(p: Program, x: Value):
    if not x.shape:
        return None
    stack = p.draw(st.booleans(), label="stack")
    if stack:
        axis = p.draw(st.integers(-len(x.shape) - 1, len(x.shape)), label="stack axis")
        other = p.leaf(x.shape)
        return p.add(cg.stack([x.tensor, other.tensor], axis),
                     lambda env, ra=x.ref, rb=other.ref: np.stack([ra(env), rb(env)], axis),
                     f"stack([{x.label}, {other.label}], {axis})")
    axis = p.draw(st.integers(-len(x.shape), len(x.shape) - 1), label="cat axis")
    shape = list(x.shape)
    shape[axis] = p.draw(st.integers(1, 3), label="cat size")
    other = p.leaf(tuple(shape))
    first = p.draw(st.booleans(), label="cat order")
    parts = (x, other) if first else (other, x)
    return p.add(cg.cat([parts[0].tensor, parts[1].tensor], axis),
                 lambda env, ra=parts[0].ref, rb=parts[1].ref: np.concatenate([ra(env), rb(env)], axis),
                 f"cat([{parts[0].label}, {parts[1].label}], {axis})")


def realize(p: Program, x: Value):
    """Compute an intermediate now: later kernels read its buffer, gradients still flow."""
    x.tensor.realize()
    return p.add(x.tensor, x.ref, f"{x.label}.realize()")


STRUCTURAL_OPS = [reduction, softmax, reshape, permute, index, expand, squeeze, matmul, concatenate,
                  realize]
FAMILIES = {"unary": UNARY_OPS, "binary": BINARY_OPS, "structural": STRUCTURAL_OPS}
MAX_ELEMENTS = 256              # keeps finite differences cheap


def build_program(p: Program) -> Value:
    start = p.leaf(random_shape(p))
    p.pool.append(start)
    depth = p.draw(st.integers(1, MAX_DEPTH), label="depth")
    built = 0
    for _ in range(depth * 3):              # ops that do not apply are redrawn
        if built == depth:
            break
        x = p.pool[-1] if p.draw(st.integers(0, 3), label="pick") else p.draw(st.sampled_from(p.pool))
        family = p.draw(st.sampled_from(sorted(FAMILIES)), label="family")
        op = p.draw(st.sampled_from(FAMILIES[family]), label="op")
        result = op(p, x)
        if result is None:
            continue
        if result.value.size > MAX_ELEMENTS or not np.isfinite(result.value).all():
            p.pool.pop()
            p.lines.append("# (dropped: too big or not finite)")
            continue
        built += 1
    FUZZ_STATS["ops"] += built
    return p.pool[-1]


# ----------------------------------------------------------------- checking -------

def finite_difference(loss_of_env, env, index, eps):
    grad = np.zeros_like(env[index])
    flat = grad.reshape(-1)
    for i in range(flat.size):
        plus = [a.copy() for a in env]
        minus = [a.copy() for a in env]
        plus[index].reshape(-1)[i] += eps
        minus[index].reshape(-1)[i] -= eps
        flat[i] = (loss_of_env(plus) - loss_of_env(minus)) / (2 * eps)
    return grad


def check_program(data, device: str):
    dtype = data.draw(st.sampled_from([cg.float32, cg.float64]), label="dtype")
    p = Program(data, device, dtype)
    out = build_program(p)
    note("\n".join(p.lines))
    FUZZ_STATS["examples"] += 1
    float32 = dtype == cg.float32
    rtol, atol = (2e-4, 2e-4) if float32 else (1e-9, 1e-9)

    weights = np.random.default_rng(len(p.lines)).uniform(0.5, 1.5, size=out.shape)
    w_tensor = cg.tensor(weights.astype(np.float32) if float32 else weights, dtype=dtype,
                         device=device, requires_grad=False)
    if float32:
        weights = weights.astype(np.float32).astype(np.float64)
    loss = (out.tensor * w_tensor).sum()
    used = [leaf for leaf in p.leaves if leaf.requires_grad]
    if data.draw(st.booleans(), label="use cg.grad"):
        grads = cg.grad(loss, used)
    else:
        loss.backward()
        grads = [leaf.grad_tensor if leaf.grad_tensor is not None else None for leaf in used]
    lazy = [g for g in grads if g is not None]
    cg.realize(out.tensor, loss, *lazy)

    # forward
    got = np.asarray(out.tensor.numpy(), dtype=np.float64)
    assert got.shape == out.value.shape, f"shape {got.shape} != numpy {out.value.shape}"
    scale = max(1.0, float(np.abs(out.value).max())) if out.value.size else 1.0
    np.testing.assert_allclose(got, out.value, rtol=rtol, atol=atol * scale, err_msg="forward value")

    # gradients of sum(out * W), against finite differences of the float64 reference
    def loss_of_env(env):
        return float((np.asarray(out.ref(env)) * weights).sum())

    grad_rtol, grad_atol = (3e-3, 3e-3) if float32 else (1e-5, 1e-6)
    for index, (leaf, grad) in enumerate(zip(used, grads)):
        expected = finite_difference(loss_of_env, p.env, index, 1e-6)
        check = finite_difference(loss_of_env, p.env, index, 1e-5)
        smooth = np.abs(expected - check) <= 1e-4 * (1 + np.abs(expected))     # not at a kink
        actual = np.zeros(leaf.shape) if grad is None else np.asarray(grad.numpy(), dtype=np.float64)
        assert actual.shape == tuple(leaf.shape), f"gradient shape {actual.shape} != leaf {leaf.shape}"
        gscale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
        np.testing.assert_allclose(actual[smooth], expected[smooth], rtol=grad_rtol,
                                   atol=grad_atol * gscale, err_msg=f"gradient of leaf{index}")
        FUZZ_STATS["gradients_checked"] += int(smooth.sum())


@pytest.fixture(params=["cpu", "cuda"])
def fuzz_device(request):
    if request.param == "cuda" and not _cuda_ok():
        pytest.skip("cuda: no usable GPU")
    return request.param


_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


@settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, **_COMMON)
@given(data=st.data())
def test_random_graphs_match_numpy(fuzz_device, data):
    check_program(data, fuzz_device)


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, derandomize=False, **_COMMON)
@given(data=st.data())
def test_random_graphs_match_numpy_long(fuzz_device, data):
    check_program(data, fuzz_device)


# ----------------------------------------------------------------- regressions ----
# Failures the fuzzer found, each pinned as a plain test after its fix.


def test_cast_roundtrip_rounds_to_float32(fuzz_device):
    """Found by the fuzzer: float64 -> float32 -> float64 must round to float32.

    On the CPU, GCC 12.2 at -O2/-O3 drops the double->float->double pair when
    its SLP vectorizer pairs up two such statements (a kernel of a few elements,
    fully unrolled), so the value keeps its float64 bits: a miscompile (the
    same kernel with -fno-tree-slp-vectorize, or a loop the loop vectorizer
    handles, rounds). Fixed: a C kernel that narrows float64 to float32 is built
    without that vectorizer (a function attribute; other kernels keep it).
    """
    values = np.array([0.1257302210933933, 1 / 3])
    x = cg.tensor(values, dtype=cg.float64, device=fuzz_device)
    got = x.float().double().numpy()
    expected = values.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(got, expected)
    # a longer tensor goes through the loop vectorizer, which rounds correctly
    long_values = np.linspace(0.1, 0.9, 1000) / 3
    long = cg.tensor(long_values, dtype=cg.float64, device=fuzz_device).float().double().numpy()
    np.testing.assert_array_equal(long, long_values.astype(np.float32).astype(np.float64))


def test_float_comparison_selecting_doubles_in_a_sum(fuzz_device):
    """Found by the fuzzer: the gradient of maximum(|x|, y) for a float64 scalar x
    sums where(y <= |x|, w, 0) over y. With that loop laid out in 16 lanes, GCC 12
    at -O3 with AVX-512 miscompiled the float comparison selecting doubles; such
    mixed-width loops now stay plain."""
    rng = np.random.default_rng(0)
    y_values, weights = rng.standard_normal((4, 8)), rng.standard_normal((4, 8))
    x = cg.tensor(np.array(1.3), dtype=cg.float64, device=fuzz_device)
    y = cg.tensor(y_values, dtype=cg.float64, device=fuzz_device)
    w = cg.tensor(weights, dtype=cg.float64, device=fuzz_device, requires_grad=False)
    np.testing.assert_allclose(cg.where(y <= x, w, 0.0).sum().item(),
                               np.where(y_values <= 1.3, weights, 0).sum(), rtol=1e-12)
    (cg.maximum(x.abs(), y) * w).sum().backward()
    np.testing.assert_allclose(x.grad[0], (weights * (y_values <= 1.3)).sum(), rtol=1e-12)
