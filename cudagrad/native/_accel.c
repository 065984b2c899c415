/* cudagrad's optional accelerator: the tiny-op hot path in C (issue 5).
 *
 * Each function here does what a Python function of the package does, with the same
 * objects and the same results; cudagrad/native/__init__.py says which. What they
 * save is the interpreter's per-call and per-attribute cost, which is most of a
 * 2x2 matmul's time. Anything unusual (another type, a capture by cg.jit, a debug
 * log, a deep graph) is handed back to the Python function, which stays the
 * reference.
 *
 * Node, Tensor, Storage and CpuBuffer are Python classes with __slots__: their
 * fields are read and written at the slot offsets their member descriptors give
 * (checked in configure), and instances are made with tp_alloc and every slot
 * filled, as __init__ would.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))
#define MAX_ARGS 16                 /* kernels with more parameters replay in Python */
#define SMALL_BUFFER_BYTES 4096     /* runtime/cpu.py: small buffers are array.array */
#define RELEASE_GIL_BYTES 65536     /* bigger kernels run without the GIL, as ctypes does */

/* ---- what configure() hands over (strong references, kept for the process) ---- */
static PyTypeObject *NodeType, *TensorType, *StorageType, *BufferType, *SlotType, *PendingType;
static PyObject *OP_BUFFER, *OP_CONST, *FLOAT32, *CPU, *ARRAY_TYPE, *ZERO_BYTES, *CODE_F;
static PyObject *NODES, *NODE_GLOBALS, *PLANS, *STATS, *ACTIVE, *ENVIRON, *DEBUG_KEY;
static PyObject *canonicalize_py, *realize_node_py, *data_py, *allocate_py, *make_node_py, *grad_py;
static PyObject *S_sweep_at, *S_sweep_nodes, *S_launched, *S_realized, *S_arg, *S_buffer, *S_ptr,
    *S_nbytes, *S_replay, *S_plan, *S_node_count, *S_inputs, *S_outputs, *S_written, *S_nodes,
    *S_leaves, *S_realize;
static Py_ssize_t N_op, N_srcs, N_arg, N_shape, N_dtype, N_device, N_realized;
static Py_ssize_t T_node, T_requires_grad, T_grad, T_pending_backward, T_pending, T_is_leaf;
static Py_ssize_t ST_buffer, ST_device, ST_owner, B_raw, B_nbytes, B_ptr, B_array, SL_realized;
static Py_ssize_t P_output, P_nodes, P_key, P_leaves, P_leaf_numbers;

static void set_slot(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    PyObject *old = SLOT(obj, offset);
    Py_XINCREF(value);
    SLOT(obj, offset) = value;
    Py_XDECREF(old);
}

/* The offset of a writable object slot of a class (its member descriptor says). */
static int slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name);
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a writable object slot", type->tp_name, name);
        return -1;
    }
    *offset = member->offset;
    return 0;
}

