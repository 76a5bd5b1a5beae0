/* A hold announcement of the plainest shape read in one pass over its bytes, in C.
 *
 * handlers/announcements.py's msgspec reader is the specification: this scanner answers only for messages that
 * reader answers for, and then exactly what it answers (tests/unit/test_announcements.py drives both, and the
 * full path, with generated messages and compares). It is stricter still: wherever a message is anything but the
 * plainest form Debezium's JsonConverter and PostgreSQL's jsonb write, it answers None and the msgspec reader
 * (then the models) decide. Plainest means:
 *
 *   - the envelope, its source block and its row: compact JSON (no whitespace), every key known to the reader
 *     and present at most once, every text printable ASCII without an escape, every integer within 64 bits;
 *   - the row's context: text whose only escapes are \" and \\, printable ASCII, holding a JSON object whose
 *     texts have no escape, whose numbers are short, nested at most 16 deep, each key the hold reads at most once;
 *   - the Kafka key: absent, or a flat object of plain texts, integers, booleans and nulls, naming neither
 *     "schema" nor "payload";
 *   - source.sequence: Debezium's usual ["digits",…] (nulls allowed).
 *
 *   scan(key, value, spec) -> None | (op, booking_id, restaurant_id, created_at, hold_id, table_ids, start,
 *                                      end, expires, adjacency)
 *
 * spec is (source, event_type, schema, table, severities, hold_id_key, table_ids_key, start_key, end_key,
 * expires_key, adjacency_path): bytes, except severities and adjacency_path (tuples of bytes). Every id
 * returned is a canonical uuid (lower-case, hyphenated); created_at, start, end are texts (their instants are
 * read in Python), expires a text or None, adjacency True, False or None. Nothing is decoded twice and only
 * the returned texts are made into objects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 16
#define MAX_TABLES 64
#define MAX_PATH 8
#define CONTEXT_BUFFER 16384

typedef struct {
    const char *data;
    Py_ssize_t size;
} span_t;

typedef struct {
    const char *p;
    const char *end;
} cur_t;

/* ---- tokens ---------------------------------------------------------------------------------------------- */

static int eat(cur_t *c, char ch) {
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static void spaces(cur_t *c) {
    while (c->p < c->end && *c->p == ' ') c->p++;
}

static int literal(cur_t *c, const char *word, Py_ssize_t n) {
    if (c->end - c->p >= n && memcmp(c->p, word, (size_t)n) == 0) {
        c->p += n;
        return 1;
    }
    return 0;
}

/* eight bytes at a time: whether a word may hold a byte that ends or spoils a plain run (a quote, a backslash, a
 * control character, DEL or a byte past ASCII); a word it flags is read byte by byte, so a false alarm costs
 * only time */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline uint64_t zero_byte(uint64_t x) { return (x - ONES) & ~x & HIGHS; }
static inline uint64_t special(uint64_t w) {
    return (w & HIGHS) | ((w - ONES * 0x20) & ~w & HIGHS) | zero_byte(w ^ (ONES * '"')) |
           zero_byte(w ^ (ONES * '\\')) | zero_byte(w ^ (ONES * 0x7f));
}

/* the first byte at or after p that is not plain (printable ASCII, neither quote nor backslash), or end */
static inline const char *plain_run(const char *p, const char *end) {
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        if (special(w)) break;
        p += 8;
    }
    while (p < end) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\' || ch < 0x20 || ch > 0x7e) break;
        p++;
    }
    return p;
}

/* a text of printable ASCII without an escape; *out is what lies between the quotes */
static int plain_text(cur_t *c, span_t *out) {
    if (!eat(c, '"')) return 0;
    const char *begin = c->p;
    c->p = plain_run(begin, c->end);
    if (c->p < c->end && *c->p == '"') {
        out->data = begin;
        out->size = c->p - begin;
        c->p++;
        return 1;
    }
    return 0;
}

/* the digits at the cursor, read past: how many */
static Py_ssize_t digits(cur_t *c) {
    const char *begin = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    return c->p - begin;
}

/* an optional minus, then an integer's digits without a leading zero, at most ``most`` of them */
static int integer_part(cur_t *c, Py_ssize_t most, const char **begin, Py_ssize_t *n) {
    eat(c, '-');
    *begin = c->p;
    *n = digits(c);
    return *n > 0 && *n <= most && !(*n > 1 && **begin == '0');
}

