# MessagePack written from C, byte for byte as msgpack's packer writes the same values (the
# smallest form of each length and integer). Shared by the compiled modules that pack without
# building the Python objects first (`_docbytes_c`: a batch's stock rows; `_salepath_c`: a
# request's canonical bytes).
from cpython.mem cimport PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, strlen


cdef struct Writer:
    uint8_t* buf
    Py_ssize_t size
    Py_ssize_t cap


cdef inline int _reserve(Writer* w, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap = w.cap
    cdef uint8_t* grown
    if w.size + more <= cap:
        return 0
    while cap < w.size + more:
        cap = cap * 2 if cap else 4096
    grown = <uint8_t*>PyMem_Realloc(w.buf, cap)
    if grown == NULL:
        raise MemoryError()
    w.buf = grown
    w.cap = cap
    return 0


cdef inline void _put_be(uint8_t* out, uint64_t v, int n) noexcept:
    cdef int k
    for k in range(n):
        out[k] = (v >> (8 * (n - 1 - k))) & 0xff


cdef inline int _pack_byte(Writer* w, uint8_t b) except -1:
    _reserve(w, 1)
    w.buf[w.size] = b
    w.size += 1
    return 0


cdef inline int _pack_length(Writer* w, Py_ssize_t n, uint8_t fix, Py_ssize_t fixmax, uint8_t b8,
                             uint8_t b16) except -1:
    # fix | n, then (when there is one: b8 != 0) the 8-bit form, then the 16- and 32-bit forms (b16, b16 + 1).
    _reserve(w, 5)
    if n <= fixmax:
        w.buf[w.size] = fix | n
        w.size += 1
    elif b8 and n < 256:
        w.buf[w.size] = b8
        w.buf[w.size + 1] = n
        w.size += 2
    elif n < 65536:
        w.buf[w.size] = b16
        _put_be(w.buf + w.size + 1, n, 2)
        w.size += 3
    else:
        w.buf[w.size] = b16 + 1
        _put_be(w.buf + w.size + 1, n, 4)
        w.size += 5
    return 0


cdef inline int _pack_raw(Writer* w, const char* data, Py_ssize_t n) except -1:
    _reserve(w, n)
    memcpy(w.buf + w.size, data, n)
    w.size += n
    return 0


cdef inline int _pack_str(Writer* w, str text) except -1:
    cdef Py_ssize_t n
    cdef const char* data = PyUnicode_AsUTF8AndSize(text, &n)
    _pack_length(w, n, 0xa0, 31, 0xd9, 0xda)
    return _pack_raw(w, data, n)


cdef inline int _pack_key(Writer* w, const char* key) except -1:
    # A map key or fixed word of the code's own, given as UTF-8 bytes: no text object to encode.
    cdef Py_ssize_t n = strlen(key)
    _pack_length(w, n, 0xa0, 31, 0xd9, 0xda)
    return _pack_raw(w, key, n)


cdef inline int _pack_int(Writer* w, long long v) except -1:
    # As msgpack's packer writes it: fixint, else the smallest unsigned (v > 0) or signed form.
    _reserve(w, 9)
    if 0 <= v < 128 or -32 <= v < 0:
        w.buf[w.size] = <uint8_t>(v & 0xff)
        w.size += 1
        return 0
    cdef uint8_t b
    cdef int n
    if v > 0:
        b, n = (0xcc, 1) if v < 256 else (0xcd, 2) if v < 65536 else (0xce, 4) if v < 4294967296 else (0xcf, 8)
    else:
        b, n = ((0xd0, 1) if v >= -128 else (0xd1, 2) if v >= -32768 else (0xd2, 4) if v >= -2147483648
                else (0xd3, 8))
    w.buf[w.size] = b
    _put_be(w.buf + w.size + 1, <uint64_t>v, n)
    w.size += 1 + n
    return 0
