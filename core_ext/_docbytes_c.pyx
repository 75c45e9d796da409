# cython: language_level=3
"""Stored events to upstream documents and sealed bodies to summaries, compiled: mirrors
`_docbytes_py.py` (the reference) without decoding.

A small MessagePack reader walks the bytes over C types: it checks them as strictly as msgpack's
decoder would (UTF-8 text, no reserved byte, nothing truncated or trailing, no container as a map
key) and builds only what it hands back (the moves' SKUs and lots, a document's bytes, the types'
names). Anything it does not handle itself (an ext type, nesting deeper than it tracks, a leading
entry packed otherwise than the store packs it, an odd move) goes the reference's way, event by
event, so the results are the reference's, byte for byte.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from ._mpwrite cimport Writer, _pack_byte, _pack_int, _pack_length, _pack_raw

from . import _docbytes_py
from ._docbytes_py import HEAD_KEYS, INTERNAL_KEYS, BodyCounts, DocPacker, count_docs, to_doc  # noqa: F401 (the face)

FLAVOUR = "cython"

cdef enum:
    MAX_DEPTH = 32     # nesting tracked; deeper bytes go the reference's way
    MAX_KEYS = 64      # top-level entries of an event tracked; more go the reference's way

cdef enum Kind:
    K_NIL, K_BOOL, K_INT, K_UINT, K_FLOAT, K_STR, K_BIN, K_ARRAY, K_MAP


cdef struct Item:
    Kind kind
    Py_ssize_t start      # where its header starts
    Py_ssize_t data       # where its payload (text, bytes, first element) starts
    Py_ssize_t size       # payload bytes (text, bin, number), or elements (array, map entries)
    Py_ssize_t end        # where it ends (a container: where its header ends)
    bint canonical        # its header is the one msgpack's packer writes for this value
    int64_t value         # an integer's value (K_INT; K_UINT only when it fits)


cdef inline uint64_t _be(const uint8_t* p, int n) noexcept:
    cdef uint64_t v = 0
    cdef int k
    for k in range(n):
        v = (v << 8) | p[k]
    return v


cdef inline bint _uint_canonical(uint64_t v, int width) noexcept:
    # The packer writes a non-negative integer in the smallest of: fixint, uint8, 16, 32, 64.
    if v < 128:
        return width == 0
    if v < 256:
        return width == 1
    if v < 65536:
        return width == 2
    if v < 4294967296:
        return width == 4
    return width == 8


cdef inline bint _int_canonical(int64_t v, int width) noexcept:
    # ... and a negative one in the smallest of: negative fixint, int8, 16, 32, 64.
    if v >= -32:
        return width == 0
    if v >= -128:
        return width == 1
    if v >= -32768:
        return width == 2
    if v >= -2147483648:
        return width == 4
    return width == 8


cdef inline bint _len_canonical(Py_ssize_t n, int width, Py_ssize_t fixmax) noexcept:
    if n <= fixmax:
        return width == 0
    if n < 256 and fixmax == 31:   # str8 (with use_bin_type); containers have no 8-bit form
        return width == 1
    if n < 65536:
        return width == 2
    return width == 4


cdef inline int _read(const uint8_t* p, Py_ssize_t n, Py_ssize_t i, Item* it) noexcept:
    """The item at `i`: 0, or -1 when it is truncated or of a kind handled the reference's way
    (ext types, the reserved 0xc1)."""
    cdef uint8_t b
    cdef int w = 0
    cdef uint64_t u
    if i >= n:
        return -1
    b = p[i]
    it.start = i
    it.canonical = True
    if b <= 0x7f:
        it.kind = K_INT
        it.value = b
        it.data = it.end = i + 1
        it.size = 0
        return 0
    if b >= 0xe0:
        it.kind = K_INT
        it.value = <int64_t>b - 256
        it.data = it.end = i + 1
        it.size = 0
        return 0
    if b <= 0x8f or (0x90 <= b <= 0x9f):
        it.kind = K_MAP if b <= 0x8f else K_ARRAY
        it.size = b & 0x0f
        it.data = it.end = i + 1
        return 0
    if 0xa0 <= b <= 0xbf:
        it.kind = K_STR
        it.size = b & 0x1f
        it.data = i + 1
        it.end = it.data + it.size
        return 0 if it.end <= n else -1
    if b == 0xc0 or b == 0xc2 or b == 0xc3:
        it.kind = K_NIL if b == 0xc0 else K_BOOL
        it.value = b == 0xc3
        it.data = it.end = i + 1
        it.size = 0
        return 0
    if b == 0xca or b == 0xcb:
        it.kind = K_FLOAT
        it.size = 4 if b == 0xca else 8
        it.data = i + 1
        it.end = it.data + it.size
        return 0 if it.end <= n else -1
    if 0xcc <= b <= 0xd3:
        w = 1 << ((b - 0xcc) & 3)
        if i + 1 + w > n:
            return -1
        u = _be(p + i + 1, w)
        it.data = i + 1
        it.end = i + 1 + w
        it.size = w
        if b <= 0xcf:
            it.kind = K_UINT if u > <uint64_t>9223372036854775807 else K_INT
            it.value = <int64_t>u
            it.canonical = _uint_canonical(u, w)
        else:
            it.kind = K_INT
            if w == 1:
                it.value = <int64_t>(<signed char>u)
            elif w == 2:
                it.value = <int64_t>(<short>u)
            elif w == 4:
                it.value = <int64_t>(<int>u)
            else:
                it.value = <int64_t>u
            # The packer writes a non-negative value in the unsigned forms.
            it.canonical = it.value < 0 and _int_canonical(it.value, w)
        return 0
    if b == 0xc4 or b == 0xc5 or b == 0xc6 or b == 0xd9 or b == 0xda or b == 0xdb:
        w = 1 << ((b - 0xc4) if b <= 0xc6 else (b - 0xd9))
        if i + 1 + w > n:
            return -1
        it.kind = K_BIN if b <= 0xc6 else K_STR
        it.size = <Py_ssize_t>_be(p + i + 1, w)
        it.data = i + 1 + w
        it.end = it.data + it.size
        if it.kind == K_STR:
            it.canonical = _len_canonical(it.size, w, 31)
        return 0 if it.end <= n else -1
    if 0xdc <= b <= 0xdf:
        w = 2 if b == 0xdc or b == 0xde else 4
        if i + 1 + w > n:
            return -1
        it.kind = K_ARRAY if b <= 0xdd else K_MAP
        it.size = <Py_ssize_t>_be(p + i + 1, w)
        it.data = it.end = i + 1 + w
        it.canonical = _len_canonical(it.size, w, 15)
        return 0
    return -1   # 0xc1, ext types


cdef bint _utf8(const uint8_t* s, Py_ssize_t n) noexcept:
    """Valid UTF-8 as Python's strict decoder takes it (no surrogates, no overlong forms)."""
    cdef Py_ssize_t i = 0
    cdef uint8_t c, c1
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xc2 or c > 0xf4:
            return False
        if c < 0xe0:
            if i + 1 >= n or (s[i + 1] & 0xc0) != 0x80:
                return False
            i += 2
            continue
        if c < 0xf0:
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if (c1 & 0xc0) != 0x80 or (s[i + 2] & 0xc0) != 0x80:
                return False
            if (c == 0xe0 and c1 < 0xa0) or (c == 0xed and c1 > 0x9f):
                return False
            i += 3
            continue
        if i + 3 >= n:
            return False
        c1 = s[i + 1]
        if (c1 & 0xc0) != 0x80 or (s[i + 2] & 0xc0) != 0x80 or (s[i + 3] & 0xc0) != 0x80:
            return False
        if (c == 0xf0 and c1 < 0x90) or (c == 0xf4 and c1 > 0x8f):
            return False
        i += 4
    return True