/* an integer of a signed 64-bit field: -?(0|[1-9][0-9]*) of magnitude at most 2**63 - 1 (nanoseconds since the
 * epoch have 19 digits), not followed by a fraction or an exponent */
static int short_integer(cur_t *c) {
    const char *begin;
    Py_ssize_t n;
    if (!integer_part(c, 19, &begin, &n)) return 0;
    if (n == 19 && memcmp(begin, "9223372036854775807", 19) > 0) return 0;
    return !(c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'));
}

/* a JSON number any parser reads alike: at most 18 integer digits, 18 fraction digits, a 2-digit exponent */
static int short_number(cur_t *c) {
    const char *begin;
    Py_ssize_t n;
    if (!integer_part(c, 18, &begin, &n)) return 0;
    if (eat(c, '.')) {
        n = digits(c);
        if (n == 0 || n > 18) return 0;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (!eat(c, '+')) eat(c, '-');
        n = digits(c);
        if (n == 0 || n > 2) return 0;
    }
    return 1;
}

static int is_null(cur_t *c) { return literal(c, "null", 4); }

static int equal(span_t a, span_t b) { return a.size == b.size && memcmp(a.data, b.data, (size_t)a.size) == 0; }

/* a span equal to a string literal */
#define equal_text(a, lit) ((a).size == (Py_ssize_t)sizeof(lit) - 1 && memcmp((a).data, lit, sizeof(lit) - 1) == 0)

static const unsigned char HEX[256] = {['0' ... '9'] = 1, ['a' ... 'f'] = 1};

/* PostgreSQL's text of a uuid: what str(UUID(text)) == text holds for */
static int canonical_uuid(span_t s) {
    if (s.size != 36) return 0;
    const unsigned char *u = (const unsigned char *)s.data;
    if (u[8] != '-' || u[13] != '-' || u[18] != '-' || u[23] != '-') return 0;
    unsigned ok = 1;
    for (int i = 0; i < 8; i++) ok &= HEX[u[i]];
    for (int i = 9; i < 13; i++) ok &= HEX[u[i]];
    for (int i = 14; i < 18; i++) ok &= HEX[u[i]];
    for (int i = 19; i < 23; i++) ok &= HEX[u[i]];
    for (int i = 24; i < 36; i++) ok &= HEX[u[i]];
    return (int)ok;
}

/* an optional integer field: an integer or null */
static int integer_or_null(cur_t *c) { return is_null(c) || short_integer(c); }

/* a text that may be null: *out.data is NULL for null */
static int text_or_null(cur_t *c, span_t *out) {
    if (is_null(c)) {
        out->data = NULL;
        out->size = 0;
        return 1;
    }
    return plain_text(c, out);
}

/* ---- the spec -------------------------------------------------------------------------------------------- */

typedef struct {
    span_t source, event_type, schema, table, hold_id_key, table_ids_key, start_key, end_key, expires_key;
    span_t severities[16];
    Py_ssize_t severity_count;
    span_t path[MAX_PATH];
    Py_ssize_t path_len;
} spec_t;

static int bytes_span(PyObject *obj, span_t *out) {
    if (!PyBytes_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "the hold scan's spec holds bytes");
        return 0;
    }
    out->data = PyBytes_AS_STRING(obj);
    out->size = PyBytes_GET_SIZE(obj);
    return 1;
}

static int spans_of(PyObject *tuple, span_t *out, Py_ssize_t cap, Py_ssize_t *count) {
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) > cap) {
        PyErr_SetString(PyExc_TypeError, "the hold scan's spec: a tuple of bytes too long or not a tuple");
        return 0;
    }
    *count = PyTuple_GET_SIZE(tuple);
    for (Py_ssize_t i = 0; i < *count; i++)
        if (!bytes_span(PyTuple_GET_ITEM(tuple, i), &out[i])) return 0;
    return 1;
}

static int read_spec(PyObject *tuple, spec_t *spec) {
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != 11) {
        PyErr_SetString(PyExc_TypeError, "the hold scan's spec is a tuple of 11");
        return 0;
    }
    span_t *singles[] = {&spec->source,      &spec->event_type,    &spec->schema,    &spec->table,
                         &spec->hold_id_key, &spec->table_ids_key, &spec->start_key, &spec->end_key,
                         &spec->expires_key};
    static const int at[] = {0, 1, 2, 3, 5, 6, 7, 8, 9};
    for (int i = 0; i < 9; i++)
        if (!bytes_span(PyTuple_GET_ITEM(tuple, at[i]), singles[i])) return 0;
    if (!spans_of(PyTuple_GET_ITEM(tuple, 4), spec->severities, 16, &spec->severity_count)) return 0;
    if (!spans_of(PyTuple_GET_ITEM(tuple, 10), spec->path, MAX_PATH, &spec->path_len)) return 0;
    return spec->path_len > 0 || (PyErr_SetString(PyExc_ValueError, "the adjacency path is empty"), 0);
}

