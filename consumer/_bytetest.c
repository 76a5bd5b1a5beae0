/* The byte test of consumer/runtime/routing.py (Relevance.select), for one poll batch, in C.
 *
 * Relevance.select_python is the specification: this function makes the same decision for every message (the
 * unit tests run both on generated batches and compare), without paying Python bytecode per message. It only
 * reads: each message's error(), topic() and value() are called through the C API, every byte comparison is
 * memcmp/memmem/memchr, nothing is decoded or copied.
 *
 *   select(messages, topic_class, fast, created, event_key, kinds, needles) -> (candidates, skipped, errors)
 *
 * messages     a list of objects with error(), topic() and value() (confluent_kafka.Message)
 * topic_class  topic -> 0 (no signal can come from it), 1 (byte-test its values) or 2 (every change is wanted);
 *              called once per run of messages from the same topic
 * fast         whether the event-type shortcut is sound for these rules
 * created      the prefix of a create/read in Debezium's compact shape
 * event_key    the "event_type":" key text
 * kinds        tuple of bytes: the event types a signal can have
 * needles      tuple of bytes: a value holding none of them cannot be a signal
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *name_error, *name_topic, *name_value;

typedef struct {
    const char *data;
    Py_ssize_t size;
} span_t;

static int contains(const char *hay, Py_ssize_t hay_len, span_t needle) {
    if (needle.size == 0) return 1;
    if (needle.size > hay_len) return 0;
    return memmem(hay, (size_t)hay_len, needle.data, (size_t)needle.size) != NULL;
}

/* 1 when the value cannot be a signal by its event type alone (the fast path of select_python) */
static int ruled_out_by_kind(const char *v, Py_ssize_t n, span_t created, span_t key, const span_t *kinds,
                             Py_ssize_t kind_count) {
    if (n < created.size || memcmp(v, created.data, (size_t)created.size) != 0) return 0;
    Py_ssize_t from = created.size; /* as select_python: value.find(_EVENT_TYPE, len(_CREATED)) */
    if (from > n || key.size == 0) return 0;
    const char *at = memmem(v + from, (size_t)(n - from), key.data, (size_t)key.size);
    if (at == NULL) return 0;
    const char *begin = at + key.size;
    const char *end = memchr(begin, '"', (size_t)(v + n - begin));
    if (end == NULL) return 0;
    Py_ssize_t len = end - begin;
    if (memchr(begin, '\\', (size_t)len) != NULL) return 0;
    for (Py_ssize_t i = 0; i < kind_count; i++) {
        if (kinds[i].size == len && memcmp(kinds[i].data, begin, (size_t)len) == 0) return 0;
    }
    return 1;
}