cdef Py_ssize_t _skip(const uint8_t* p, Py_ssize_t n, Py_ssize_t i) noexcept:
    """Where the value at `i` ends, every byte of it checked; -1 when the reference must decide."""
    cdef Py_ssize_t left[MAX_DEPTH]
    cdef bint is_map[MAX_DEPTH]
    cdef int top = 0
    cdef Item it
    cdef bint key
    left[0] = 1
    is_map[0] = False
    while True:
        while left[top] == 0:
            if top == 0:
                return i
            top -= 1
        key = is_map[top] and left[top] % 2 == 0
        left[top] -= 1
        if _read(p, n, i, &it) < 0:
            return -1
        if it.kind == K_ARRAY or it.kind == K_MAP:
            if key or top + 1 >= MAX_DEPTH:
                return -1   # unhashable as a key; or deeper than tracked
            top += 1
            is_map[top] = it.kind == K_MAP
            left[top] = it.size * 2 if is_map[top] else it.size
            if left[top] > n - it.end:
                return -1   # more elements than bytes left
        elif it.kind == K_STR and not _utf8(p + it.data, it.size):
            return -1
        i = it.end


cdef inline bint _is(const uint8_t* p, Item* it, const char* text, Py_ssize_t size) noexcept:
    return it.kind == K_STR and it.size == size and memcmp(p + it.data, text, size) == 0


cdef inline str _text(const uint8_t* p, Item* it):
    return PyUnicode_DecodeUTF8(<const char*>(p + it.data), it.size, NULL)


# ---------------------------------------------------------------------------------------------
# An event's top-level entries

