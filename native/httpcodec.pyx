# cython: language_level=3
"""Request-side codec for the client API: Go's percent-decoding, form splitting and path cleaning.

Rules reproduced from Go 1.19 (the toolchain of etcd 3.4.23), because etcd's answers depend on them:

- ``unescape(s, query)``: ``url.QueryUnescape`` when ``query`` (``+`` is a space) else ``url.PathUnescape``
  (``+`` stays).  A ``%`` not followed by two hex digits raises ``ValueError('invalid URL escape "%zz"')``
  quoting at most three bytes from the ``%`` like Go's ``EscapeError``.
- ``parse_form(data, form)``: ``url.ParseQuery``: pieces split on ``&``; a piece holding ``;`` is an error
  ("invalid semicolon separator in query", which overwrites any earlier error, as in Go); empty pieces are
  skipped; ``key=value`` split at the first ``=``; a piece whose key or value fails to unescape is dropped and
  the first such error kept.  Only the first value of a name matters to etcd (``form[name][0]``), so ``form``
  maps name -> first value and an existing entry is never overwritten: parse the body first, then the query,
  and the body wins as in ``Request.ParseForm``.  Returns the error message or None.
- ``clean_path(p)``: ``net/http.cleanPath``: ``path.Clean`` of a rooted path, keeping one trailing slash.
- ``parse_bool``/``parse_uint64``: ``strconv.ParseBool``/``ParseUint(s, 10, 64)``; -1 on a syntax or range error.

Names and values are decoded from bytes as UTF-8 with the error handler ``GO_REPLACE``: every byte of an
invalid sequence becomes one U+FFFD, as Go's decoder does (Python's "replace" gives one U+FFFD per maximal
invalid subsequence).  Go keeps the raw bytes, but its JSON encoder writes them that way, which is what
clients see.  tests/twins/httpcodec.py is the pure-Python twin;
a hypothesis test keeps the two identical.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Contains, PyDict_SetItem
from cpython.unicode cimport PyUnicode_DecodeLatin1, PyUnicode_DecodeUTF8
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcmp

import codecs

GO_REPLACE = "fastkv-go-replace"


def _go_replace(err):
    return "\ufffd" * (err.end - err.start), err.end


codecs.register_error(GO_REPLACE, _go_replace)

cdef inline int _unhex(unsigned char c) noexcept nogil:
    if c >= 48 and c <= 57:
        return c - 48
    if c >= 97 and c <= 102:
        return c - 87
    if c >= 65 and c <= 70:
        return c - 55
    return -1


def quote_go(bytes s):
    """Go's strconv.Quote for the short byte strings quoted in escape errors."""
    out = ['"']
    cdef Py_ssize_t i = 0, n = len(s)
    while i < n:
        c = s[i]
        if c == 0x22 or c == 0x5C:
            out.append("\\" + chr(c))
            i += 1
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
            i += 1
        elif c < 0x80:
            out.append({7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}.get(c, "\\x%02x" % c))
            i += 1
        else:
            # A multi-byte UTF-8 sequence is kept when complete and printable, else each byte is \xNN.
            for width in (2, 3, 4):
                try:
                    ch = s[i:i + width].decode("utf-8")
                except UnicodeDecodeError:
                    continue
                if ch.isprintable():
                    out.append(ch)
                    i += width
                    break
            else:
                out.append("\\x%02x" % c)
                i += 1
    out.append('"')
    return "".join(out)


cdef object _escape_error(const unsigned char* p, Py_ssize_t i, Py_ssize_t n):
    cdef Py_ssize_t end = i + 3 if i + 3 < n else n
    return ValueError("invalid URL escape " + quote_go(PyBytes_FromStringAndSize(<const char*>p + i, end - i)))


cdef Py_ssize_t _unescape_into(const unsigned char* p, Py_ssize_t n, bint query, unsigned char* out) except -2:
    """Decode p[0:n] into out (room for n bytes); returns the decoded length or raises ValueError."""
    cdef Py_ssize_t i = 0, j = 0
    cdef int hi, lo
    cdef unsigned char c
    while i < n:
        c = p[i]
        if c == 37:  # '%'
            if i + 2 >= n:
                raise _escape_error(p, i, n)
            hi = _unhex(p[i + 1])
            lo = _unhex(p[i + 2])
            if hi < 0 or lo < 0:
                raise _escape_error(p, i, n)
            out[j] = <unsigned char>(hi * 16 + lo)
            i += 3
        elif c == 43 and query:  # '+'
            out[j] = 32
            i += 1
        else:
            out[j] = c
            i += 1
        j += 1
    return j


cdef inline bint _needs_decoding(const unsigned char* p, Py_ssize_t n, bint query) noexcept nogil:
    if memchr(p, 37, n) != NULL:
        return True
    return query and memchr(p, 43, n) != NULL