static int take(PyObject *config, const char *name, PyObject **target)
{
    PyObject *value = PyDict_GetItemString(config, name);
    if (value == NULL) {
        PyErr_Format(PyExc_KeyError, "configure: %s missing", name);
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(*target, value);
    return 0;
}

static PyObject *configure(PyObject *self, PyObject *config)
{
    if (!PyDict_Check(config)) return PyErr_Format(PyExc_TypeError, "configure: a dict");
    PyObject **targets[] = {(PyObject **)&NodeType, (PyObject **)&TensorType,
        (PyObject **)&StorageType, (PyObject **)&BufferType, (PyObject **)&SlotType,
        (PyObject **)&PendingType, &OP_BUFFER, &OP_CONST, &FLOAT32,
        &ARRAY_TYPE, &ZERO_BYTES, &NODES, &NODE_GLOBALS, &PLANS, &STATS, &ACTIVE, &ENVIRON,
        &canonicalize_py, &realize_node_py, &data_py, &allocate_py, &make_node_py, &grad_py};
    const char *names[] = {"Node", "Tensor", "Storage", "CpuBuffer", "Slot", "PendingBackward",
        "BUFFER", "CONST", "float32", "array", "zero_bytes", "nodes", "node_globals", "plans", "stats",
        "active", "environ", "canonicalize", "realize_node", "data", "allocate", "make_node", "grad"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (take(config, names[i], targets[i]) < 0) return NULL;
    PyTypeObject *types[] = {NodeType, TensorType, StorageType, BufferType, SlotType, PendingType};
    for (int i = 0; i < 6; i++)
        if (!PyType_Check(types[i])) return PyErr_Format(PyExc_TypeError, "configure: a class");
    if (!PyList_CheckExact(ACTIVE) || PyList_GET_SIZE(ACTIVE) != 1 || !PyDict_CheckExact(NODES)
        || !PyDict_CheckExact(PLANS) || !PyDict_CheckExact(STATS) || !PyDict_Check(NODE_GLOBALS))
        return PyErr_Format(PyExc_TypeError, "configure: unexpected tables");
    if (slot_offset(NodeType, "op", &N_op) || slot_offset(NodeType, "srcs", &N_srcs)
        || slot_offset(NodeType, "arg", &N_arg) || slot_offset(NodeType, "shape", &N_shape)
        || slot_offset(NodeType, "dtype", &N_dtype) || slot_offset(NodeType, "device", &N_device)
        || slot_offset(NodeType, "realized", &N_realized)
        || slot_offset(TensorType, "_node", &T_node)
        || slot_offset(TensorType, "requires_grad", &T_requires_grad)
        || slot_offset(TensorType, "_grad", &T_grad)
        || slot_offset(TensorType, "_pending_backward", &T_pending_backward)
        || slot_offset(TensorType, "_pending", &T_pending)
        || slot_offset(TensorType, "_is_leaf", &T_is_leaf)
        || slot_offset(StorageType, "buffer", &ST_buffer)
        || slot_offset(StorageType, "device", &ST_device)
        || slot_offset(StorageType, "owner", &ST_owner)
        || slot_offset(BufferType, "raw", &B_raw) || slot_offset(BufferType, "nbytes", &B_nbytes)
        || slot_offset(BufferType, "ptr", &B_ptr) || slot_offset(BufferType, "_array", &B_array)
        || slot_offset(SlotType, "realized", &SL_realized)
        || slot_offset(PendingType, "output", &P_output) || slot_offset(PendingType, "nodes", &P_nodes)
        || slot_offset(PendingType, "key", &P_key) || slot_offset(PendingType, "leaves", &P_leaves)
        || slot_offset(PendingType, "leaf_numbers", &P_leaf_numbers))
        return NULL;
    CPU = PyUnicode_InternFromString("cpu");
    CODE_F = PyUnicode_InternFromString("f");
    DEBUG_KEY = PyBytes_FromString("CUDAGRAD_DEBUG");
    S_sweep_at = PyUnicode_InternFromString("_sweep_at");
    S_sweep_nodes = PyUnicode_InternFromString("sweep_nodes");
    S_launched = PyUnicode_InternFromString("kernels_launched");
    S_realized = PyUnicode_InternFromString("realized");
    S_arg = PyUnicode_InternFromString("arg");
    S_buffer = PyUnicode_InternFromString("buffer");
    S_ptr = PyUnicode_InternFromString("ptr");
    S_nbytes = PyUnicode_InternFromString("nbytes");
    S_replay = PyUnicode_InternFromString("replay");
    S_plan = PyUnicode_InternFromString("plan");
    S_node_count = PyUnicode_InternFromString("node_count");
    S_inputs = PyUnicode_InternFromString("inputs");
    S_outputs = PyUnicode_InternFromString("outputs");
    S_written = PyUnicode_InternFromString("written");
    S_nodes = PyUnicode_InternFromString("nodes");
    S_leaves = PyUnicode_InternFromString("leaves");
    S_realize = PyUnicode_InternFromString("realize");
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* ---- objects made as their __init__ makes them ---- */
static PyObject *new_node(PyObject *op, PyObject *srcs, PyObject *arg, PyObject *shape,
                          PyObject *dtype, PyObject *device)
{
    PyObject *node = NodeType->tp_alloc(NodeType, 0);
    if (node == NULL) return NULL;
    set_slot(node, N_op, op);
    set_slot(node, N_srcs, srcs);
    set_slot(node, N_arg, arg);
    set_slot(node, N_shape, shape);
    set_slot(node, N_dtype, dtype);
    set_slot(node, N_device, device);
    set_slot(node, N_realized, Py_None);
    return node;
}

static void *data_address(PyObject *raw)
{
    Py_buffer view;
    if (PyObject_GetBuffer(raw, &view, PyBUF_SIMPLE) < 0) return NULL;
    void *address = view.buf;      /* an array.array is never resized once it is a buffer */
    PyBuffer_Release(&view);
    return address;
}

/* CpuBuffer(raw, nbytes, address) */
static PyObject *new_buffer(PyObject *raw, Py_ssize_t nbytes)
{
    void *address = data_address(raw);
    if (address == NULL) return NULL;
    PyObject *buffer = BufferType->tp_alloc(BufferType, 0);
    PyObject *size = PyLong_FromSsize_t(nbytes), *ptr = PyLong_FromVoidPtr(address);
    if (buffer == NULL || size == NULL || ptr == NULL) {
        Py_XDECREF(buffer); Py_XDECREF(size); Py_XDECREF(ptr);
        return NULL;
    }
    set_slot(buffer, B_raw, raw);
    SLOT(buffer, B_nbytes) = size;          /* the new references move into the slots */
    SLOT(buffer, B_ptr) = ptr;
    set_slot(buffer, B_array, Py_None);
    return buffer;
}

/* CpuDevice.allocate: a fresh zeroed array.array for small sizes, else the Python one */
static PyObject *allocate(Py_ssize_t nbytes)
{
    if (nbytes <= 0 || nbytes > SMALL_BUFFER_BYTES)
        return PyObject_CallFunction(allocate_py, "n", nbytes);
    PyObject *raw = PySequence_GetSlice(ZERO_BYTES, 0, nbytes);   /* slicing copies */
    if (raw == NULL) return NULL;
    PyObject *buffer = new_buffer(raw, nbytes);
    Py_DECREF(raw);
    return buffer;
}

/* ---- make_node (ir/node.py): hash-consed nodes ---- */
static PyObject *make_node(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyTuple_CheckExact(args[1]))
        return PyObject_Vectorcall(make_node_py, args, nargs, NULL);
    PyObject *op = args[0], *srcs = args[1];
    if (op == OP_BUFFER)                         /* every leaf is distinct */
        return new_node(op, srcs, args[2], args[3], args[4], args[5]);
    Py_ssize_t count = PyTuple_GET_SIZE(srcs);
    PyObject *key = PyTuple_New(5 + count);
    if (key == NULL) return NULL;
    for (int i = 0; i < 5; i++) {
        PyObject *part = i == 0 ? op : args[i + 1];
        Py_INCREF(part);
        PyTuple_SET_ITEM(key, i, part);
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *id = PyLong_FromVoidPtr(PyTuple_GET_ITEM(srcs, i));     /* id(src) */
        if (id == NULL) { Py_DECREF(key); return NULL; }
        PyTuple_SET_ITEM(key, 5 + i, id);
    }
    PyObject *ref = PyDict_GetItemWithError(NODES, key);
    if (ref == NULL && PyErr_Occurred()) { Py_DECREF(key); return NULL; }
    if (ref != NULL && PyWeakref_CheckRef(ref)) {
        PyObject *node = PyWeakref_GetObject(ref);        /* borrowed; None once dead */
        if (node != NULL && node != Py_None) {
            Py_INCREF(node);
            Py_DECREF(key);
            return node;
        }
    }
    PyObject *node = new_node(op, srcs, args[2], args[3], args[4], args[5]);
    PyObject *weak = node ? PyWeakref_NewRef(node, NULL) : NULL;
    if (weak == NULL || PyDict_SetItem(NODES, key, weak) < 0) {
        Py_XDECREF(weak); Py_XDECREF(node); Py_DECREF(key);
        return NULL;
    }
    Py_DECREF(weak);
    Py_DECREF(key);
    PyObject *sweep_at = PyDict_GetItemWithError(NODE_GLOBALS, S_sweep_at);
    if (sweep_at != NULL && PyDict_GET_SIZE(NODES) >= PyLong_AsSsize_t(sweep_at)) {
        PyObject *sweep = PyDict_GetItemWithError(NODE_GLOBALS, S_sweep_nodes);
        PyObject *done = sweep ? PyObject_CallNoArgs(sweep) : NULL;
        if (done == NULL) { Py_DECREF(node); return NULL; }
        Py_DECREF(done);
    }
    if (PyErr_Occurred()) { Py_DECREF(node); return NULL; }
    return node;
}

/* ---- canonicalize (realization.py): the structural key of a graph ---- */

/* node address -> its number: open addressing, sized for the graph as it grows */
typedef struct { PyObject *node; Py_ssize_t number; } Entry;
typedef struct { Entry *entries; size_t mask; Py_ssize_t used; Entry small[64]; } Numbering;

static size_t slot_of(PyObject *node, size_t mask)
{
    uint64_t hash = ((uint64_t)(uintptr_t)node >> 4) * 0x9E3779B97F4A7C15ull;
    return (size_t)(hash >> 32) & mask;
}

static Py_ssize_t number_of(Numbering *map, PyObject *node)
{
    for (size_t i = slot_of(node, map->mask);; i = (i + 1) & map->mask) {
        if (map->entries[i].node == node) return map->entries[i].number;
        if (map->entries[i].node == NULL) return -1;
    }
}

static int put_number(Numbering *map, PyObject *node, Py_ssize_t number)
{
    if (2 * (size_t)(map->used + 1) > map->mask + 1) {      /* keep it at most half full */
        size_t size = 2 * (map->mask + 1);
        Entry *grown = PyMem_Calloc(size, sizeof(Entry)), *old = map->entries;
        if (grown == NULL) { PyErr_NoMemory(); return -1; }
        for (size_t i = 0; i <= map->mask; i++)
            if (old[i].node != NULL) {
                size_t j = slot_of(old[i].node, size - 1);
                while (grown[j].node != NULL) j = (j + 1) & (size - 1);
                grown[j] = old[i];
            }
        if (old != map->small) PyMem_Free(old);
        map->entries = grown;
        map->mask = size - 1;
    }
    size_t i = slot_of(node, map->mask);
    while (map->entries[i].node != NULL) i = (i + 1) & map->mask;
    map->entries[i].node = node;
    map->entries[i].number = number;
    map->used++;
    return 0;
}

typedef struct { Numbering numbering; PyObject *nodes, *key; Py_ssize_t limit; } Walk;
enum { FAILED = -1, TOO_DEEP = -2, TOO_MANY = -3, NOT_A_NODE = -4 };
#define RECURSIVE_DEPTH 150       /* as realization.py: deeper graphs take its stack walk */

static Py_ssize_t append_node(Walk *walk, PyObject *node, PyObject *entry)
{
    Py_ssize_t number = PyList_GET_SIZE(walk->nodes);
    int failed = entry == NULL || put_number(&walk->numbering, node, number) < 0
        || PyList_Append(walk->nodes, node) < 0 || PyList_Append(walk->key, entry) < 0;
    Py_XDECREF(entry);
    return failed ? FAILED : number;
}

static Py_ssize_t visit(Walk *walk, PyObject *node, int depth)
{
    if (Py_TYPE(node) != NodeType) return NOT_A_NODE;
    Py_ssize_t number = number_of(&walk->numbering, node);
    if (number >= 0) return number;
    PyObject *op = SLOT(node, N_op), *srcs = SLOT(node, N_srcs), *arg = SLOT(node, N_arg);
    PyObject *shape = SLOT(node, N_shape), *dtype = SLOT(node, N_dtype);
    PyObject *realized = SLOT(node, N_realized);
    if (!op || !srcs || !arg || !shape || !dtype || !realized) return NOT_A_NODE;
    if (realized != Py_None || op == OP_BUFFER)             /* an input: shape and dtype only */
        return append_node(walk, node, PyTuple_Pack(2, shape, dtype));
    if (depth > RECURSIVE_DEPTH) return TOO_DEEP;
    if (!PyTuple_CheckExact(srcs)) return NOT_A_NODE;
    Py_ssize_t count = PyTuple_GET_SIZE(srcs);
    PyObject *numbers;
    if (count == 1) {
        Py_ssize_t source = visit(walk, PyTuple_GET_ITEM(srcs, 0), depth + 1);
        if (source < 0) return source;
        numbers = PyLong_FromSsize_t(source);
    } else {
        numbers = PyTuple_New(count);
        for (Py_ssize_t i = 0; numbers != NULL && i < count; i++) {
            Py_ssize_t source = visit(walk, PyTuple_GET_ITEM(srcs, i), depth + 1);
            PyObject *item = source >= 0 ? PyLong_FromSsize_t(source) : NULL;
            if (item == NULL) { Py_DECREF(numbers); return source < 0 ? source : FAILED; }
            PyTuple_SET_ITEM(numbers, i, item);
        }
    }
    if (numbers == NULL) return FAILED;
    if (walk->limit && PyList_GET_SIZE(walk->nodes) >= walk->limit) {
        Py_DECREF(numbers);
        return TOO_MANY;
    }
    /* a constant's value is baked into the kernel: its repr is the key (realization.py) */
    PyObject *arg_key = op == OP_CONST ? PyObject_Repr(arg) : (Py_INCREF(arg), arg);
    PyObject *entry = arg_key ? PyTuple_Pack(5, op, arg_key, numbers, shape, dtype) : NULL;
    Py_XDECREF(arg_key);
    Py_DECREF(numbers);
    return append_node(walk, node, entry);
}

/* (key, nodes); None past limit; Python's walk for whatever this one does not take */
static PyObject *canonicalize_walk(PyObject *targets, Py_ssize_t limit)
{
    Walk walk = {{NULL, 63, 0, {{0}}}, PyList_New(0), PyList_New(0), limit};
    walk.numbering.entries = walk.numbering.small;
    PyObject *result = NULL, *numbers = NULL, *key = NULL;
    Py_ssize_t status = 0;
    PyObject *sequence = PySequence_Fast(targets, "canonicalize: a list of nodes");
    if (sequence == NULL || walk.nodes == NULL || walk.key == NULL) goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    numbers = PyTuple_New(count);
    for (Py_ssize_t i = 0; numbers != NULL && i < count && status >= 0; i++) {
        status = visit(&walk, PySequence_Fast_GET_ITEM(sequence, i), 0);
        if (status >= 0) PyTuple_SET_ITEM(numbers, i, PyLong_FromSsize_t(status));
        if (status >= 0 && PyTuple_GET_ITEM(numbers, i) == NULL) status = FAILED;
    }
    if (numbers == NULL || status == FAILED) goto done;
    if (status == TOO_MANY) { result = Py_NewRef(Py_None); goto done; }
    if (status < 0) {                  /* too deep, or not our Node: the Python walk */
        result = PyObject_CallFunction(canonicalize_py, "On", targets, limit);
        goto done;
    }
    if (PyList_Append(walk.key, numbers) < 0 || (key = PyList_AsTuple(walk.key)) == NULL) goto done;
    result = PyTuple_Pack(2, key, walk.nodes);
done:
    if (walk.numbering.entries != walk.numbering.small) PyMem_Free(walk.numbering.entries);
    Py_XDECREF(sequence); Py_XDECREF(walk.nodes); Py_XDECREF(walk.key);
    Py_XDECREF(numbers); Py_XDECREF(key);
    return result;
}

static PyObject *canonicalize_graph(PyObject *self, PyObject *args)
{
    PyObject *targets;
    Py_ssize_t limit = 0;
    if (!PyArg_ParseTuple(args, "O|n:canonicalize", &targets, &limit)) return NULL;
    return canonicalize_walk(targets, limit);
}

/* ---- a plan's replay (replay.py): allocate, call each kernel, hand out the outputs ---- */
static void call_kernel(void *function, void **a, Py_ssize_t n)
{
    switch (n) {      /* every kernel parameter is a pointer (runtime/cpu.py's argtypes) */
    case 0: ((void (*)(void))function)(); break;
#define P void *
    case 1: ((void (*)(P))function)(a[0]); break;
    case 2: ((void (*)(P, P))function)(a[0], a[1]); break;
    case 3: ((void (*)(P, P, P))function)(a[0], a[1], a[2]); break;
    case 4: ((void (*)(P, P, P, P))function)(a[0], a[1], a[2], a[3]); break;
    case 5: ((void (*)(P, P, P, P, P))function)(a[0], a[1], a[2], a[3], a[4]); break;
    case 6: ((void (*)(P, P, P, P, P, P))function)(a[0], a[1], a[2], a[3], a[4], a[5]); break;
    case 7: ((void (*)(P, P, P, P, P, P, P))function)(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
        break;
    case 8: ((void (*)(P, P, P, P, P, P, P, P))function)(a[0], a[1], a[2], a[3], a[4], a[5], a[6],
                                                         a[7]); break;
    default: {        /* 9 to MAX_ARGS: padding pointers a kernel of fewer parameters ignores */
        void *p[MAX_ARGS] = {0};
        memcpy(p, a, (size_t)n * sizeof(void *));
        ((void (*)(P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P))function)(p[0], p[1], p[2], p[3],
            p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15]);
    }
#undef P
    }
}

/* a node's buffer: node.realized if computed, else node.arg.buffer (borrowed) */
static PyObject *input_of(PyObject *node)
{
    if (Py_TYPE(node) == NodeType) {
        PyObject *realized = SLOT(node, N_realized), *storage = SLOT(node, N_arg);
        if (realized != NULL && realized != Py_None) return realized;
        if (storage != NULL && Py_TYPE(storage) == StorageType && SLOT(storage, ST_buffer))
            return SLOT(storage, ST_buffer);
    }
    PyErr_SetString(PyExc_TypeError, "replay: an input node without a buffer");
    return NULL;
}

static int address_of(PyObject *buffer, void **address, Py_ssize_t *total)
{
    PyObject *ptr, *nbytes;
    if (Py_TYPE(buffer) == BufferType) {
        ptr = Py_XNewRef(SLOT(buffer, B_ptr));
        nbytes = Py_XNewRef(SLOT(buffer, B_nbytes));
    } else {
        ptr = PyObject_GetAttr(buffer, S_ptr);
        nbytes = ptr ? PyObject_GetAttr(buffer, S_nbytes) : NULL;
    }
    if (ptr != NULL && nbytes != NULL) {
        *address = PyLong_AsVoidPtr(ptr);
        *total += PyLong_AsSsize_t(nbytes);
    }
    Py_XDECREF(ptr); Py_XDECREF(nbytes);
    return PyErr_Occurred() ? -1 : 0;
}

/* replay(spec, nodes); spec = (steps, launches), a step = (address, ((index, nbytes), ...),
 * (input index, ...), program) */
static PyObject *replay(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[1]) || !PyTuple_CheckExact(args[0])
        || PyTuple_GET_SIZE(args[0]) != 2 || !PyTuple_CheckExact(PyTuple_GET_ITEM(args[0], 0)))
        return PyErr_Format(PyExc_TypeError, "replay(spec, nodes: list)");
    PyObject *steps = PyTuple_GET_ITEM(args[0], 0), *nodes = args[1];
    for (Py_ssize_t s = 0; s < PyTuple_GET_SIZE(steps); s++) {     /* replay.py's shape of a step */
        PyObject *step = PyTuple_GET_ITEM(steps, s);
        if (!PyTuple_CheckExact(step) || PyTuple_GET_SIZE(step) != 4
            || !PyTuple_CheckExact(PyTuple_GET_ITEM(step, 1))
            || !PyTuple_CheckExact(PyTuple_GET_ITEM(step, 2)))
            return PyErr_Format(PyExc_TypeError, "replay: a malformed step");
        PyObject *outputs = PyTuple_GET_ITEM(step, 1);
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(outputs); i++)
            if (!PyTuple_CheckExact(PyTuple_GET_ITEM(outputs, i))
                || PyTuple_GET_SIZE(PyTuple_GET_ITEM(outputs, i)) != 2)
                return PyErr_Format(PyExc_TypeError, "replay: a malformed output");
    }
    Py_ssize_t count = PyList_GET_SIZE(nodes), failed = 0;
    PyObject *small[64] = {0}, **made = count <= 64 ? small : PyMem_Calloc(count, sizeof(PyObject *));
    if (made == NULL) return PyErr_NoMemory();
    for (Py_ssize_t s = 0; s < PyTuple_GET_SIZE(steps) && !failed; s++) {
        PyObject *step = PyTuple_GET_ITEM(steps, s);
        PyObject *outputs = PyTuple_GET_ITEM(step, 1), *inputs = PyTuple_GET_ITEM(step, 2);
        void *pointers[MAX_ARGS];
        PyObject *held[MAX_ARGS];     /* each argument's buffer, alive while its kernel runs */
        Py_ssize_t n = 0, total = 0;
        if (PyTuple_GET_SIZE(outputs) + PyTuple_GET_SIZE(inputs) > MAX_ARGS) failed = 1;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(outputs) && !failed; i++) {
            PyObject *output = PyTuple_GET_ITEM(outputs, i);
            Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(output, 0));
            PyObject *buffer = allocate(PyLong_AsSsize_t(PyTuple_GET_ITEM(output, 1)));
            failed = buffer == NULL || index < 0 || index >= count;
            if (!failed) {
                Py_XSETREF(made[index], buffer);
                held[n] = Py_NewRef(buffer);
                failed = address_of(buffer, &pointers[n], &total) < 0;
                n++;
            } else Py_XDECREF(buffer);
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(inputs) && !failed; i++) {
            Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(inputs, i));
            failed = index < 0 || index >= count;
            PyObject *buffer = failed ? NULL : made[index] ? made[index]
                                                           : input_of(PyList_GET_ITEM(nodes, index));
            failed = buffer == NULL;
            if (!failed) {
                held[n] = Py_NewRef(buffer);
                failed = address_of(buffer, &pointers[n], &total) < 0;
                n++;
            }
        }
        if (!failed) {
            void *function = PyLong_AsVoidPtr(PyTuple_GET_ITEM(step, 0));
            if (total > RELEASE_GIL_BYTES) {
                Py_BEGIN_ALLOW_THREADS
                call_kernel(function, pointers, n);
                Py_END_ALLOW_THREADS
            } else {
                call_kernel(function, pointers, n);
            }
        }
        for (Py_ssize_t i = 0; i < n; i++) Py_DECREF(held[i]);
    }
    for (Py_ssize_t index = 0; index < count && !failed; index++) {
        if (made[index] == NULL) continue;
        PyObject *node = PyList_GET_ITEM(nodes, index);
        if (Py_TYPE(node) == NodeType) set_slot(node, N_realized, made[index]);
        else failed = PyObject_SetAttr(node, S_realized, made[index]) < 0;    /* a _Slot */
    }
    if (!failed) {        /* STATS["kernels_launched"] += launches */
        PyObject *before = PyDict_GetItemWithError(STATS, S_launched);
        PyObject *after = before ? PyNumber_Add(before, PyTuple_GET_ITEM(args[0], 1)) : NULL;
        failed = after == NULL || PyDict_SetItem(STATS, S_launched, after) < 0;
        Py_XDECREF(after);
    }
    for (Py_ssize_t index = 0; index < count; index++) Py_XDECREF(made[index]);
    if (made != small) PyMem_Free(made);
    if (failed && !PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "replay: a bad plan");
    return failed ? NULL : Py_NewRef(Py_None);
}