cdef struct Entries:
    int count
    Py_ssize_t key[MAX_KEYS]      # where each entry starts (its key's header)
    Py_ssize_t value[MAX_KEYS]    # where its value starts
    Py_ssize_t end[MAX_KEYS]      # where it ends
    Item keys[MAX_KEYS]
    int moves                     # the entry named "moves" (the last one so named), or -1
    bint canonical                # the map's header is the packer's


cdef int _entries(const uint8_t* p, Py_ssize_t n, Entries* e) noexcept:
    """The entries of a stored event (a map, nothing after it): 0, or -1 for the reference."""
    cdef Item it
    cdef Py_ssize_t i
    cdef int k
    if _read(p, n, 0, &it) < 0 or it.kind != K_MAP or it.size > MAX_KEYS:
        return -1
    e.count = <int>it.size
    e.canonical = it.canonical
    e.moves = -1
    i = it.end
    for k in range(e.count):
        e.key[k] = i
        if _read(p, n, i, &e.keys[k]) < 0 or e.keys[k].kind == K_ARRAY or e.keys[k].kind == K_MAP:
            return -1
        if e.keys[k].kind == K_STR and not _utf8(p + e.keys[k].data, e.keys[k].size):
            return -1
        i = e.value[k] = e.keys[k].end
        i = _skip(p, n, i)
        if i < 0:
            return -1
        e.end[k] = i
        if _is(p, &e.keys[k], b"moves", 5):
            e.moves = k
    return 0 if i == n else -1


# FNV-1a over a key's bytes, for the stock sums' table below.
cdef uint64_t _FNV_OFFSET = (<uint64_t>0xcbf29ce4 << 32) | <uint64_t>0x84222325
cdef uint64_t _FNV_PRIME = (<uint64_t>0x100 << 32) | <uint64_t>0x1b3


cdef inline uint64_t _fnv(const uint8_t* s, Py_ssize_t n, uint64_t h) noexcept:
    cdef Py_ssize_t k
    for k in range(n):
        h = (h ^ s[k]) * _FNV_PRIME
    return h


cdef int _check_moves(const uint8_t* p, Py_ssize_t n, Entries* e) noexcept:
    """How many moves the event has, each `[sku text, lot text or nil, integer, any, any]`; -1 for
    anything else (the reference decides what an odd `moves` means)."""
    cdef Item it, field
    cdef Py_ssize_t i
    cdef int count, k, f
    if e.moves < 0:
        return 0
    i = e.value[e.moves]
    _read(p, n, i, &it)
    if it.kind == K_NIL:
        return 0
    if it.kind != K_ARRAY or it.size > 1 << 20:
        return -1
    count = <int>it.size
    i = it.end
    for k in range(count):
        _read(p, n, i, &it)
        if it.kind != K_ARRAY or it.size != 5:
            return -1
        i = it.end
        for f in range(5):
            _read(p, n, i, &field)
            if (f == 0 and field.kind != K_STR) or (f == 1 and field.kind != K_STR and field.kind != K_NIL) \
                    or (f == 2 and field.kind != K_INT):
                return -1
            i = _skip(p, n, i)
    return count


cdef int _add_moves(const uint8_t* p, Py_ssize_t n, Entries* e, net) except -1:
    cdef Item it, field, sku, lot
    cdef Py_ssize_t i
    cdef int count, k
    cdef StockSums sums = net if type(net) is StockSums and (<StockSums>net)._dict is None else None
    if e.moves < 0:
        return 0
    i = e.value[e.moves]
    _read(p, n, i, &it)
    if it.kind == K_NIL:
        return 0
    count = <int>it.size
    i = it.end
    for k in range(count):
        _read(p, n, i, &it)
        i = it.end
        _read(p, n, i, &sku)
        _read(p, n, sku.end, &lot)
        _read(p, n, lot.end, &field)
        i = _skip(p, n, field.end)
        i = _skip(p, n, i)
        if sums is not None:
            sums._add(<const char*>(p + sku.data), sku.size, <const char*>(p + lot.data),
                      -1 if lot.kind == K_NIL else lot.size, field.value)
            if sums._dict is not None:
                sums = None   # it became a dict (a sum beyond its integers): the dict's way from here
        else:
            # Any other mapping (a StockSums become a dict): the reference's key, as a decoded move gives it.
            key = (_text(p, &sku), None if lot.kind == K_NIL else _text(p, &lot))
            net[key] = net.get(key, 0) + field.value
    return 0


def add_moves(raws, sums):
    """Add the stock moves of each stored event of `raws` to `sums` ((sku, lot) -> net delta)."""
    cdef Entries e
    cdef bytes raw
    cdef const uint8_t* p
    cdef Py_ssize_t n
    for raw in raws:
        p = <const uint8_t*>PyBytes_AS_STRING(raw)
        n = PyBytes_GET_SIZE(raw)
        if _entries(p, n, &e) < 0 or _check_moves(p, n, &e) < 0:
            _docbytes_py.add_moves((raw,), sums)
        else:
            _add_moves(p, n, &e, sums)