/* ---- the Kafka key --------------------------------------------------------------------------------------- */

static int plain_key(const char *k, Py_ssize_t n) {
    cur_t c = {k, k + n};
    if (!eat(&c, '{')) return 0;
    if (eat(&c, '}')) return c.p == c.end;
    do {
        span_t name, text;
        if (!plain_text(&c, &name) || equal_text(name, "schema") || equal_text(name, "payload")) return 0;
        if (!eat(&c, ':')) return 0;
        if (!(plain_text(&c, &text) || literal(&c, "true", 4) || literal(&c, "false", 5) || is_null(&c) ||
              short_integer(&c)))
            return 0;
    } while (eat(&c, ','));
    return eat(&c, '}') && c.p == c.end;
}

/* ---- the context ----------------------------------------------------------------------------------------- */

typedef struct {
    const spec_t *spec;
    span_t hold_id, start, end, expires; /* expires.data NULL: absent or null */
    span_t tables[MAX_TABLES];
    Py_ssize_t table_count;
    int seen_hold_id, seen_tables, seen_start, seen_end, seen_expires;
    int seen_path[MAX_PATH];
    int adjacency; /* 0 false, 1 true, 2 neither (None) */
} context_t;

static int value(cur_t *c, int depth, context_t *ctx, Py_ssize_t level);

/* an object; level >= 0 when it is the value at the adjacency path's first ``level`` parts (level 0: the
 * context itself) */
static int object(cur_t *c, int depth, context_t *ctx, Py_ssize_t level) {
    if (depth > MAX_DEPTH || !eat(c, '{')) return 0;
    spaces(c);
    if (eat(c, '}')) return 1;
    const spec_t *spec = ctx->spec;
    do {
        spaces(c);
        span_t name;
        if (!plain_text(c, &name)) return 0;
        spaces(c);
        if (!eat(c, ':')) return 0;
        spaces(c);
        int on_path = level >= 0 && equal(name, spec->path[level]);
        if (on_path) {
            if (ctx->seen_path[level]++) return 0;
            if (level + 1 == spec->path_len) {
                ctx->adjacency = literal(c, "true", 4) ? 1 : literal(c, "false", 5) ? 0 : 2;
                if (ctx->adjacency == 2 && !value(c, depth + 1, ctx, -1)) return 0;
            } else if (c->p < c->end && *c->p == '{') {
                if (!object(c, depth + 1, ctx, level + 1)) return 0;
            } else {
                ctx->adjacency = 2;
                if (!value(c, depth + 1, ctx, -1)) return 0;
            }
        }
        if (level == 0) { /* the context's own keys: each one the hold reads, once, of its type */
            int taken = on_path;
            if (equal(name, spec->hold_id_key)) {
                if (taken++ || ctx->seen_hold_id++ || !plain_text(c, &ctx->hold_id) || !canonical_uuid(ctx->hold_id))
                    return 0;
            }
            if (equal(name, spec->table_ids_key)) {
                if (taken++ || ctx->seen_tables++ || !eat(c, '[')) return 0;
                spaces(c);
                do {
                    spaces(c);
                    if (ctx->table_count == MAX_TABLES) return 0;
                    span_t *table = &ctx->tables[ctx->table_count++];
                    if (!plain_text(c, table) || !canonical_uuid(*table)) return 0;
                    spaces(c);
                } while (eat(c, ','));
                if (!eat(c, ']')) return 0;
            }
            if (equal(name, spec->start_key)) {
                if (taken++ || ctx->seen_start++ || !plain_text(c, &ctx->start)) return 0;
            }
            if (equal(name, spec->end_key)) {
                if (taken++ || ctx->seen_end++ || !plain_text(c, &ctx->end)) return 0;
            }
            if (equal(name, spec->expires_key)) {
                if (taken++ || ctx->seen_expires++ || !text_or_null(c, &ctx->expires)) return 0;
            }
            if (!taken && !value(c, depth + 1, ctx, -1)) return 0;
        } else if (!on_path && !value(c, depth + 1, ctx, -1)) {
            return 0;
        }
        spaces(c);
    } while (eat(c, ','));
    return eat(c, '}');
}