/* ---- Tensor.data (tensor.py) on the cpu, float32 ---- */
static PyObject *float_list(PyObject *buffer, PyObject *shape)
{
    if (shape == NULL || Py_TYPE(buffer) != BufferType || !PyTuple_CheckExact(shape)) return NULL;
    PyObject *raw = SLOT(buffer, B_raw);
    if (raw == NULL || Py_TYPE(raw) != (PyTypeObject *)ARRAY_TYPE) return NULL;
    Py_ssize_t count = 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(shape); i++) {
        Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, i));
        if (size < 0 || (size && count > PY_SSIZE_T_MAX / 4 / size)) { PyErr_Clear(); return NULL; }
        count *= size;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(raw, &view, PyBUF_SIMPLE) < 0) { PyErr_Clear(); return NULL; }
    PyObject *list = count * 4 <= view.len ? PyList_New(count) : NULL;
    const float *values = view.buf;
    for (Py_ssize_t i = 0; list != NULL && i < count; i++) {
        PyObject *value = PyFloat_FromDouble((double)values[i]);
        if (value == NULL) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, value);
    }
    PyBuffer_Release(&view);
    PyErr_Clear();        /* NULL: the Python property answers (it raises what is wrong) */
    return list;
}

static int debugging(void)
{
    return ENVIRON == Py_None || PyDict_Contains(ENVIRON, DEBUG_KEY) != 0;
}