# ---------------------------------------------------------------------------------------------
# Documents

cdef inline bint _special(const uint8_t* p, Item* k) noexcept:
    # HEAD_KEYS, INTERNAL_KEYS ("store") and keys starting "_" (see _docbytes_py._special).
    return (_is(p, k, b"seq", 3) or _is(p, k, b"type", 4) or _is(p, k, b"id", 2) or _is(p, k, b"ts_ms", 5)
            or _is(p, k, b"store", 5) or (k.kind == K_STR and k.size > 0 and p[k.data] == 0x5f))


cdef inline bint _plain(const uint8_t* p, Py_ssize_t n, Py_ssize_t i) noexcept:
    # A value the packer writes one way, written that way (anything else: the reference decides).
    cdef Item it
    _read(p, n, i, &it)
    return it.canonical and (it.kind == K_NIL or it.kind == K_BOOL or it.kind == K_INT or it.kind == K_UINT
                             or it.kind == K_STR)


cdef Py_ssize_t _map_header(uint8_t* out, Py_ssize_t count) noexcept:
    if count < 16:
        out[0] = 0x80 | count
        return 1
    if count < 65536:
        out[0] = 0xde
        out[1] = (count >> 8) & 0xff
        out[2] = count & 0xff
        return 3
    out[0] = 0xdf
    out[1] = (count >> 24) & 0xff
    out[2] = (count >> 16) & 0xff
    out[3] = (count >> 8) & 0xff
    out[4] = count & 0xff
    return 5


cdef object _document(const uint8_t* p, Py_ssize_t n, Entries* e):
    """The document's bytes, as `DocPacker.pack` cuts them, or None where it would not cut."""
    cdef int last = e.count - 1
    cdef int cut = 0, k, j, kept = 0
    cdef int head[3]
    cdef Item seq
    cdef Py_ssize_t size, at, piece
    cdef uint8_t header[5]
    cdef uint8_t* out
    if last < 0 or not e.canonical:
        return None
    for k in range(e.count):
        if e.keys[k].kind != K_STR:
            return None
        for j in range(k):   # duplicates: the decoded map would be shorter than its header says
            if e.keys[j].size == e.keys[k].size and memcmp(p + e.keys[j].data, p + e.keys[k].data,
                                                           e.keys[k].size) == 0:
                return None
    _read(p, n, e.value[last], &seq)
    if not _is(p, &e.keys[last], b"seq", 3) or not e.keys[last].canonical or not seq.canonical or (seq.kind != K_INT and seq.kind != K_UINT):
        return None
    for k in range(last):
        if _special(p, &e.keys[k]):
            cut = k + 1
    head[0] = head[1] = head[2] = -1
    for k in range(cut):
        if not e.keys[k].canonical or not _plain(p, n, e.value[k]):
            return None
        if _is(p, &e.keys[k], b"type", 4):
            head[0] = k
        elif _is(p, &e.keys[k], b"id", 2):
            head[1] = k
        elif _is(p, &e.keys[k], b"ts_ms", 5):
            head[2] = k
        elif not _special(p, &e.keys[k]):
            kept += 1
    at = _map_header(header, 4 + kept + last - cut)
    # header, the seq entry, type, id, ts_ms (nil when absent), the leading entries kept, the rest.
    size = at + (n - e.key[last])
    for j in range(3):
        size += e.end[head[j]] - e.key[head[j]] if head[j] >= 0 else len(HEAD_KEYS[j + 1]) + 2
    for k in range(cut):
        if not _special(p, &e.keys[k]):
            size += e.end[k] - e.key[k]
    size += e.key[last] - (e.key[cut] if cut < last else e.key[last])
    doc = PyBytes_FromStringAndSize(NULL, size)
    out = <uint8_t*>PyBytes_AS_STRING(doc)
    memcpy(out, header, at)
    memcpy(out + at, p + e.key[last], n - e.key[last])
    at += n - e.key[last]
    for j in range(3):
        if head[j] >= 0:
            piece = e.end[head[j]] - e.key[head[j]]
            memcpy(out + at, p + e.key[head[j]], piece)
            at += piece
        else:
            name = HEAD_KEYS[j + 1].encode()
            out[at] = 0xa0 | len(name)
            memcpy(out + at + 1, PyBytes_AS_STRING(name), len(name))
            out[at + 1 + len(name)] = 0xc0
            at += len(name) + 2
    for k in range(cut):
        if not _special(p, &e.keys[k]):
            piece = e.end[k] - e.key[k]
            memcpy(out + at, p + e.key[k], piece)
            at += piece
    if cut < last:
        memcpy(out + at, p + e.key[cut], e.key[last] - e.key[cut])
    return doc