cdef object _decode_str(const unsigned char* p, Py_ssize_t n, bint query, unsigned char* scratch):
    """p[0:n] unescaped and decoded to str; scratch has room for n bytes."""
    cdef Py_ssize_t m
    if not _needs_decoding(p, n, query):
        return PyUnicode_DecodeUTF8(<const char*>p, n, "fastkv-go-replace")
    m = _unescape_into(p, n, query, scratch)
    return PyUnicode_DecodeUTF8(<const char*>scratch, m, "fastkv-go-replace")


def unescape(bytes s, bint query):
    """Percent-decode ``s`` (Go QueryUnescape when ``query``, else PathUnescape) to bytes."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(s)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(s)
    cdef unsigned char* buf
    cdef Py_ssize_t m
    if not _needs_decoding(p, n, query):
        return s
    buf = <unsigned char*>malloc(n + 1)
    if buf == NULL:
        raise MemoryError()
    try:
        m = _unescape_into(p, n, query, buf)
        return PyBytes_FromStringAndSize(<const char*>buf, m)
    finally:
        free(buf)


def parse_form(bytes data, dict form):
    """Add data's ``name=value`` pairs to ``form`` (first value wins); returns Go's error message or None."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t start = 0, end, eq, k
    cdef bint has_semicolon
    cdef unsigned char* scratch
    cdef object err = None
    if n == 0:
        return None
    scratch = <unsigned char*>malloc(n + 1)
    if scratch == NULL:
        raise MemoryError()
    try:
        while start <= n:
            end = start
            eq = -1
            has_semicolon = False
            while end < n and p[end] != 38:  # '&'
                if p[end] == 61 and eq < 0:  # '='
                    eq = end
                elif p[end] == 59:  # ';'
                    has_semicolon = True
                end += 1
            if has_semicolon:
                err = "invalid semicolon separator in query"
            elif end > start:
                k = eq if eq >= 0 else end
                try:
                    key = _decode_str(p + start, k - start, True, scratch)
                    if eq >= 0:
                        value = _decode_str(p + eq + 1, end - eq - 1, True, scratch)
                    else:
                        value = ""
                except ValueError as e:
                    if err is None:
                        err = str(e)
                else:
                    if not PyDict_Contains(form, key):
                        PyDict_SetItem(form, key, value)
            if end >= n:
                break
            start = end + 1
    finally:
        free(scratch)
    return err


def clean_path(str p):
    """Go net/http cleanPath: rooted path.Clean that keeps a trailing slash."""
    cdef Py_ssize_t n = len(p)
    cdef Py_ssize_t i
    cdef Py_UCS4 c, prev
    if n == 0:
        return "/"
    if p[0] != "/":
        p = "/" + p
        n += 1
    # Fast path: no "//", no "." or ".." element -> already clean.
    prev = 47
    i = 1
    while i < n:
        c = p[i]
        if c == 47 and prev == 47:
            break
        if c == 46 and prev == 47:
            if i + 1 == n or p[i + 1] == "/":
                break
            if p[i + 1] == "." and (i + 2 == n or p[i + 2] == "/"):
                break
        prev = c
        i += 1
    else:
        return p
    parts = []
    for element in p.split("/"):
        if element == "" or element == ".":
            continue
        if element == "..":
            if parts:
                parts.pop()
            continue
        parts.append(element)
    cleaned = "/" + "/".join(parts)
    if p[n - 1] == "/" and cleaned != "/":
        cleaned += "/"
    return cleaned


def parse_bool(str s):
    """strconv.ParseBool: 1, 0, or -1 for invalid syntax."""
    if s == "true" or s == "1" or s == "t" or s == "T" or s == "TRUE" or s == "True":
        return 1
    if s == "false" or s == "0" or s == "f" or s == "F" or s == "FALSE" or s == "False":
        return 0
    return -1


def parse_uint64(str s):
    """strconv.ParseUint(s, 10, 64), or -1 for a syntax or range error."""
    cdef Py_ssize_t i, n = len(s)
    cdef unsigned int c
    cdef unsigned long long v = 0, d
    if n == 0 or n > 20:
        return -1
    for i in range(n):
        c = ord(s[i])
        if c < 48 or c > 57:
            return -1
        d = c - 48
        if v > (18446744073709551615ULL - d) // 10:
            return -1
        v = v * 10 + d
    return v


# ----- the plainest requests, read without the general parser ------------------------------------------