/* realization.realize_node for a cpu node whose plan is known; Python's otherwise */
static int realize_node(PyObject *node)
{
    PyObject *plan = NULL, *targets = PyList_New(1);
    if (targets == NULL) return -1;
    PyList_SET_ITEM(targets, 0, Py_NewRef(node));
    PyObject *walked = canonicalize_walk(targets, 0);
    Py_DECREF(targets);
    if (walked == NULL) return -1;
    PyObject *plan_key = PyTuple_Pack(2, SLOT(node, N_device), PyTuple_GET_ITEM(walked, 0));
    if (plan_key != NULL) plan = PyDict_GetItemWithError(PLANS, plan_key);
    Py_XDECREF(plan_key);
    PyObject *result;
    if (plan != NULL) {
        Py_INCREF(plan);
        PyObject *replayer = PyObject_GetAttr(plan, S_replay);
        result = replayer ? PyObject_CallOneArg(replayer, PyTuple_GET_ITEM(walked, 1)) : NULL;
        Py_XDECREF(replayer);
        Py_DECREF(plan);
    } else {
        result = PyErr_Occurred() ? NULL : PyObject_CallOneArg(realize_node_py, node);
    }
    Py_DECREF(walked);
    Py_XDECREF(result);
    return result == NULL ? -1 : 0;
}