def documents(raws, net) -> list:
    """The packed document of each stored event of `raws`, in order; their moves added to `net`."""
    cdef Entries e
    cdef bytes raw
    cdef const uint8_t* p
    cdef Py_ssize_t n
    cdef list packed = []
    for raw in raws:
        p = <const uint8_t*>PyBytes_AS_STRING(raw)
        n = PyBytes_GET_SIZE(raw)
        doc = None
        if _entries(p, n, &e) == 0 and _check_moves(p, n, &e) >= 0:
            doc = _document(p, n, &e)
        if doc is None:
            packed.extend(_docbytes_py.documents((raw,), net))
        else:
            _add_moves(p, n, &e, net)
            packed.append(doc)
    return packed


# ---------------------------------------------------------------------------------------------
# Bodies, as the ERP reads them

cdef inline int _key(const uint8_t* p, Py_ssize_t n, Py_ssize_t i, Item* key) noexcept:
    # A map key, checked as `_skip` checks one: 0, or -1 for the reference.
    if _read(p, n, i, key) < 0 or key.kind == K_ARRAY or key.kind == K_MAP:
        return -1
    if key.kind == K_STR and not _utf8(p + key.data, key.size):
        return -1
    return 0


cdef Py_ssize_t _count_doc(const uint8_t* p, Py_ssize_t n, Py_ssize_t i, dict by_type) except -3:
    """Count the document at `i` under str(doc.get("type")) (a document not a map: "None"); where
    it ends, or -1 (bytes for the reference) or -2 (a type the reference names)."""
    cdef Item it, key, value
    cdef Py_ssize_t k
    cdef Py_ssize_t found = -1
    if _read(p, n, i, &it) < 0:
        return -1
    if it.kind != K_MAP:
        name = "None"
        i = _skip(p, n, i)
    else:
        i = it.end
        for k in range(it.size):
            if _key(p, n, i, &key) < 0:
                return -1
            if _is(p, &key, b"type", 4):
                found = key.end   # the last one so named, as a decoded map keeps
            i = _skip(p, n, key.end)
            if i < 0:
                return -1
        if found < 0:
            name = "None"
        else:
            _read(p, n, found, &value)
            if value.kind == K_STR:
                name = _text(p, &value)
            elif value.kind == K_NIL:
                name = "None"
            elif value.kind == K_BOOL:
                name = "True" if value.value else "False"
            elif value.kind == K_INT:
                name = str(value.value)
            else:
                return -2
    if i >= 0:
        by_type[name] = by_type.get(name, 0) + 1
    return i


def body_counts(bytes raw):
    """The counts of a decompressed body, or None when it is not a map of lists `docs`, `stock`,
    `alerts` in valid MessagePack (the caller decodes it then, to say what is wrong)."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef Item it, key, value
    cdef Py_ssize_t i, k, d
    cdef Py_ssize_t size[3]
    cdef int field
    by_type = None
    size[0] = size[1] = size[2] = -1
    if _read(p, n, 0, &it) < 0 or it.kind != K_MAP:
        return _docbytes_py.body_counts(raw)
    # One pass: every byte checked as `_skip` checks it, the documents counted on the way.
    i = it.end
    for k in range(it.size):
        if _key(p, n, i, &key) < 0:
            return _docbytes_py.body_counts(raw)
        i = key.end
        field = 0 if _is(p, &key, b"docs", 4) else 1 if _is(p, &key, b"stock", 5) else \
            2 if _is(p, &key, b"alerts", 6) else -1
        if field < 0:
            i = _skip(p, n, i)
        else:
            if _read(p, n, i, &value) < 0:
                return _docbytes_py.body_counts(raw)
            # The last one so named counts, as a decoded map keeps; -1: not a list.
            size[field] = value.size if value.kind == K_ARRAY else -1
            if field == 0 and value.kind == K_ARRAY:
                by_type = {}
                i = value.end
                for d in range(value.size):
                    i = _count_doc(p, n, i, by_type)
                    if i < 0:
                        return _docbytes_py.body_counts(raw)
            else:
                i = _skip(p, n, i)
        if i < 0:
            return _docbytes_py.body_counts(raw)
    if i != n:
        return _docbytes_py.body_counts(raw)
    if size[0] < 0 or size[1] < 0 or size[2] < 0:
        return None
    return BodyCounts(size[0], by_type, size[1], size[2])


# ---------------------------------------------------------------------------------------------
# A body's stock rows

def stock_rows(net, balances) -> bytes:
    """The packed list of a batch's stock rows `[sku, lot, net_delta, on_hand_after]`, one per
    (sku, lot) of `net` (its moves), in that order; `balances` (on hand before the batch, absent
    is 0) takes the moves, and gives `on_hand_after`. Written from two `StockSums` tables still in
    C; anything else (a table become a dict, plain dicts) is the reference's to pack."""
    if (type(net) is StockSums and type(balances) is StockSums and net is not balances
            and (<StockSums>net)._dict is None and (<StockSums>balances)._dict is None):
        rows = (<StockSums>net)._rows(<StockSums>balances)
        if rows is not None:
            return rows
    return _docbytes_py.stock_rows(net, balances)


