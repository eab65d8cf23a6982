"""Device functions of the CUDA kernels.

The numeric formulas shared with the CPU -- the Chan merge, ``1/sqrt(var+eps)``,
ReLU, the chunk partition and the gradient formulas -- are the CPU's own Python
sources compiled with ``cuda.jit(device=True)``, so both devices compute them
with the same arithmetic.  The rest is GPU-specific: per-thread moments and the
block-level merge tree in shared memory.

Values are converted to float64 explicitly where they are loaded: kernels then
accumulate and normalise in float64 on the GPU and in the CUDA simulator alike
(where NumPy's scalar rules would otherwise keep float32 arithmetic in float32).
"""

from numba import cuda, float64

from .. import _welford
from .._cpu import _primitives


def _twin(fn):
    """``fn`` (plain Python) compiled as a CUDA device function."""
    return cuda.jit(device=True)(fn)


#: Elements of its walk that a thread loads before it uses any (loads in flight per thread).
UNROLL = 4


chan_merge = _twin(_welford.chan_merge)
inverse_std = _twin(_welford.inverse_std)
relu = _twin(_welford.relu)
chunk_bounds = _twin(_primitives.chunk_bounds.py_func)
upstream_grad = _twin(_primitives.upstream_grad.py_func)
input_grad_coefficients = _twin(_primitives.input_grad_coefficients.py_func)
input_grad_value = _twin(_primitives.input_grad_value.py_func)


@cuda.jit(device=True)
def accumulate(n, shift, s1, s2, v):
    """Add ``v`` to a thread's shifted sums: ``s1 = sum(x - shift)``, ``s2 = sum((x - shift)**2)``.

    The shift is the thread's first value.  Then ``(mean - shift)**2 <= m2``
    for the thread's values, so the rounding error of ``s2 - s1**2 / n`` is
    within ``n`` ulps of ``m2``: as stable as Welford without a division per
    element (a thread sees a few hundred values at most).
    """
    if n == 0.0:
        shift = v
    d = v - shift
    return n + 1.0, shift, s1 + d, s2 + d * d


@cuda.jit(device=True)
def shifted_moments(n, shift, s1, s2):
    """``(count, mean, m2)`` from a thread's shifted sums (zeros for no values)."""
    if n == 0.0:
        return 0.0, 0.0, 0.0
    d = s1 / n
    return n, shift + d, max(s2 - s1 * d, 0.0)


@cuda.jit(device=True)
def combine(moments, a0, a1, a2, b0, b1, b2):
    """Merge two partials: ``(count, mean, m2)`` by Chan's formula, or add ``(sum, sum, 0)``."""
    if moments:
        return chan_merge(a0, a1, a2, b0, b1, b2)
    return a0 + b0, a1 + b1, 0.0


@cuda.jit(device=True)
def block_reduce(sh, t, lane, width, height, moments, a0, a1, a2):
    """Combine the partials of the ``height`` threads ``t = lane * width + column`` of a column.

    A fixed binary tree in shared memory ``sh`` (3 float64 per thread, dynamic
    shared memory): threads ``t`` and ``t + s * width`` merge for
    ``s = height/2, ..., 1``.  Every thread of the block must call it; the
    column's result is returned to its ``lane == 0`` thread.
    """
    T = width * height
    sh[t] = a0
    sh[T + t] = a1
    sh[2 * T + t] = a2
    cuda.syncthreads()
    s = height // 2
    while s >= 1:
        if lane < s:
            u = t + s * width
            b0, b1, b2 = combine(moments, sh[t], sh[T + t], sh[2 * T + t], sh[u], sh[T + u],
                                 sh[2 * T + u])
            sh[t] = b0
            sh[T + t] = b1
            sh[2 * T + t] = b2
        cuda.syncthreads()
        s //= 2
    return sh[t], sh[T + t], sh[2 * T + t]


@cuda.jit(device=True)
def store_partial(part, c, j, a0, a1, a2):
    part[c, j, 0] = a0
    part[c, j, 1] = a1
    part[c, j, 2] = a2


@cuda.jit(device=True)
def normalized(x, mean, k, shift, r, has_residual, use_relu):
    """``act((x - mean) * k + shift [+ r])`` in float64."""
    v = (x - mean) * k + shift
    if has_residual:
        v += r
    return relu(v) if use_relu else v


@cuda.jit(device=True)
def walk_start(t, o0, i0, w):
    """A block thread's first element ``(o, i)`` of a chunk of runs ``w`` elements wide."""
    return o0 + t // w, i0 + t % w


@cuda.jit(device=True)
def walk_next(o, i, i0, w, step_o, step_i, carry):
    """The element ``T`` places on (``T = step_o * w + step_i``): no division per element.

    ``o`` moves ``carry`` more when ``i`` wraps: 1 for a run index, or the
    flat offset from the end of a chunk's run to the start of the next.
    """
    o += step_o
    i += step_i
    if i >= i0 + w:
        i -= w
        o += carry
    return o, i


@cuda.jit(device=True)
def walk_ahead(p, walk, e, i):
    """Flat offsets of the walk's next ``UNROLL`` elements from ``(e, i)`` into ``p``.

    ``walk`` is ``(e, i, e1, i0, w, step_e, step_i, carry)`` (see ``_walks``).
    Returns ``(e, i, n)``: where the next step starts and how many offsets
    lie before ``e1``.  The others repeat the first (``e < e1`` on entry), so
    every load of a step can be issued unconditionally and all are in flight
    before the first is used.
    """
    _, _, e1, i0, w, step_e, step_i, carry = walk
    first = e
    n = 0
    for u in range(UNROLL):
        p[u] = first
        if e < e1:
            p[u] = e
            n += 1
        e, i = walk_next(e, i, i0, w, step_e, step_i, carry)
    return e, i, n


@cuda.jit(device=True)
def gather(v, a, p):
    """``v[u] = a[p[u]]`` in float64 for the ``UNROLL`` offsets of a step."""
    for u in range(UNROLL):
        v[u] = float64(a[p[u]])