static PyObject *tensor_data(PyObject *self, PyObject *tensor)
{
    if (Py_TYPE(tensor) != TensorType || PyList_GET_ITEM(ACTIVE, 0) != Py_None
        || SLOT(tensor, T_pending) != Py_None)
        return PyObject_CallOneArg(data_py, tensor);
    PyObject *node = SLOT(tensor, T_node);
    if (node == NULL || Py_TYPE(node) != NodeType || SLOT(node, N_dtype) != FLOAT32
        || SLOT(node, N_device) != CPU || SLOT(node, N_realized) == NULL)
        return PyObject_CallOneArg(data_py, tensor);
    Py_INCREF(node);
    PyObject *buffer = SLOT(node, N_realized), *list = NULL;
    if (buffer == Py_None && SLOT(node, N_op) != OP_BUFFER) {
        if (debugging()) { Py_DECREF(node); return PyObject_CallOneArg(data_py, tensor); }
        if (realize_node(node) < 0) { Py_DECREF(node); return NULL; }
        buffer = SLOT(node, N_realized);
    }
    if (buffer == Py_None) {
        PyObject *storage = SLOT(node, N_arg);
        buffer = storage && Py_TYPE(storage) == StorageType ? SLOT(storage, ST_buffer) : NULL;
    }
    if (buffer != NULL) list = float_list(buffer, SLOT(node, N_shape));
    Py_DECREF(node);
    return list != NULL ? list : PyObject_CallOneArg(data_py, tensor);
}