# ---------------------------------------------------------------------------------------------
# Stock sums in C
#
# The sealer's sums by (sku, lot): a batch's net moves, and the balances as of the sealed head.
# As dicts of tuples they cost a tuple's hash and a dict lookup or two for every move and every
# row (about a third of sealing). Here a key is its SKU's and lot's UTF-8 bytes in one arena, found
# through an open-addressed table, and the batch's rows are written from those bytes. It answers
# as the reference's dict does (`get`, `[]`, `items`, in the order keys were first put), and becomes
# one, for good, when given anything else: a key not (text, text or None), a value not an integer
# within +-2**61 (so that two of them add up within 64 bits).

cdef struct SumEntry:
    uint64_t hash
    Py_ssize_t sku_at        # the SKU's UTF-8 bytes in the arena
    Py_ssize_t sku_len
    Py_ssize_t lot_at
    Py_ssize_t lot_len       # -1: no lot (None)
    int64_t value


cdef struct KeyBytes:
    const char* sku
    Py_ssize_t sku_len
    const char* lot
    Py_ssize_t lot_len       # -1: no lot
    uint64_t hash


cdef int64_t _SUM_LIMIT = (<int64_t>1) << 61


cdef inline uint64_t _sum_hash(const char* sku, Py_ssize_t sku_len, const char* lot, Py_ssize_t lot_len) noexcept:
    cdef uint64_t h = _fnv(<const uint8_t*>sku, sku_len, _FNV_OFFSET)
    h = (h ^ <uint64_t>sku_len) * _FNV_PRIME
    if lot_len < 0:
        h ^= <uint64_t>0x9e3779b97f4a7c15
    else:
        h = _fnv(<const uint8_t*>lot, lot_len, h)
        h = (h ^ <uint64_t>lot_len) * _FNV_PRIME
    h ^= h >> 33
    h *= <uint64_t>0xff51afd7ed558ccd
    h ^= h >> 33
    return h


cdef inline bint _in_range(int64_t v) noexcept:
    return -_SUM_LIMIT <= v <= _SUM_LIMIT