static int value(cur_t *c, int depth, context_t *ctx, Py_ssize_t level) {
    if (depth > MAX_DEPTH || c->p >= c->end) return 0;
    span_t text;
    switch (*c->p) {
    case '{':
        return object(c, depth, ctx, level);
    case '[':
        c->p++;
        spaces(c);
        if (eat(c, ']')) return 1;
        do {
            spaces(c);
            if (!value(c, depth + 1, ctx, -1)) return 0;
            spaces(c);
        } while (eat(c, ','));
        return eat(c, ']');
    case '"':
        return plain_text(c, &text);
    case 't':
        return literal(c, "true", 4);
    case 'f':
        return literal(c, "false", 5);
    case 'n':
        return is_null(c);
    default:
        return short_number(c);
    }
}

/* the row's context: a text whose only escapes are \" and \\, unescaped into ``buffer``, then read */
static int context_text(cur_t *c, char *buffer, Py_ssize_t *length) {
    if (!eat(c, '"')) return 0;
    Py_ssize_t n = 0;
    for (;;) {
        const char *run = c->p;
        c->p = plain_run(run, c->end);
        Py_ssize_t size = c->p - run;
        if (size > CONTEXT_BUFFER - n || c->p >= c->end) return 0;
        memcpy(buffer + n, run, (size_t)size);
        n += size;
        char ch = *c->p++;
        if (ch == '"') {
            *length = n;
            return 1;
        }
        if (ch != '\\' || c->p >= c->end || (*c->p != '"' && *c->p != '\\') || n == CONTEXT_BUFFER) return 0;
        buffer[n++] = *c->p++;
    }
}

/* ---- the envelope ---------------------------------------------------------------------------------------- */

typedef struct {
    span_t id, created_at, source, event_type, severity, restaurant_id, booking_id, op, schema, table;
    char context[CONTEXT_BUFFER];
    Py_ssize_t context_length;
} found_t;

/* Debezium's usual source.sequence: "[\"digits\",null,…]" (what _PLAIN_SEQUENCE matches, as JSON text) */
static int plain_sequence(cur_t *c) {
    if (!literal(c, "\"[", 2)) return 0;
    do {
        if (is_null(c)) continue;
        if (!literal(c, "\\\"", 2)) return 0;
        digits(c);
        if (!literal(c, "\\\"", 2)) return 0;
    } while (eat(c, ','));
    return literal(c, "]\"", 2);
}

/* what a field's value may be */
typedef enum { TEXT, TEXT_OR_NULL, INTEGER, INTEGER_OR_NULL, TEXT_INTEGER_OR_NULL, NULL_ONLY, SEQUENCE, CONTEXT, ROW, SOURCE } kind_t;

/* a field of an object the scanner knows: its name, what its value may be, where a text is kept (offsetof in
 * found_t, or -1), whether it must be there */
typedef struct {
    const char *name;
    Py_ssize_t size;
    kind_t kind;
    Py_ssize_t keep;
    int required;
} field_t;

#define FIELD(name, kind, keep, required) {name, (Py_ssize_t)sizeof(name) - 1, kind, keep, required}
#define KEEP(member) ((Py_ssize_t)offsetof(found_t, member))

static const field_t ROW_FIELDS[] = {
    FIELD("id", TEXT, KEEP(id), 1),
    FIELD("created_at", TEXT, KEEP(created_at), 1),
    FIELD("source", TEXT, KEEP(source), 1),
    FIELD("event_type", TEXT, KEEP(event_type), 1),
    FIELD("severity", TEXT, KEEP(severity), 1),
    FIELD("context", CONTEXT, -1, 1),
    FIELD("restaurant_id", TEXT, KEEP(restaurant_id), 1),
    FIELD("booking_id", TEXT, KEEP(booking_id), 1),
};