/* ---- tensor(shape, flat list) of plain numbers (creation.py): a float32 cpu leaf ---- */
static PyObject *float32_leaf(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "float32_leaf(shape, data, requires_grad)");
    PyObject *shape = args[0], *data = args[1];
    if (!(PyList_CheckExact(data) || PyTuple_CheckExact(data)) || PySequence_Fast_GET_SIZE(data) == 0
        || !(PyList_CheckExact(shape) || PyTuple_CheckExact(shape)))
        Py_RETURN_NONE;                         /* not the short form: the general path */
    Py_ssize_t count = 1, length = PySequence_Fast_GET_SIZE(data);
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(shape); i++) {
        PyObject *size = PySequence_Fast_GET_ITEM(shape, i);
        Py_ssize_t value = PyLong_CheckExact(size) ? PyLong_AsSsize_t(size) : -1;
        if (value < 0 || (value && count > length / value)) { PyErr_Clear(); Py_RETURN_NONE; }
        count *= value;
    }
    if (count != length) Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < length; i++) {     /* floats, and ints exact in a double */
        PyObject *value = PySequence_Fast_GET_ITEM(data, i);
        if (PyFloat_CheckExact(value)) continue;
        int overflow = 0;
        long long number = PyLong_CheckExact(value) ? PyLong_AsLongLongAndOverflow(value, &overflow)
                                                    : (overflow = 1);
        if (overflow || number > (1LL << 53) || number < -(1LL << 53)) { PyErr_Clear(); Py_RETURN_NONE; }
    }
    PyObject *raw = PyObject_CallFunctionObjArgs(ARRAY_TYPE, CODE_F, data, NULL);
    PyObject *buffer = raw ? new_buffer(raw, 4 * count) : NULL;
    Py_XDECREF(raw);
    PyObject *storage = buffer ? StorageType->tp_alloc(StorageType, 0) : NULL;
    PyObject *node = NULL, *leaf = NULL, *owner = NULL, *dims = NULL, *empty = PyTuple_New(0);
    if (storage != NULL) {
        set_slot(storage, ST_buffer, buffer);
        set_slot(storage, ST_device, CPU);
        set_slot(storage, ST_owner, Py_None);
        dims = PySequence_Tuple(shape);
    }
    if (dims != NULL && empty != NULL) node = new_node(OP_BUFFER, empty, storage, dims, FLOAT32, CPU);
    if (node != NULL) leaf = TensorType->tp_alloc(TensorType, 0);
    if (leaf != NULL) {
        set_slot(leaf, T_node, node);
        set_slot(leaf, T_requires_grad, args[2]);
        set_slot(leaf, T_grad, Py_None);
        set_slot(leaf, T_pending_backward, Py_None);
        set_slot(leaf, T_pending, Py_None);
        set_slot(leaf, T_is_leaf, Py_True);
        owner = PyWeakref_NewRef(leaf, NULL);        /* where backward() accumulates */
    }
    if (owner != NULL) set_slot(storage, ST_owner, owner);
    else Py_CLEAR(leaf);
    Py_XDECREF(owner); Py_XDECREF(node); Py_XDECREF(dims); Py_XDECREF(empty);
    Py_XDECREF(storage); Py_XDECREF(buffer);
    return leaf;
}

/* Tensor(node): an op result or a gradient, no leaf, no grad required */
static PyObject *new_tensor(PyObject *node, PyObject *requires_grad, PyObject *is_leaf)
{
    PyObject *tensor = TensorType->tp_alloc(TensorType, 0);
    if (tensor == NULL) return NULL;
    set_slot(tensor, T_node, node);
    set_slot(tensor, T_requires_grad, requires_grad);
    set_slot(tensor, T_grad, Py_None);
    set_slot(tensor, T_pending_backward, Py_None);
    set_slot(tensor, T_pending, Py_None);
    set_slot(tensor, T_is_leaf, is_leaf);
    return tensor;
}

/* ---- PendingBackward.realize with its GradientPlan known (backward_cache.py) ---- */