cdef class StockSums:
    """(sku, lot) -> int, as a dict of them holds them (the reference's sums are plain dicts)."""

    cdef SumEntry* _entries
    cdef Py_ssize_t _count
    cdef Py_ssize_t _cap
    cdef Py_ssize_t* _slots      # an entry's index + 1; 0: empty
    cdef Py_ssize_t _mask        # slots - 1 (a power of two), or -1 before the first key
    cdef char* _arena
    cdef Py_ssize_t _arena_len
    cdef Py_ssize_t _arena_cap
    cdef dict _dict              # not None: this is a dict now

    def __cinit__(self):
        self._mask = -1

    def __dealloc__(self):
        self._free()

    def __init__(self, items=None):
        if items is not None:
            for key, value in (items.items() if hasattr(items, "items") else items):
                self[key] = value

    cdef void _free(self) noexcept:
        PyMem_Free(self._entries)
        PyMem_Free(self._slots)
        PyMem_Free(self._arena)
        self._entries, self._slots, self._arena = NULL, NULL, NULL
        self._count = self._cap = self._arena_len = self._arena_cap = 0
        self._mask = -1

    # --- in C ----------------------------------------------------------------------------------

    cdef Py_ssize_t _find(self, const char* sku, Py_ssize_t sku_len, const char* lot, Py_ssize_t lot_len,
                          uint64_t h) noexcept:
        cdef Py_ssize_t i, e
        cdef SumEntry* x
        if self._mask < 0:
            return -1
        i = <Py_ssize_t>(h & <uint64_t>self._mask)
        while True:
            e = self._slots[i]
            if e == 0:
                return -1
            x = &self._entries[e - 1]
            if (x.hash == h and x.sku_len == sku_len and x.lot_len == lot_len
                    and memcmp(self._arena + x.sku_at, sku, sku_len) == 0
                    and (lot_len <= 0 or memcmp(self._arena + x.lot_at, lot, lot_len) == 0)):
                return e - 1
            i = (i + 1) & self._mask

    cdef int _rehash(self, Py_ssize_t size) except -1:
        cdef Py_ssize_t* slots = <Py_ssize_t*>PyMem_Malloc(size * sizeof(Py_ssize_t))
        cdef Py_ssize_t e, i
        if slots == NULL:
            raise MemoryError()
        memset(slots, 0, size * sizeof(Py_ssize_t))
        for e in range(self._count):
            i = <Py_ssize_t>(self._entries[e].hash & <uint64_t>(size - 1))
            while slots[i]:
                i = (i + 1) & (size - 1)
            slots[i] = e + 1
        PyMem_Free(self._slots)
        self._slots, self._mask = slots, size - 1
        return 0

    cdef Py_ssize_t _insert(self, const char* sku, Py_ssize_t sku_len, const char* lot, Py_ssize_t lot_len,
                            uint64_t h) except -1:
        """A new key (not in the table), its value 0; its entry's index. `sku` and `lot` must not
        point into this table's own arena, which may move."""
        cdef Py_ssize_t need = sku_len + (lot_len if lot_len > 0 else 0)
        cdef Py_ssize_t cap, i
        cdef void* grown
        cdef SumEntry* x
        if self._count == self._cap:
            cap = self._cap * 2 if self._cap else 64
            grown = PyMem_Realloc(self._entries, cap * sizeof(SumEntry))
            if grown == NULL:
                raise MemoryError()
            self._entries, self._cap = <SumEntry*>grown, cap
        if (self._count + 1) * 2 > self._mask + 1:
            self._rehash((self._mask + 1) * 2 if self._mask >= 0 else 128)
        if self._arena_len + need > self._arena_cap:
            cap = self._arena_cap * 2 if self._arena_cap else 4096
            while cap < self._arena_len + need:
                cap *= 2
            grown = PyMem_Realloc(self._arena, cap)
            if grown == NULL:
                raise MemoryError()
            self._arena, self._arena_cap = <char*>grown, cap
        x = &self._entries[self._count]
        x.hash, x.sku_at, x.sku_len, x.lot_len, x.value = h, self._arena_len, sku_len, lot_len, 0
        memcpy(self._arena + self._arena_len, sku, sku_len)
        self._arena_len += sku_len
        x.lot_at = self._arena_len
        if lot_len > 0:
            memcpy(self._arena + self._arena_len, lot, lot_len)
            self._arena_len += lot_len
        i = <Py_ssize_t>(h & <uint64_t>self._mask)
        while self._slots[i]:
            i = (i + 1) & self._mask
        self._slots[i] = self._count + 1
        self._count += 1
        return self._count - 1

    cdef int _add(self, const char* sku, Py_ssize_t sku_len, const char* lot, Py_ssize_t lot_len,
                  int64_t delta) except -1:
        """Add `delta` under the key of these UTF-8 bytes (`lot_len` -1: no lot); past its integers,
        this becomes a dict and takes it as one."""
        cdef uint64_t h = _sum_hash(sku, sku_len, lot, lot_len)
        cdef Py_ssize_t e = self._find(sku, sku_len, lot, lot_len, h)
        cdef int64_t value = 0 if e < 0 else self._entries[e].value
        if not _in_range(delta) or not _in_range(value + delta):
            key = (PyUnicode_DecodeUTF8(sku, sku_len, NULL),
                   None if lot_len < 0 else PyUnicode_DecodeUTF8(lot, lot_len, NULL))
            self._to_dict()
            self._dict[key] = self._dict.get(key, 0) + delta
            return 0
        if e < 0:
            e = self._insert(sku, sku_len, lot, lot_len, h)
        self._entries[e].value = value + delta
        return 0

    cdef object _rows(self, StockSums balances):
        """`stock_rows` of two tables still in C; None (nothing changed) when a balance would leave
        their integers."""
        cdef Writer w
        cdef Py_ssize_t k, b
        cdef SumEntry* x
        cdef int64_t after
        cdef Py_ssize_t* found = <Py_ssize_t*>PyMem_Malloc((self._count or 1) * sizeof(Py_ssize_t))
        if found == NULL:
            raise MemoryError()
        w.buf = NULL
        w.size = w.cap = 0
        try:
            # Looked up first, so that a balance out of range changes nothing and the dicts decide.
            for k in range(self._count):
                x = &self._entries[k]
                b = balances._find(self._arena + x.sku_at, x.sku_len, self._arena + x.lot_at, x.lot_len, x.hash)
                if not _in_range((0 if b < 0 else balances._entries[b].value) + x.value):
                    return None
                found[k] = b
            _pack_length(&w, self._count, 0x90, 15, 0, 0xdc)
            for k in range(self._count):
                x = &self._entries[k]
                b = found[k]
                if b < 0:
                    b = balances._insert(self._arena + x.sku_at, x.sku_len, self._arena + x.lot_at, x.lot_len, x.hash)
                after = balances._entries[b].value + x.value
                balances._entries[b].value = after
                _pack_byte(&w, 0x94)   # [sku, lot, net_delta, on_hand_after]
                _pack_length(&w, x.sku_len, 0xa0, 31, 0xd9, 0xda)
                _pack_raw(&w, self._arena + x.sku_at, x.sku_len)
                if x.lot_len < 0:
                    _pack_byte(&w, 0xc0)
                else:
                    _pack_length(&w, x.lot_len, 0xa0, 31, 0xd9, 0xda)
                    _pack_raw(&w, self._arena + x.lot_at, x.lot_len)
                _pack_int(&w, x.value)
                _pack_int(&w, after)
            return PyBytes_FromStringAndSize(<const char*>w.buf, w.size)
        finally:
            PyMem_Free(found)
            PyMem_Free(w.buf)

    # --- as a dict -----------------------------------------------------------------------------

    cdef tuple _key(self, Py_ssize_t e):
        cdef SumEntry* x = &self._entries[e]
        return (PyUnicode_DecodeUTF8(self._arena + x.sku_at, x.sku_len, NULL),
                None if x.lot_len < 0 else PyUnicode_DecodeUTF8(self._arena + x.lot_at, x.lot_len, NULL))

    cdef int _to_dict(self) except -1:
        cdef Py_ssize_t e
        if self._dict is not None:
            return 0
        self._dict = {self._key(e): self._entries[e].value for e in range(self._count)}
        self._free()
        return 0

    cdef Py_ssize_t _lookup(self, key, KeyBytes* kb) except -2:
        """The entry of `key` (its bytes and hash left in `kb`); -1 when it is not here but could be
        (a plain key), -3 when it could not (anything a dict alone holds)."""
        if type(key) is not tuple or len(<tuple>key) != 2 or type((<tuple>key)[0]) is not str:
            return -3
        second = (<tuple>key)[1]
        if second is not None and type(second) is not str:
            return -3
        kb.lot, kb.lot_len = NULL, -1
        try:
            kb.sku = PyUnicode_AsUTF8AndSize((<tuple>key)[0], &kb.sku_len)
            if second is not None:
                kb.lot = PyUnicode_AsUTF8AndSize(second, &kb.lot_len)
        except UnicodeError:
            return -3   # text with lone surrogates: no UTF-8 bytes
        kb.hash = _sum_hash(kb.sku, kb.sku_len, kb.lot, kb.lot_len)
        return self._find(kb.sku, kb.sku_len, kb.lot, kb.lot_len, kb.hash)

    def get(self, key, default=None):
        cdef KeyBytes kb
        if self._dict is not None:
            return self._dict.get(key, default)
        cdef Py_ssize_t e = self._lookup(key, &kb)
        return default if e < 0 else self._entries[e].value

    def __getitem__(self, key):
        cdef KeyBytes kb
        if self._dict is not None:
            return self._dict[key]
        cdef Py_ssize_t e = self._lookup(key, &kb)
        if e < 0:
            raise KeyError(key)
        return self._entries[e].value

    def __setitem__(self, key, value):
        cdef Py_ssize_t e
        cdef KeyBytes kb
        if self._dict is None and type(value) is int and -_SUM_LIMIT <= value <= _SUM_LIMIT:
            e = self._lookup(key, &kb)
            if e == -1:
                e = self._insert(kb.sku, kb.sku_len, kb.lot, kb.lot_len, kb.hash)
            if e >= 0:
                self._entries[e].value = value
                return
        self._to_dict()
        self._dict[key] = value

    def __delitem__(self, key):
        self._to_dict()
        del self._dict[key]

    def __contains__(self, key):
        cdef KeyBytes kb
        if self._dict is not None:
            return key in self._dict
        return self._lookup(key, &kb) >= 0

    def __len__(self):
        return len(self._dict) if self._dict is not None else self._count

    def __iter__(self):
        return iter(self.keys())

    def keys(self):
        if self._dict is not None:
            return self._dict.keys()
        return [self._key(e) for e in range(self._count)]

    def values(self):
        if self._dict is not None:
            return self._dict.values()
        return [self._entries[e].value for e in range(self._count)]

    def items(self):
        if self._dict is not None:
            return self._dict.items()
        return [(self._key(e), self._entries[e].value) for e in range(self._count)]

    def to_dict(self) -> dict:
        return dict(self.items())

    def __eq__(self, other):
        if isinstance(other, StockSums):
            other = other.to_dict()
        return self.to_dict() == other if isinstance(other, dict) else NotImplemented

    def __repr__(self):
        return f"StockSums({self.to_dict()!r})"