static int spans_of(PyObject *tuple, span_t **out, Py_ssize_t *count, const char *what) {
    if (!PyTuple_Check(tuple)) {
        PyErr_Format(PyExc_TypeError, "%s must be a tuple of bytes", what);
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    span_t *spans = PyMem_Malloc(sizeof(span_t) * (size_t)(n ? n : 1));
    if (spans == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (!PyBytes_Check(item)) {
            PyMem_Free(spans);
            PyErr_Format(PyExc_TypeError, "%s must be a tuple of bytes", what);
            return -1;
        }
        spans[i].data = PyBytes_AS_STRING(item);
        spans[i].size = PyBytes_GET_SIZE(item);
    }
    *out = spans;
    *count = n;
    return 0;
}

/* skipped[topic] += count */
static int add_skipped(PyObject *skipped, PyObject *topic, Py_ssize_t count) {
    if (count == 0) return 0;
    PyObject *key = topic != NULL ? topic : Py_None;
    PyObject *known = PyDict_GetItemWithError(skipped, key);
    Py_ssize_t total = count;
    if (known != NULL) {
        Py_ssize_t before = PyLong_AsSsize_t(known);
        if (before == -1 && PyErr_Occurred()) return -1;
        total += before;
    } else if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *value = PyLong_FromSsize_t(total);
    if (value == NULL) return -1;
    int rc = PyDict_SetItem(skipped, key, value);
    Py_DECREF(value);
    return rc;
}

static PyObject *select_batch(PyObject *self, PyObject *args) {
    PyObject *messages, *topic_class, *kinds_obj, *needles_obj;
    int fast;
    const char *created_data, *key_data;
    Py_ssize_t created_size, key_size;
    if (!PyArg_ParseTuple(args, "O!Opy#y#O!O!", &PyList_Type, &messages, &topic_class, &fast, &created_data,
                          &created_size, &key_data, &key_size, &PyTuple_Type, &kinds_obj, &PyTuple_Type,
                          &needles_obj))
        return NULL;
    span_t created = {created_data, created_size}, key = {key_data, key_size};
    span_t *kinds = NULL, *needles = NULL;
    Py_ssize_t kind_count = 0, needle_count = 0;
    PyObject *candidates = NULL, *skipped = NULL, *errors = NULL, *current = NULL, *result = NULL;
    if (spans_of(kinds_obj, &kinds, &kind_count, "kinds") < 0) goto done;
    if (spans_of(needles_obj, &needles, &needle_count, "needles") < 0) goto done;
    candidates = PyList_New(0);
    skipped = PyDict_New();
    errors = PyList_New(0);
    if (candidates == NULL || skipped == NULL || errors == NULL) goto done;

    long cls = 0;
    Py_ssize_t count = 0;
    Py_ssize_t total = PyList_GET_SIZE(messages);
    for (Py_ssize_t i = 0; i < total; i++) {
        PyObject *message = PyList_GET_ITEM(messages, i);
        Py_INCREF(message); /* the list may change under a callback */
        PyObject *error = PyObject_CallMethodNoArgs(message, name_error);
        if (error == NULL) goto fail_message;
        int failed = error != Py_None;
        Py_DECREF(error);
        if (failed) {
            if (PyList_Append(errors, message) < 0) goto fail_message;
            Py_DECREF(message);
            continue;
        }
        PyObject *topic = PyObject_CallMethodNoArgs(message, name_topic);
        if (topic == NULL) goto fail_message;
        if (topic == Py_None) { /* as select_python: message.topic() or "" */
            Py_DECREF(topic);
            topic = PyUnicode_FromString("");
            if (topic == NULL) goto fail_message;
        }
        int same = 0;
        if (current != NULL) {
            same = PyObject_RichCompareBool(topic, current, Py_EQ);
            if (same < 0) {
                Py_DECREF(topic);
                goto fail_message;
            }
        }
        if (!same) {
            if (current != NULL && add_skipped(skipped, current, count) < 0) {
                Py_DECREF(topic);
                goto fail_message;
            }
            count = 0;
            Py_XSETREF(current, topic); /* steals the reference */
            PyObject *klass = PyObject_CallOneArg(topic_class, topic);
            if (klass == NULL) goto fail_message;
            cls = PyLong_AsLong(klass);
            Py_DECREF(klass);
            if (cls == -1 && PyErr_Occurred()) goto fail_message;
        } else {
            Py_DECREF(topic);
        }
        PyObject *value = PyObject_CallMethodNoArgs(message, name_value);
        if (value == NULL) goto fail_message;
        int wanted = 0;
        if (value == Py_None) {
            wanted = 0;
        } else if (cls == 1) {
            if (!PyBytes_Check(value)) {
                wanted = 1; /* not what the client hands out: let the decoder say what it is */
            } else {
                const char *v = PyBytes_AS_STRING(value);
                Py_ssize_t n = PyBytes_GET_SIZE(value);
                if (!(fast && ruled_out_by_kind(v, n, created, key, kinds, kind_count))) {
                    for (Py_ssize_t j = 0; j < needle_count && !wanted; j++) wanted = contains(v, n, needles[j]);
                }
            }
        } else if (cls == 2) {
            wanted = 1;
        }
        Py_DECREF(value);
        if (wanted) {
            if (PyList_Append(candidates, message) < 0) goto fail_message;
        } else {
            count++;
        }
        Py_DECREF(message);
        continue;
    fail_message:
        Py_DECREF(message);
        goto done;
    }
    if (count && add_skipped(skipped, current, count) < 0) goto done;
    result = PyTuple_Pack(3, candidates, skipped, errors);

done:
    PyMem_Free(kinds);
    PyMem_Free(needles);
    Py_XDECREF(current);
    Py_XDECREF(candidates);
    Py_XDECREF(skipped);
    Py_XDECREF(errors);
    return result;
}

static PyMethodDef methods[] = {
    {"select", select_batch, METH_VARARGS, "The byte test over one poll batch (see consumer/runtime/routing.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bytetest", NULL, -1, methods};

PyMODINIT_FUNC PyInit__bytetest(void) {
    name_error = PyUnicode_InternFromString("error");
    name_topic = PyUnicode_InternFromString("topic");
    name_value = PyUnicode_InternFromString("value");
    if (name_error == NULL || name_topic == NULL || name_value == NULL) return NULL;
    return PyModule_Create(&module);
}