/* each waiting leaf gets Tensor(Node(BUFFER, (), Storage(buffer, device), ...)) */
static int give_gradient(PyObject *leaf, PyObject *pending, PyObject *number, PyObject *slots)
{
    if (SLOT(leaf, T_pending_backward) != pending) return 0;       /* no longer waiting */
    set_slot(leaf, T_pending_backward, Py_None);
    if (number == Py_None) { set_slot(leaf, T_grad, Py_None); return 0; }
    Py_ssize_t index = PyLong_AsSsize_t(number);
    if (index < 0 || index >= PyList_GET_SIZE(slots)) return -1;
    PyObject *slot = PyList_GET_ITEM(slots, index), *node = SLOT(leaf, T_node);
    if (Py_TYPE(slot) != SlotType || Py_TYPE(node) != NodeType) return -1;
    PyObject *device = SLOT(node, N_device), *empty = PyTuple_New(0), *gradient = NULL;
    PyObject *storage = StorageType->tp_alloc(StorageType, 0), *grad_node = NULL;
    if (storage != NULL && empty != NULL) {
        set_slot(storage, ST_buffer, SLOT(slot, SL_realized));
        set_slot(storage, ST_device, device);
        set_slot(storage, ST_owner, Py_None);
        grad_node = new_node(OP_BUFFER, empty, storage, SLOT(node, N_shape), SLOT(node, N_dtype), device);
    }
    if (grad_node != NULL) gradient = new_tensor(grad_node, Py_False, Py_False);
    if (gradient != NULL) set_slot(leaf, T_grad, gradient);
    Py_XDECREF(empty); Py_XDECREF(storage); Py_XDECREF(grad_node);
    if (gradient == NULL) return -1;
    Py_DECREF(gradient);
    return 0;
}

/* realize_gradients(pending, known): None, or NotImplemented where Python must do it */
static PyObject *realize_gradients(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "realize_gradients(pending, known)");
    PyObject *pending = args[0], *known = args[1], *slots = NULL, *result = NULL, *replayer = NULL;
    PyObject *nodes = PyObject_GetAttr(pending, S_nodes), *leaves = PyObject_GetAttr(pending, S_leaves);
    PyObject *plan = PyObject_GetAttr(known, S_plan), *count = PyObject_GetAttr(known, S_node_count);
    PyObject *inputs = PyObject_GetAttr(known, S_inputs), *outputs = PyObject_GetAttr(known, S_outputs);
    PyObject *written = PyObject_GetAttr(known, S_written);
    if (!nodes || !leaves || !plan || !count || !inputs || !outputs || !written) goto done;
    if (debugging() || !PyList_CheckExact(nodes) || !PyList_CheckExact(leaves)
        || !PyTuple_CheckExact(inputs) || !PyTuple_CheckExact(outputs) || !PyTuple_CheckExact(written))
        goto python;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(leaves); i++) {
        if (!PyWeakref_CheckRef(PyList_GET_ITEM(leaves, i))) goto python;
        PyObject *leaf = PyWeakref_GetObject(PyList_GET_ITEM(leaves, i));
        if (leaf != Py_None && Py_TYPE(leaf) != TensorType) goto python;
    }
    slots = PyList_New(PyLong_AsSsize_t(count));
    if (slots == NULL) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(slots); i++) PyList_SET_ITEM(slots, i, Py_NewRef(Py_None));
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(inputs); i++) {     /* (number, forward number) */
        PyObject *pair = PyTuple_GET_ITEM(inputs, i);
        Py_ssize_t number = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
        Py_ssize_t forward = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 1));
        if (number < 0 || number >= PyList_GET_SIZE(slots) || forward < 0
            || forward >= PyList_GET_SIZE(nodes)) goto python;
        PyList_SetItem(slots, number, Py_NewRef(PyList_GET_ITEM(nodes, forward)));
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(written); i++) {    /* a _Slot per output */
        Py_ssize_t number = PyLong_AsSsize_t(PyTuple_GET_ITEM(written, i));
        PyObject *slot = SlotType->tp_alloc(SlotType, 0);
        if (slot == NULL) goto done;
        set_slot(slot, SL_realized, Py_None);
        if (number < 0 || number >= PyList_GET_SIZE(slots)) { Py_DECREF(slot); goto python; }
        PyList_SetItem(slots, number, slot);
    }
    replayer = PyObject_GetAttr(plan, S_replay);
    PyObject *ran = replayer ? PyObject_CallOneArg(replayer, slots) : NULL;
    if (ran == NULL) goto done;
    Py_DECREF(ran);
    Py_ssize_t given = PyList_GET_SIZE(leaves) < PyTuple_GET_SIZE(outputs) ? PyList_GET_SIZE(leaves)
                                                                            : PyTuple_GET_SIZE(outputs);
    for (Py_ssize_t i = 0; i < given; i++) {
        PyObject *leaf = PyWeakref_GetObject(PyList_GET_ITEM(leaves, i));
        if (leaf == NULL) goto done;
        if (leaf == Py_None) continue;
        Py_INCREF(leaf);
        int failed = give_gradient(leaf, pending, PyTuple_GET_ITEM(outputs, i), slots);
        Py_DECREF(leaf);
        if (failed) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "realize_gradients: a bad plan");
            goto done;
        }
    }
    result = Py_NewRef(Py_None);
    goto done;
python:
    PyErr_Clear();
    result = Py_NewRef(Py_NotImplemented);
done:
    Py_XDECREF(nodes); Py_XDECREF(leaves); Py_XDECREF(plan); Py_XDECREF(count);
    Py_XDECREF(inputs); Py_XDECREF(outputs); Py_XDECREF(written); Py_XDECREF(slots);
    Py_XDECREF(replayer);
    return result;
}

/* Tensor.grad: a pending backward realized, then the gradient's .data */
static PyObject *tensor_grad(PyObject *self, PyObject *tensor)
{
    if (Py_TYPE(tensor) != TensorType || !SLOT(tensor, T_pending_backward) || !SLOT(tensor, T_grad))
        return PyObject_CallOneArg(grad_py, tensor);
    PyObject *pending = SLOT(tensor, T_pending_backward);
    if (pending != Py_None) {
        PyObject *done = PyObject_CallMethodNoArgs(pending, S_realize);
        if (done == NULL) return NULL;
        Py_DECREF(done);
    }
    PyObject *grad = SLOT(tensor, T_grad);
    if (grad == NULL || grad == Py_None) return Py_XNewRef(grad);
    Py_INCREF(grad);
    PyObject *values = tensor_data(NULL, grad);
    Py_DECREF(grad);
    return values;
}

/* ---- defer_backward (backward_cache.py): record a backward() of a small graph ---- */