static const field_t SOURCE_FIELDS[] = {
    FIELD("version", TEXT, -1, 1),
    FIELD("connector", TEXT, -1, 1),
    FIELD("name", TEXT, -1, 1),
    FIELD("ts_ms", INTEGER, -1, 1),
    FIELD("db", TEXT, -1, 1),
    FIELD("schema", TEXT, KEEP(schema), 1),
    FIELD("table", TEXT, KEEP(table), 1),
    FIELD("snapshot", TEXT, -1, 0),
    FIELD("sequence", SEQUENCE, -1, 0),
    FIELD("ts_us", INTEGER_OR_NULL, -1, 0),
    FIELD("ts_ns", INTEGER_OR_NULL, -1, 0),
    FIELD("txId", INTEGER_OR_NULL, -1, 0),
    FIELD("lsn", INTEGER_OR_NULL, -1, 0),
    FIELD("xmin", INTEGER_OR_NULL, -1, 0),
    FIELD("origin", TEXT_OR_NULL, -1, 0),
    FIELD("origin_lsn", TEXT_INTEGER_OR_NULL, -1, 0),
};

static const field_t ENVELOPE_FIELDS[] = {
    FIELD("before", NULL_ONLY, -1, 1),
    FIELD("after", ROW, -1, 1),
    FIELD("source", SOURCE, -1, 1),
    FIELD("op", TEXT, KEEP(op), 1),
    FIELD("ts_ms", INTEGER_OR_NULL, -1, 0),
    FIELD("ts_us", INTEGER_OR_NULL, -1, 0),
    FIELD("ts_ns", INTEGER_OR_NULL, -1, 0),
    FIELD("transaction", NULL_ONLY, -1, 0),
};

#define COUNT(table) ((int)(sizeof(table) / sizeof(table[0])))

static int fields(cur_t *c, found_t *f, const field_t *table, int count);

static int field_value(cur_t *c, found_t *f, const field_t *field) {
    span_t text;
    span_t *kept = field->keep >= 0 ? (span_t *)((char *)f + field->keep) : &text;
    switch (field->kind) {
    case TEXT:
        return plain_text(c, kept);
    case TEXT_OR_NULL:
        return text_or_null(c, kept);
    case INTEGER:
        return short_integer(c);
    case INTEGER_OR_NULL:
        return integer_or_null(c);
    case TEXT_INTEGER_OR_NULL: /* a failed text stops at a byte no integer begins with */
        return text_or_null(c, kept) || short_integer(c);
    case NULL_ONLY:
        return is_null(c);
    case SEQUENCE:
        return is_null(c) || plain_sequence(c);
    case CONTEXT:
        return context_text(c, f->context, &f->context_length);
    case ROW:
        return fields(c, f, ROW_FIELDS, COUNT(ROW_FIELDS));
    case SOURCE:
        return fields(c, f, SOURCE_FIELDS, COUNT(SOURCE_FIELDS));
    }
    return 0;
}

/* a compact object of the fields in ``table``: each one known, met at most once, of its kind; the required ones
 * all there. Fields are looked for from the one after the last found (Debezium writes them in the table's order:
 * one comparison each) */
static int fields(cur_t *c, found_t *f, const field_t *table, int count) {
    unsigned seen = 0, required = 0;
    for (int i = 0; i < count; i++) required |= (unsigned)table[i].required << i;
    if (!eat(c, '{')) return 0;
    int next = 0;
    do {
        span_t name;
        if (!plain_text(c, &name) || !eat(c, ':')) return 0;
        int found = -1;
        for (int k = 0; k < count && found < 0; k++) {
            int i = (next + k) % count;
            if (name.size == table[i].size && memcmp(name.data, table[i].name, (size_t)name.size) == 0) found = i;
        }
        if (found < 0 || (seen & (1u << found))) return 0; /* a field the reader does not know, or met twice */
        seen |= 1u << found;
        if (!field_value(c, f, &table[found])) return 0;
        next = found + 1;
    } while (eat(c, ','));
    return eat(c, '}') && (seen & required) == required;
}

static int envelope(cur_t *c, found_t *f) {
    return fields(c, f, ENVELOPE_FIELDS, COUNT(ENVELOPE_FIELDS)) && c->p == c->end;
}

/* as _first_event_type: the first "event_type":" text after the create prefix, unescaped */
static int first_event_type_is(const char *v, Py_ssize_t n, span_t kind) {
    static const char key[] = "\"event_type\":\"";
    static const char created[] = "{\"before\":null,\"after\":{";
    Py_ssize_t from = (Py_ssize_t)sizeof(created) - 1, key_len = (Py_ssize_t)sizeof(key) - 1;
    if (n < from) return 0;
    const char *at = memmem(v + from, (size_t)(n - from), key, (size_t)key_len);
    if (at == NULL) return 0;
    const char *begin = at + key_len;
    const char *end = memchr(begin, '"', (size_t)(v + n - begin));
    if (end == NULL || memchr(begin, '\\', (size_t)(end - begin)) != NULL) return 0;
    span_t first = {begin, end - begin};
    return equal(first, kind);
}