# A target byte the fast path takes: letters, digits and "-._~/?=&%+,".  llhttp and Go accept all of
# them, and the target goes to the same routing either way.
cdef bint _TARGET_OK[256]
# A Host value byte: letters, digits and ".:-[]" (all valid in Go's httpguts.ValidHostHeader).
cdef bint _HOST_OK[256]
cdef int _b
for _b in range(256):
    _TARGET_OK[_b] = (48 <= _b <= 57) or (65 <= _b <= 90) or (97 <= _b <= 122) or _b in b"-._~/?=&%+,"
    _HOST_OK[_b] = (48 <= _b <= 57) or (65 <= _b <= 90) or (97 <= _b <= 122) or _b in b".:-[]"

# The largest read the fast path looks at: a form body this size is far below every limit.
SIMPLE_REQUEST_MAX = 16384


cdef inline bint _name_is(const unsigned char* p, Py_ssize_t n, const char* lower, Py_ssize_t ln) noexcept:
    cdef Py_ssize_t i
    if n != ln:
        return False
    for i in range(n):
        if (p[i] | 0x20) != <unsigned char>lower[i]:
            return False
    return True


def simple_request(bytes data):
    """``(method, target, content_type, body)`` when ``data`` is exactly one request of the plainest
    form, else None (then the general parser reads it).

    The plainest form: ``GET``, ``PUT``, ``POST`` or ``DELETE``, a target of bytes from a small safe set,
    ``HTTP/1.1``; only the headers Host (once, a plain host[:port]), User-Agent, Accept, Accept-Encoding,
    ``Connection: keep-alive``, Content-Type (at most once) and Content-Length (at most once, 1-6 digits),
    each ``Name: value`` with printable ASCII; then exactly Content-Length bytes of body (none without
    the header) and nothing more.  Such a request means the same to Go and to llhttp and needs none of
    the general path's checks (framing, limits, method tokens, reads split inside a message).
    ``content_type`` is None when the header is absent."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i, j, start, name_end, vstart, vend, k
    cdef Py_ssize_t length = -1, ct_start = -1, ct_end = -1
    cdef int hosts = 0
    cdef str method
    if n > SIMPLE_REQUEST_MAX or n < 20:
        return None
    if memcmp(p, b"GET /", 5) == 0:
        method, i = "GET", 4
    elif memcmp(p, b"PUT /", 5) == 0:
        method, i = "PUT", 4
    elif memcmp(p, b"POST /", 6) == 0:
        method, i = "POST", 5
    elif n > 7 and memcmp(p, b"DELETE /", 8) == 0:
        method, i = "DELETE", 7
    else:
        return None
    cdef Py_ssize_t target_start = i
    while i < n and _TARGET_OK[p[i]]:
        i += 1
    cdef Py_ssize_t target_end = i
    if i + 11 > n or memcmp(p + i, b" HTTP/1.1\r\n", 11) != 0:
        return None
    i += 11
    while True:
        if i + 2 > n:
            return None
        if p[i] == 13:  # the blank line
            if p[i + 1] != 10:
                return None
            i += 2
            break
        start = i
        while i < n and ((65 <= p[i] <= 90) or (97 <= p[i] <= 122) or p[i] == 45):
            i += 1
        name_end = i
        if name_end == start or i >= n or p[i] != 58:  # ":"
            return None
        i += 1
        while i < n and p[i] == 32:
            i += 1
        vstart = i
        while i < n and 32 <= p[i] <= 126:
            i += 1
        if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
            return None
        vend = i
        while vend > vstart and p[vend - 1] == 32:
            vend -= 1
        i += 2
        k = name_end - start
        if _name_is(p + start, k, b"host", 4):
            hosts += 1
            if vend == vstart:
                return None
            for j in range(vstart, vend):
                if not _HOST_OK[p[j]]:
                    return None
        elif _name_is(p + start, k, b"content-length", 14):
            if length >= 0 or vend == vstart or vend - vstart > 6:
                return None
            length = 0
            for j in range(vstart, vend):
                if not 48 <= p[j] <= 57:
                    return None
                length = length * 10 + p[j] - 48
        elif _name_is(p + start, k, b"content-type", 12):
            if ct_start >= 0:
                return None
            ct_start, ct_end = vstart, vend
        elif _name_is(p + start, k, b"connection", 10):
            if not _name_is(p + vstart, vend - vstart, b"keep-alive", 10):
                return None
        elif not (
            _name_is(p + start, k, b"user-agent", 10)
            or _name_is(p + start, k, b"accept", 6)
            or _name_is(p + start, k, b"accept-encoding", 15)
        ):
            return None
    if hosts != 1 or n - i != (length if length > 0 else 0):
        return None
    return (
        method,
        PyBytes_FromStringAndSize(<const char*>p + target_start, target_end - target_start),
        PyUnicode_DecodeLatin1(<const char*>p + ct_start, ct_end - ct_start, NULL) if ct_start >= 0 else None,
        PyBytes_FromStringAndSize(<const char*>p + i, n - i) if n > i else b"",
    )