/* The leaves under a walked graph that wait for a gradient: 1; 0 where the usual path
 * must build the gradient graph (a computed value under it, a leaf accumulating); -2
 * where Python's function must look (objects of other types); -1 an error */
static int waiting_leaves(PyObject *nodes, PyObject *numbers, PyObject *leaves)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(nodes); i++) {
        PyObject *node = PyList_GET_ITEM(nodes, i), *storage = SLOT(node, N_arg);
        if (SLOT(node, N_op) != OP_BUFFER) {
            if (SLOT(node, N_realized) != Py_None) return 0;
            continue;
        }
        if (Py_TYPE(storage) != StorageType) return -2;
        PyObject *owner_ref = SLOT(storage, ST_owner);
        if (owner_ref == NULL || owner_ref == Py_None) continue;
        if (!PyWeakref_CheckRef(owner_ref)) return -2;
        PyObject *owner = PyWeakref_GetObject(owner_ref);
        if (owner == Py_None) continue;
        if (Py_TYPE(owner) != TensorType || !SLOT(owner, T_requires_grad)) return -2;
        int requires = PyObject_IsTrue(SLOT(owner, T_requires_grad));
        if (requires < 0) return -1;
        if (!requires || SLOT(owner, T_node) != node) continue;
        if (SLOT(owner, T_grad) != Py_None || SLOT(owner, T_pending_backward) != Py_None) return 0;
        PyObject *number = PyLong_FromSsize_t(i);
        int failed = number == NULL || PyList_Append(numbers, number) < 0
            || PyList_Append(leaves, owner) < 0;
        Py_XDECREF(number);
        if (failed) return -1;
    }
    return PyList_GET_SIZE(leaves) > 0;
}

/* defer_backward(output, leaf_owners, limit) -> bool; NotImplemented: Python decides */
static PyObject *defer_backward(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_CheckExact(args[1]))
        return PyErr_Format(PyExc_TypeError, "defer_backward(output, leaf_owners, limit)");
    if (Py_TYPE(args[0]) != NodeType || PyList_GET_ITEM(ACTIVE, 0) != Py_None)
        return Py_NewRef(Py_NotImplemented);         /* a capture notes the gradients */
    PyObject *targets = PyList_New(1), *walked = NULL, *numbers = NULL, *leaves = NULL;
    PyObject *pending = NULL, *refs = NULL, *result = NULL;
    if (targets == NULL) return NULL;
    PyList_SET_ITEM(targets, 0, Py_NewRef(args[0]));
    walked = canonicalize_walk(targets, PyLong_AsSsize_t(args[2]));
    Py_DECREF(targets);
    if (walked == NULL) return NULL;
    if (walked == Py_None) { result = Py_NewRef(Py_False); goto done; }
    PyObject *nodes = PyTuple_GET_ITEM(walked, 1);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(nodes); i++)
        if (Py_TYPE(PyList_GET_ITEM(nodes, i)) != NodeType) {
            result = Py_NewRef(Py_NotImplemented);
            goto done;
        }
    numbers = PyList_New(0);
    leaves = PyList_New(0);
    int found = numbers && leaves ? waiting_leaves(nodes, numbers, leaves) : -1;
    if (found == -2) { result = Py_NewRef(Py_NotImplemented); goto done; }
    if (found <= 0) { result = found < 0 ? NULL : Py_NewRef(Py_False); goto done; }
    /* PendingBackward(output, nodes, key, tuple(leaf_numbers), leaves) */
    pending = PendingType->tp_alloc(PendingType, 0);
    refs = PyList_New(PyList_GET_SIZE(leaves));
    PyObject *leaf_numbers = PyList_AsTuple(numbers);
    if (pending == NULL || refs == NULL || leaf_numbers == NULL) { Py_XDECREF(leaf_numbers); goto done; }
    set_slot(pending, P_output, args[0]);
    set_slot(pending, P_nodes, nodes);
    set_slot(pending, P_key, PyTuple_GET_ITEM(walked, 0));
    SLOT(pending, P_leaf_numbers) = leaf_numbers;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(leaves); i++) {
        PyObject *ref = PyWeakref_NewRef(PyList_GET_ITEM(leaves, i), NULL);
        if (ref == NULL) goto done;
        PyList_SET_ITEM(refs, i, ref);
    }
    set_slot(pending, P_leaves, refs);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(leaves); i++) {
        PyObject *leaf = PyList_GET_ITEM(leaves, i), *id = PyLong_FromVoidPtr(leaf);
        set_slot(leaf, T_pending_backward, pending);
        if (id == NULL || PyDict_SetItem(args[1], id, PyList_GET_ITEM(refs, i)) < 0) {
            Py_XDECREF(id);
            goto done;
        }
        Py_DECREF(id);
    }
    result = Py_NewRef(Py_True);
done:
    Py_XDECREF(walked); Py_XDECREF(numbers); Py_XDECREF(leaves); Py_XDECREF(pending);
    Py_XDECREF(refs);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_O, "configure(dict): the classes and tables to work on"},
    {"make_node", (PyCFunction)(void (*)(void))make_node, METH_FASTCALL, "ir.node.make_node"},
    {"canonicalize", canonicalize_graph, METH_VARARGS, "realization.canonicalize"},
    {"replay", (PyCFunction)(void (*)(void))replay, METH_FASTCALL, "replay(spec, nodes)"},
    {"tensor_data", tensor_data, METH_O, "Tensor.data"},
    {"tensor_grad", tensor_grad, METH_O, "Tensor.grad"},
    {"defer_backward", (PyCFunction)(void (*)(void))defer_backward, METH_FASTCALL,
     "backward_cache.defer_backward without a capture"},
    {"realize_gradients", (PyCFunction)(void (*)(void))realize_gradients, METH_FASTCALL,
     "PendingBackward.realize with its GradientPlan known"},
    {"float32_leaf", (PyCFunction)(void (*)(void))float32_leaf, METH_FASTCALL,
     "float32_leaf(shape, data, requires_grad): a cpu leaf, or None outside the short form"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_accel", NULL, -1, methods, NULL,
                                    NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__accel(void) { return PyModule_Create(&module); }