/* ---- scan ------------------------------------------------------------------------------------------------ */

static PyObject *text(span_t s) {
    PyObject *out = PyUnicode_New(s.size, 127);
    if (out != NULL) memcpy(PyUnicode_DATA(out), s.data, (size_t)s.size);
    return out;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    PyObject *key_obj, *spec_obj;
    const char *v;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "Oy#O!", &key_obj, &v, &n, &PyTuple_Type, &spec_obj)) return NULL;
    spec_t spec;
    if (!read_spec(spec_obj, &spec)) return NULL;
    if (key_obj != Py_None) {
        if (!PyBytes_Check(key_obj)) Py_RETURN_NONE;
        if (!plain_key(PyBytes_AS_STRING(key_obj), PyBytes_GET_SIZE(key_obj))) Py_RETURN_NONE;
    }
    static const char created[] = "{\"before\":null,\"after\":{";
    if (n < (Py_ssize_t)sizeof(created) - 1 || memcmp(v, created, sizeof(created) - 1) != 0) Py_RETURN_NONE;
    static found_t found; /* one scan at a time: the GIL is held throughout and no Python code runs */
    found_t *f = &found;
    memset(f, 0, offsetof(found_t, context));
    f->context_length = 0;
    PyObject *result = NULL;
    cur_t c = {v, v + n};
    if (!envelope(&c, f)) goto aside;
    if (!(equal_text(f->op, "c") || equal_text(f->op, "r"))) goto aside;
    if (!equal(f->source, spec.source) || !equal(f->event_type, spec.event_type)) goto aside;
    if (!equal(f->schema, spec.schema) || !equal(f->table, spec.table)) goto aside;
    int severity = 0;
    for (Py_ssize_t i = 0; i < spec.severity_count && !severity; i++) severity = equal(f->severity, spec.severities[i]);
    if (!severity || !first_event_type_is(v, n, spec.event_type)) goto aside;
    if (!canonical_uuid(f->booking_id) || !canonical_uuid(f->restaurant_id) || !canonical_uuid(f->id)) goto aside;

    context_t ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.spec = &spec;
    ctx.adjacency = 2;
    cur_t cc = {f->context, f->context + f->context_length};
    spaces(&cc);
    if (!object(&cc, 1, &ctx, 0)) goto aside;
    spaces(&cc);
    if (cc.p != cc.end) goto aside;
    if (!ctx.seen_hold_id || !ctx.seen_tables || !ctx.seen_start || !ctx.seen_end) goto aside;

    PyObject *tables = PyTuple_New(ctx.table_count);
    if (tables == NULL) goto done;
    for (Py_ssize_t i = 0; i < ctx.table_count; i++) {
        PyObject *table = text(ctx.tables[i]);
        if (table == NULL) {
            Py_DECREF(tables);
            goto done;
        }
        PyTuple_SET_ITEM(tables, i, table);
    }
    PyObject *adjacency = ctx.adjacency == 1 ? Py_True : ctx.adjacency == 0 ? Py_False : Py_None;
    PyObject *items[10] = {text(f->op),     text(f->booking_id), text(f->restaurant_id), text(f->created_at),
                           text(ctx.hold_id), tables,            text(ctx.start),        text(ctx.end),
                           NULL,            adjacency};
    Py_INCREF(adjacency);
    if (ctx.expires.data != NULL) {
        items[8] = text(ctx.expires);
    } else {
        items[8] = Py_None;
        Py_INCREF(Py_None);
    }
    int ok = 1;
    for (int i = 0; i < 10; i++) ok &= items[i] != NULL;
    if (ok) result = PyTuple_New(10);
    if (result == NULL) {
        for (int i = 0; i < 10; i++) Py_XDECREF(items[i]);
        goto done;
    }
    for (int i = 0; i < 10; i++) PyTuple_SET_ITEM(result, i, items[i]);
    goto done;
aside:
    result = Py_None;
    Py_INCREF(result);
done:
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "A hold announcement of the plainest shape, or None (see the module's header)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_holdscan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__holdscan(void) { return PyModule_Create(&module); }
