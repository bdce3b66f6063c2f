# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The hot data structures of the v2 store: the key tree, its external views, and etcd's event JSON.

Rules this module keeps (the store above it builds etcd's operations from them):

- Paths are Go ``path.Clean(path.Join("/", p))`` forms: absolute, no ``//``, ``.``, ``..`` or trailing
  ``/`` (except the root ``/``).  ``clean_path`` produces them; every other function expects them.
- A ``Node`` is a file (``children is None``, ``value`` a str) or a directory (``children`` a dict from
  each child's full path to the child, ``value`` ``""``).  The key is the child's own ``path`` object,
  so a key costs no string of its own; a walk looks up each prefix of the path it follows.
  ``expire_ns`` is the absolute expiry in unix ns, 0 for a permanent node.  A node whose last
  component starts with ``_`` is hidden: listings skip it.
- Nodes hold no parent pointer, so the tree has no reference cycles and ``Node`` opts out of the cyclic
  GC (``no_gc``): a million keys add nothing to GC passes.  The parent is found by walking the path.
- ``NodeView`` is an immutable snapshot (etcd's ``NodeExtern``) and ``Event`` holds only snapshots, so
  events kept in the watch history never change when the tree does.
- ``Event.to_json`` writes exactly what etcd 3.4's Go encoder writes: field order and omission rules of
  ``NodeExtern``, ``<``, ``>``, ``&``, U+2028, U+2029 and control bytes as ``\\u00XX`` (``\\n``, ``\\r``,
  ``\\t`` short), U+FFFD as ``\\ufffd`` (what Go writes for invalid UTF-8, which the API replaced by
  U+FFFD), expiration as RFC 3339 with nanoseconds and trailing zeros trimmed, then ``\\n``.

Memory: a key costs its ``Node`` (72 bytes: header, method table, 3 object slots, 3 int64), its path and
value strings (49 bytes + length each when ASCII), and one entry in the parent's dict (about 40 bytes
amortised), so about 210 bytes + len(path) + len(value).

Persistent records (the applied state in RocksDB, see storage/backend.py) are encoded and bulk-loaded here,
because a restart builds a million nodes and every apply round encodes each changed node:

- node key: the path in UTF-8 (lone surrogates kept with ``surrogatepass``) + ``\\x00``.  A node's key
  sorts before every key of its subtree (``path + "/" ...``: ``\\x00`` < ``/``), so loading in key order
  always finds the parent already built, and a subtree is the key range ``[path + "/", path + "0")``.
- node record: u8 flags (1 = dir), i64 created, i64 modified, i64 expire_ns, then, only when expire_ns is
  set, i64 ttl_seq (the order of the deadline among equal deadlines), then a file's value in UTF-8.
- event record: u8 action, u8 flags (1 refresh, 2 has prev node, 4 internal), i64 etcd_index, the node view, then the
  prev view.  A view: u8 flags (1 dir, 2 has value), i64 expiration, ttl, modified, created, u32 key
  length, key, then u32 value length and value when it has one.  Integers are little-endian.
"""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy


cdef extern from "Python.h":
    int PyUnicode_KIND(object o)
    int PyUnicode_1BYTE_KIND

# etcd treats an expiry before 2000-01-01T00:00:00Z as "no expiry" when it creates a node.
MIN_EXPIRE_NS = 946684800 * 1_000_000_000

COMPARE_MATCH = 0
COMPARE_INDEX_NOT_MATCH = 1
COMPARE_VALUE_NOT_MATCH = 2
COMPARE_NOT_MATCH = 3

cdef int64_t NS_PER_S = 1000000000
cdef int64_t INT64_MAX_ = 0x7FFFFFFFFFFFFFFF
cdef int64_t INT64_MIN_ = -INT64_MAX_ - 1


class PathError(Exception):
    """A walk failed: ``code`` is the etcd error code (100 not found, 104 not a directory)."""

    def __init__(self, int code, str cause):
        super().__init__(code, cause)
        self.code = code
        self.cause = cause


cpdef str clean_path(str p):
    """Go's ``path.Clean(path.Join("/", p))``."""
    cdef Py_ssize_t n = len(p), i
    cdef Py_UCS4 c, prev = 47  # "/"
    cdef bint clean = n > 0 and p[0] == "/"
    if clean:
        # Canonical iff no empty, "." or ".." component and no trailing slash.
        for i in range(1, n):
            c = p[i]
            if c == "/" and prev == "/":
                clean = False
                break
            prev = c
        if clean and n > 1:
            if p[n - 1] == "/":
                clean = False
            elif "/./" in p or "/../" in p or p.endswith("/.") or p.endswith("/.."):
                clean = False
    if clean:
        return p
    cdef list out = []
    cdef str comp
    for comp in p.split("/"):
        if comp == "" or comp == ".":
            continue
        if comp == "..":
            if out:
                out.pop()
            continue
        out.append(comp)
    return "/" + "/".join(out)


cpdef int64_t ttl_of(int64_t expire_ns, int64_t now_ns):
    """Seconds left as etcd reports them: ceil for a future expiry, truncation toward zero past it.  The
    difference saturates at the int64 range like Go's ``Time.Sub`` (an expiry wrapped into the 1600s by a
    huge TTL reports -9223372036)."""
    cdef int64_t d
    cdef int64_t t
    if now_ns > 0 and expire_ns < INT64_MIN_ + now_ns:
        d = INT64_MIN_
    elif now_ns < 0 and expire_ns > INT64_MAX_ + now_ns:
        d = INT64_MAX_
    else:
        d = expire_ns - now_ns
    if d >= 0:
        t = d // NS_PER_S
        if d % NS_PER_S:
            t += 1
        return t
    return -((-d) // NS_PER_S)


@cython.final
@cython.no_gc
cdef class Node:
    """A live node of the key tree (see the module docstring for its invariants)."""

    cdef readonly str path  # also its key in the parent's children: never changes
    cdef public str value
    cdef public dict children
    cdef public int64_t created_index
    cdef public int64_t modified_index
    cdef public int64_t expire_ns

    def __init__(self, str path, str value, bint is_dir, int64_t created_index, int64_t expire_ns=0):
        self.path = path
        self.value = value if not is_dir else ""
        self.children = {} if is_dir else None
        self.created_index = created_index
        self.modified_index = created_index
        self.expire_ns = expire_ns

    @property
    def hidden(self) -> bool:
        """Whether the last component starts with ``_`` (listings skip the node)."""
        return _is_hidden(self.path)

    cpdef bint is_dir(self):
        return self.children is not None

    cpdef int compare(self, str prev_value, int64_t prev_index):
        """etcd's ``node.Compare``: which of the CAS conditions fail (COMPARE_* constants)."""
        cdef bint index_ok = prev_index == 0 or self.modified_index == prev_index
        cdef bint value_ok = prev_value == "" or self.value == prev_value
        if index_ok and value_ok:
            return 0
        if index_ok:
            return 2
        if value_ok:
            return 1
        return 3

    cpdef NodeView repr(self, bint recursive, bint sorted, int64_t now_ns):
        """etcd's ``node.Repr``: a dir lists its children only when ``recursive``."""
        return self._view(recursive, recursive, sorted, now_ns)

    cpdef NodeView load(self, bint recursive, bint sorted, int64_t now_ns):
        """etcd's ``loadInternalNode`` (GET): a dir always lists its direct children."""
        return self._view(True, recursive, sorted, now_ns)

    cdef NodeView _view(self, bint list_children, bint recursive, bint sorted, int64_t now_ns):
        cdef NodeView v = NodeView.__new__(NodeView)
        cdef list nodes
        cdef Node child
        v.key = self.path if self.path != "/" else ""
        v.modified_index = self.modified_index
        v.created_index = self.created_index
        v.expiration = self.expire_ns
        v.ttl = ttl_of(self.expire_ns, now_ns) if self.expire_ns != 0 else 0
        if self.children is None:
            v.value = self.value
            v.dir = False
            v.nodes = None
            return v
        v.value = None
        v.dir = True
        v.nodes = None
        if list_children and self.children:
            nodes = []
            for child in self.children.values():
                if not _is_hidden(child.path):
                    nodes.append(child._view(recursive, recursive, sorted, now_ns))
            if sorted and len(nodes) > 1:
                if _all_utf8(nodes):
                    nodes.sort(key=_view_key)
                else:
                    nodes.sort(key=_view_bytes_key)
            v.nodes = nodes
        return v

    def __repr__(self):
        kind = "dir" if self.children is not None else "file"
        return f"Node({self.path!r}, {kind}, c={self.created_index}, m={self.modified_index}, e={self.expire_ns})"


cdef inline bint _is_hidden(str path):
    cdef Py_ssize_t slash = path.rfind("/")
    return slash + 1 < len(path) and path[slash + 1] == "_"


cdef object _view_key(NodeView v):
    return v.key


cdef bytes _key_bytes(str key):
    """The bytes a key stands for: invalid UTF-8 bytes are kept as lone surrogates (``surrogateescape``)."""
    try:
        return key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogatepass")


cdef object _view_bytes_key(NodeView v):
    return _key_bytes(v.key)


cdef bint _all_utf8(list nodes):
    """Whether no key holds a lone surrogate: then code point order is the byte order Go sorts by."""
    cdef NodeView v
    for v in nodes:
        if PyUnicode_KIND(v.key) != PyUnicode_1BYTE_KIND:  # Latin-1 strings cannot hold surrogates
            try:
                v.key.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


@cython.final
@cython.freelist(64)
cdef class NodeView:
    """etcd's ``NodeExtern``: what a response shows of a node at one moment.  ``value`` is None for a
    dir, ``expiration`` 0 when permanent, ``nodes`` None unless children were listed."""

    cdef readonly str key
    cdef readonly object value
    cdef readonly bint dir
    cdef readonly int64_t expiration
    cdef readonly int64_t ttl
    cdef readonly object nodes
    cdef readonly int64_t modified_index
    cdef readonly int64_t created_index

    def __init__(self, str key, object value, bint dir, int64_t expiration=0, int64_t ttl=0, object nodes=None,
                 int64_t modified_index=0, int64_t created_index=0):
        self.key = key
        self.value = value
        self.dir = dir
        self.expiration = expiration
        self.ttl = ttl
        self.nodes = nodes
        self.modified_index = modified_index
        self.created_index = created_index

    def to_json(self) -> bytes:
        cdef Buf b = Buf()
        _put_view(b, self)
        return b.to_bytes()

    def __eq__(self, other):
        if not isinstance(other, NodeView):
            return NotImplemented
        cdef NodeView o = other
        return (self.key == o.key and self.value == o.value and self.dir == o.dir
                and self.expiration == o.expiration and self.ttl == o.ttl and self.nodes == o.nodes
                and self.modified_index == o.modified_index and self.created_index == o.created_index)

    def __repr__(self):
        return (f"NodeView(key={self.key!r}, value={self.value!r}, dir={self.dir}, "
                f"expiration={self.expiration}, ttl={self.ttl}, nodes={self.nodes!r}, "
                f"modified_index={self.modified_index}, created_index={self.created_index})")


@cython.final
@cython.freelist(64)
cdef class Event:
    """etcd's ``Event``.  ``etcd_index`` is the X-Etcd-Index of the answer; ``refresh`` marks an event that
    enters the history but is never delivered to watchers; ``internal`` marks an event of an internal
    namespace (``/0``, ``/2``: its key is the full store path), which takes its index and its history slot but
    is never delivered to, nor found by, a user watcher."""

    cdef readonly str action
    cdef readonly NodeView node
    cdef readonly NodeView prev_node
    cdef public int64_t etcd_index
    cdef public bint refresh
    cdef public bint internal

    def __init__(self, str action, NodeView node, NodeView prev_node=None, int64_t etcd_index=0,
                 bint refresh=False, bint internal=False):
        self.action = action
        self.node = node
        self.prev_node = prev_node
        self.etcd_index = etcd_index
        self.refresh = refresh
        self.internal = internal

    @property
    def index(self) -> int:
        """The event's position in the history: its node's modifiedIndex."""
        return self.node.modified_index

    cpdef Event with_etcd_index(self, int64_t etcd_index):
        cdef Event e = Event.__new__(Event)
        e.action = self.action
        e.node = self.node
        e.prev_node = self.prev_node
        e.etcd_index = etcd_index
        e.refresh = self.refresh
        e.internal = self.internal
        return e

    cpdef bytes to_json(self):
        cdef Buf b = Buf()
        b.put(b'{"action":', 10)
        b.put_str(self.action)
        if self.node is not None:
            b.put(b',"node":', 8)
            _put_view(b, self.node)
        if self.prev_node is not None:
            b.put(b',"prevNode":', 12)
            _put_view(b, self.prev_node)
        b.put(b'}\n', 2)
        return b.to_bytes()

    def __repr__(self):
        return (f"Event({self.action!r}, node={self.node!r}, prev_node={self.prev_node!r}, "
                f"etcd_index={self.etcd_index}, refresh={self.refresh}, internal={self.internal})")


# ----- the JSON writer -------------------------------------------------------------------------------

# 0: copy; 1: short escape (\" \\ \n \r \t); 2: \u00XX; 3: E2 lead byte; 4: EF lead byte.
cdef uint8_t _ESC[256]
cdef int _i
for _i in range(256):
    _ESC[_i] = 0
for _i in range(0x20):
    _ESC[_i] = 2
_ESC[ord('"')] = 1
_ESC[ord("\\")] = 1
_ESC[ord("\n")] = 1
_ESC[ord("\r")] = 1
_ESC[ord("\t")] = 1
_ESC[ord("<")] = 2
_ESC[ord(">")] = 2
_ESC[ord("&")] = 2
_ESC[0xE2] = 3  # maybe U+2028/U+2029 (E2 80 A8 / E2 80 A9)
# Maybe U+FFFD (EF BF BD), written as \ufffd: the API decodes invalid UTF-8 with replacement, and Go's
# encoder writes each invalid byte as \ufffd.  A genuine U+FFFD sent by a user is escaped too (etcd would
# write it raw); both are the same JSON string to any JSON client.
_ESC[0xEF] = 4

cdef const char* _HEX = b"0123456789abcdef"


@cython.final
@cython.no_gc
cdef class Buf:
    """A growable byte buffer for building one JSON body without intermediate Python objects."""

    cdef char* data
    cdef Py_ssize_t length
    cdef Py_ssize_t cap

    def __cinit__(self):
        self.cap = 512
        self.length = 0
        self.data = <char*>malloc(self.cap)
        if self.data == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.data != NULL:
            free(self.data)

    cdef inline int reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self.length + extra
        cdef char* p
        if need <= self.cap:
            return 0
        while self.cap < need:
            self.cap *= 2
        p = <char*>realloc(self.data, self.cap)
        if p == NULL:
            raise MemoryError()
        self.data = p
        return 0

    cdef inline int put(self, const char* s, Py_ssize_t n) except -1:
        self.reserve(n)
        memcpy(self.data + self.length, s, n)
        self.length += n
        return 0

    cdef inline int put_char(self, char c) except -1:
        self.reserve(1)
        self.data[self.length] = c
        self.length += 1
        return 0

    cdef int put_int(self, int64_t v) except -1:
        cdef char tmp[24]
        cdef int i = 24
        cdef bint neg = v < 0
        cdef unsigned long long u = <unsigned long long>(-v) if neg else <unsigned long long>v
        if u == 0:
            i -= 1
            tmp[i] = 48
        while u:
            i -= 1
            tmp[i] = <char>(48 + u % 10)
            u //= 10
        if neg:
            i -= 1
            tmp[i] = 45
        return self.put(tmp + i, 24 - i)

    cdef int put_str(self, str s) except -1:
        cdef Py_ssize_t n, i, start
        cdef const char* u
        cdef uint8_t c, kind
        try:
            u = PyUnicode_AsUTF8AndSize(s, &n)
        except UnicodeEncodeError:
            # Lone surrogates (bytes that were not UTF-8): Go writes \ufffd for each.
            s = "".join(["\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in s])
            u = PyUnicode_AsUTF8AndSize(s, &n)
        self.reserve(n + 2)
        self.data[self.length] = 34
        self.length += 1
        start = 0
        i = 0
        while i < n:
            c = <uint8_t>u[i]
            kind = _ESC[c]
            if kind == 0:
                i += 1
                continue
            if kind == 4:
                if i + 2 < n and <uint8_t>u[i + 1] == 0xBF and <uint8_t>u[i + 2] == 0xBD:
                    self.put(u + start, i - start)
                    self.put(b"\\ufffd", 6)
                    i += 3
                    start = i
                else:
                    i += 1
                continue
            if kind == 3:
                if i + 2 < n and <uint8_t>u[i + 1] == 0x80 and (<uint8_t>u[i + 2] == 0xA8 or <uint8_t>u[i + 2] == 0xA9):
                    self.put(u + start, i - start)
                    self.put(b"\\u202", 5)
                    self.put_char(56 if <uint8_t>u[i + 2] == 0xA8 else 57)
                    i += 3
                    start = i
                else:
                    i += 1
                continue
            self.put(u + start, i - start)
            if kind == 1:
                self.reserve(2)
                self.data[self.length] = 92
                if c == 10:
                    self.data[self.length + 1] = 110
                elif c == 13:
                    self.data[self.length + 1] = 114
                elif c == 9:
                    self.data[self.length + 1] = 116
                else:
                    self.data[self.length + 1] = <char>c
                self.length += 2
            else:
                self.reserve(6)
                memcpy(self.data + self.length, b"\\u00", 4)
                self.data[self.length + 4] = _HEX[c >> 4]
                self.data[self.length + 5] = _HEX[c & 15]
                self.length += 6
            i += 1
            start = i
        self.put(u + start, n - start)
        self.put_char(34)
        return 0

    cdef int put_time(self, int64_t ns) except -1:
        """RFC 3339 UTC with the fraction's trailing zeros trimmed (Go's time.Time JSON)."""
        # cdivision is on: C division truncates toward zero, so floor by hand for times before 1970.
        cdef int64_t secs = ns // NS_PER_S
        cdef int64_t frac = ns - secs * NS_PER_S
        if frac < 0:
            secs -= 1
            frac += NS_PER_S
        cdef int64_t days = secs // 86400
        cdef int64_t rem = secs - days * 86400
        if rem < 0:
            days -= 1
            rem += 86400
        cdef int64_t z, era, doe, yoe, y, doy, mp, d, m
        cdef char tmp[16]
        cdef int nd
        # Howard Hinnant's civil_from_days.
        z = days + 719468
        era = (z if z >= 0 else z - 146096) // 146097
        doe = z - era * 146097
        yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
        y = yoe + era * 400
        doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
        mp = (5 * doy + 2) // 153
        d = doy - (153 * mp + 2) // 5 + 1
        m = mp + 3 if mp < 10 else mp - 9
        if m <= 2:
            y += 1
        self.put_char(34)
        if 0 <= y <= 9999:
            self._digits(y, 4)
        else:
            self.put_int(y)
        self.put_char(45)
        self._digits(m, 2)
        self.put_char(45)
        self._digits(d, 2)
        self.put_char(84)
        self._digits(rem // 3600, 2)
        self.put_char(58)
        self._digits((rem // 60) % 60, 2)
        self.put_char(58)
        self._digits(rem % 60, 2)
        if frac:
            nd = 9
            while frac % 10 == 0:
                frac //= 10
                nd -= 1
            self.put_char(46)
            self._digits(frac, nd)
        self.put(b'Z"', 2)
        return 0

    cdef int _digits(self, int64_t v, int width) except -1:
        cdef int i
        self.reserve(width)
        for i in range(width - 1, -1, -1):
            self.data[self.length + i] = <char>(48 + v % 10)
            v //= 10
        self.length += width
        return 0

    cdef bytes to_bytes(self):
        return PyBytes_FromStringAndSize(self.data, self.length)


cdef inline int _put_key(Buf b, bint first, const char* key, Py_ssize_t n) except -1:
    """Write ``key`` (``,"name":``), without its leading comma when it is the object's first field."""
    if first:
        return b.put(key + 1, n - 1)
    return b.put(key, n)


cdef int _put_view(Buf b, NodeView v) except -1:
    cdef bint first = True
    cdef bint first_child = True
    cdef NodeView child
    b.put_char(123)
    if v.key:
        b.put(b'"key":', 6)
        b.put_str(v.key)
        first = False
    if v.value is not None:
        _put_key(b, first, b',"value":', 9)
        b.put_str(<str>v.value)
        first = False
    if v.dir:
        _put_key(b, first, b',"dir":true', 11)
        first = False
    if v.expiration != 0:
        _put_key(b, first, b',"expiration":', 14)
        b.put_time(v.expiration)
        first = False
    if v.ttl != 0:
        _put_key(b, first, b',"ttl":', 7)
        b.put_int(v.ttl)
        first = False
    if v.nodes:
        _put_key(b, first, b',"nodes":[', 10)
        first = False
        for child in v.nodes:
            if not first_child:
                b.put_char(44)
            first_child = False
            _put_view(b, child)
        b.put_char(93)
    if v.modified_index != 0:
        _put_key(b, first, b',"modifiedIndex":', 17)
        b.put_int(v.modified_index)
        first = False
    if v.created_index != 0:
        _put_key(b, first, b',"createdIndex":', 16)
        b.put_int(v.created_index)
    b.put_char(125)
    return 0


def format_time(int64_t ns) -> str:
    """The JSON string (without quotes) etcd writes for an expiration of ``ns`` unix nanoseconds."""
    cdef Buf b = Buf()
    b.put_time(ns)
    cdef bytes out = b.to_bytes()
    return out[1:len(out) - 1].decode()


def encode_string(str s) -> bytes:
    """A JSON string literal exactly as Go's encoding/json writes it."""
    cdef Buf b = Buf()
    b.put_str(s)
    return b.to_bytes()


# ----- the tree --------------------------------------------------------------------------------------


@cython.final
cdef class KeyIndex:
    """The key tree rooted at ``/`` (a permanent directory with indexes 0)."""

    cdef readonly Node root

    def __init__(self):
        self.root = Node("/", "", True, 0, 0)

    cdef Node _walk(self, str path, Py_ssize_t* fail_end):
        """The node at a clean ``path``, or None with ``fail_end[0]`` set: the end of the first
        missing component (> 0), or minus the length of the file's path in the way (<= 0)."""
        cdef Node curr = self.root
        cdef object child
        cdef Py_ssize_t n = len(path), start = 1, end
        while start < n:
            end = path.find("/", start)
            if end < 0:
                end = n
            if curr.children is None:
                fail_end[0] = -len(curr.path)
                return None
            child = curr.children.get(path if end == n else path[:end])
            if child is None:
                fail_end[0] = end
                return None
            curr = <Node>child
            start = end + 1
        return curr

    cpdef Node find(self, str path):
        """The node at a clean ``path``; PathError 100 (cause: first missing prefix) or 104 (cause: the
        file standing where a directory is needed)."""
        cdef Py_ssize_t fail_end = 0
        cdef Node node = self._walk(path, &fail_end)
        if node is None:
            if fail_end > 0:
                raise PathError(100, path[:fail_end])
            raise PathError(104, path[:-fail_end])
        return node

    cpdef Node get(self, str path):
        """The node at ``path`` or None (never raises)."""
        cdef Py_ssize_t fail_end = 0
        return self._walk(path, &fail_end)

    cpdef Node ensure_dir(self, str path, int64_t index):
        """The directory at a clean ``path``, creating missing ones with ``index`` (etcd's checkDir walk);
        PathError 104 with the blocking file's path."""
        cdef Node curr = self.root, nxt
        cdef object child
        cdef str prefix
        cdef Py_ssize_t n = len(path), start = 1, end
        while start < n:
            end = path.find("/", start)
            if end < 0:
                end = n
            prefix = path if end == n else path[:end]
            child = curr.children.get(prefix)
            if child is None:
                nxt = Node(prefix, "", True, index, 0)
                curr.children[prefix] = nxt
                curr = nxt
            else:
                curr = <Node>child
                if curr.children is None:
                    raise PathError(104, curr.path)
            start = end + 1
        return curr

    cpdef Node parent_of(self, Node node):
        """The directory holding ``node`` (None for the root or a detached node)."""
        cdef str p = node.path
        cdef Py_ssize_t slash = p.rfind("/")
        if slash < 0 or p == "/":
            return None
        cdef Node parent = self.get(p[:slash] if slash > 0 else "/")
        if parent is None or parent.children is None:
            return None
        if parent.children.get(p) is not node:
            return None
        return parent

    cpdef bint unlink(self, Node node):
        """Remove ``node`` from its parent's children; False if it was not attached."""
        cdef Node parent = self.parent_of(node)
        if parent is None:
            return False
        del parent.children[node.path]
        return True

    def subtree(self, Node top):
        """``top`` and every node below it in pre-order, children in insertion order (iterative: any depth)."""
        cdef list out = []
        cdef list stack = [top]
        cdef Node n
        while stack:
            n = stack.pop()
            out.append(n)
            if n.children:
                stack.extend(reversed(n.children.values()))
        return out


# ----- persistent records (storage/backend.py) --------------------------------------------------------

# Event actions by their record code: the order is part of the on-disk format (append only).
ACTIONS = ("get", "create", "set", "update", "delete", "compareAndSwap", "compareAndDelete", "expire")
cdef dict _ACTION_CODE = {a: i for i, a in enumerate(ACTIONS)}

cdef int NODE_HEADER = 25


cdef inline void _put_i64(char* p, int64_t v) noexcept:
    cdef unsigned long long u = <unsigned long long>v
    cdef int i
    for i in range(8):
        p[i] = <char>(u & 0xFF)
        u >>= 8


cdef inline int64_t _get_i64(const unsigned char* p) noexcept:
    cdef unsigned long long u = 0
    cdef int i
    for i in range(7, -1, -1):
        u = (u << 8) | p[i]
    return <int64_t>u


cdef inline void _put_u32(char* p, Py_ssize_t v) noexcept:
    p[0] = <char>(v & 0xFF)
    p[1] = <char>((v >> 8) & 0xFF)
    p[2] = <char>((v >> 16) & 0xFF)
    p[3] = <char>((v >> 24) & 0xFF)


cdef inline Py_ssize_t _get_u32(const unsigned char* p) noexcept:
    return p[0] | (p[1] << 8) | (p[2] << 16) | (<Py_ssize_t>p[3] << 24)


cdef inline bytes _utf8(str s):
    """UTF-8 of ``s``; lone surrogates (bytes that were not UTF-8) survive through ``surrogatepass``."""
    cdef Py_ssize_t n
    cdef const char* u
    try:
        u = PyUnicode_AsUTF8AndSize(s, &n)
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")
    return PyBytes_FromStringAndSize(u, n)


cdef inline str _from_utf8(const char* p, Py_ssize_t n):
    return PyUnicode_DecodeUTF8(p, n, "surrogatepass")


cpdef bytes node_key(str path):
    """The record key of the node at ``path``: its UTF-8 and a NUL."""
    cdef Py_ssize_t n
    cdef const char* u
    cdef bytes out
    try:
        u = PyUnicode_AsUTF8AndSize(path, &n)
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogatepass") + b"\x00"
    out = PyBytes_FromStringAndSize(NULL, n + 1)
    memcpy(<char*>out, u, n)
    (<char*>out)[n] = 0
    return out


cpdef bytes encode_node(Node node, int64_t ttl_seq):
    """The record of ``node``; ``ttl_seq`` is its deadline's tie-break order (ignored when permanent)."""
    cdef bint is_dir = node.children is not None
    cdef bytes value = b"" if is_dir else _utf8(node.value)
    cdef Py_ssize_t vn = len(value)
    cdef Py_ssize_t size = NODE_HEADER + (8 if node.expire_ns != 0 else 0) + vn
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = <char*>out
    p[0] = 1 if is_dir else 0
    _put_i64(p + 1, node.created_index)
    _put_i64(p + 9, node.modified_index)
    _put_i64(p + 17, node.expire_ns)
    p += NODE_HEADER
    if node.expire_ns != 0:
        _put_i64(p, ttl_seq)
        p += 8
    if vn:
        memcpy(p, <const char*>value, vn)
    return out


def put_nodes(object put, dict nodes, dict ttl_live, bytes prefix=b""):
    """``put(key, record)`` for every ``path -> Node`` of ``nodes``; ``ttl_live`` maps a node with a TTL to
    its deadline's sequence number (TTLIndex.live).  ``prefix`` leads every key (a namespace's key space)."""
    cdef str path
    cdef Node node
    cdef object seq
    for path, node in nodes.items():
        seq = ttl_live.get(node, 0) if node.expire_ns != 0 else 0
        if prefix:
            put(prefix + node_key(path), encode_node(node, seq))
        else:
            put(node_key(path), encode_node(node, seq))


def load_nodes(KeyIndex tree, object items, bytes prefix=b""):
    """Build the tree from ``(key, record)`` pairs in key order, starting at the first node key; stops at
    the first key that is not a node key (``prefix`` + a node key, when a prefix is given).  Returns
    ``(count, ttl)`` where ``ttl`` lists ``(ttl_seq, node)`` for every node with a deadline.  ValueError if a
    record has no parent."""
    cdef list ttl = []
    cdef Py_ssize_t count = 0, kn, slash, i, rn
    cdef bytes key, rec
    cdef const char* k
    cdef const unsigned char* r
    cdef Node node, parent = tree.root
    cdef bytes parent_key = b""  # the root's path bytes without its "/": children's keys are "/name"
    cdef object found
    cdef str path
    cdef Py_ssize_t pn = len(prefix)
    for key, rec in items:
        if pn:
            if key[:pn] != prefix:
                break
            key = key[pn:]
        k = <const char*>key
        kn = len(key) - 1  # without the NUL
        if kn < 1 or k[0] != 47 or k[kn] != 0:
            break
        slash = kn - 1
        while slash > 0 and k[slash] != 47:
            slash -= 1
        r = <const unsigned char*>(<const char*>rec)
        rn = len(rec)
        if rn < NODE_HEADER:
            raise ValueError(f"short node record at {key!r}")
        # The parent: usually the previous directory or the previous parent (keys come in order).
        if len(parent_key) != slash or memcmp(<const char*>parent_key, k, slash) != 0:
            found = tree.get(_from_utf8(k, slash) if slash > 0 else "/")
            if found is None or (<Node>found).children is None:
                raise ValueError(f"node record without a parent directory: {key!r}")
            parent = <Node>found
            parent_key = key[:slash]
        path = _from_utf8(k, kn)
        node = Node.__new__(Node)
        node.path = path
        node.created_index = _get_i64(r + 1)
        node.modified_index = _get_i64(r + 9)
        node.expire_ns = _get_i64(r + 17)
        i = NODE_HEADER
        if node.expire_ns != 0:
            ttl.append((_get_i64(r + NODE_HEADER), node))
            i += 8
        if r[0] & 1:
            node.value = ""
            node.children = {}
        else:
            node.value = _from_utf8(<const char*>r + i, rn - i)
            node.children = None
        parent.children[path] = node
        if node.children is not None:
            parent = node
            parent_key = key[:kn]
        count += 1
    return count, ttl


cdef inline Py_ssize_t _view_record_size(bytes key, bytes value) noexcept:
    return 37 + len(key) + (4 + len(value) if value is not None else 0)


cdef char* _put_view_record(char* p, NodeView v, bytes key, bytes value) noexcept:
    """Write the record of ``v`` (``key``/``value``: its key and value in UTF-8) at ``p``; returns its end."""
    cdef Py_ssize_t kn = len(key), vn
    p[0] = (1 if v.dir else 0) | (2 if value is not None else 0)
    _put_i64(p + 1, v.expiration)
    _put_i64(p + 9, v.ttl)
    _put_i64(p + 17, v.modified_index)
    _put_i64(p + 25, v.created_index)
    _put_u32(p + 33, kn)
    memcpy(p + 37, <const char*>key, kn)
    p += 37 + kn
    if value is not None:
        vn = len(value)
        _put_u32(p, vn)
        memcpy(p + 4, <const char*>value, vn)
        p += 4 + vn
    return p


cpdef bytes encode_event(Event e):
    """The record of a history event (see the module docstring): sized first, then written in place."""
    cdef NodeView node = e.node, prev = e.prev_node
    cdef bytes key, value = None, prev_key = None, prev_value = None
    cdef int code = _ACTION_CODE[e.action]
    if node is None:
        raise ValueError("an event always has a node")
    if node.nodes is not None or (prev is not None and prev.nodes is not None):
        raise ValueError("an event's view never lists children")
    key = _utf8(node.key)
    if node.value is not None:
        value = _utf8(<str>node.value)
    cdef Py_ssize_t size = 10 + _view_record_size(key, value)
    if prev is not None:
        prev_key = _utf8(prev.key)
        if prev.value is not None:
            prev_value = _utf8(<str>prev.value)
        size += _view_record_size(prev_key, prev_value)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = <char*>out
    p[0] = <char>code
    p[1] = (1 if e.refresh else 0) | (2 if prev is not None else 0) | (4 if e.internal else 0)
    _put_i64(p + 2, e.etcd_index)
    p = _put_view_record(p + 10, node, key, value)
    if prev is not None:
        _put_view_record(p, prev, prev_key, prev_value)
    return out


def put_events(object put, list events, list slot_keys):
    """``put(slot key, encode_event(e))`` for every event, in order: an event's slot is its node's
    modifiedIndex modulo ``len(slot_keys)`` (the history ring of storage/backend.py)."""
    cdef Event e
    cdef int64_t index
    cdef Py_ssize_t slots = len(slot_keys)
    for e in events:
        index = e.node.modified_index
        if index < 0:
            raise ValueError("an event index is never negative")
        put(slot_keys[index % slots], encode_event(e))


cdef NodeView _get_view_record(const unsigned char* r, Py_ssize_t n, Py_ssize_t* pos):
    cdef Py_ssize_t i = pos[0], kn, vn
    if i + 37 > n:
        raise ValueError("short event record")
    cdef NodeView v = NodeView.__new__(NodeView)
    cdef unsigned char flags = r[i]
    v.dir = flags & 1
    v.expiration = _get_i64(r + i + 1)
    v.ttl = _get_i64(r + i + 9)
    v.modified_index = _get_i64(r + i + 17)
    v.created_index = _get_i64(r + i + 25)
    kn = _get_u32(r + i + 33)
    i += 37
    if i + kn > n:
        raise ValueError("short event record")
    v.key = _from_utf8(<const char*>r + i, kn)
    i += kn
    v.value = None
    if flags & 2:
        if i + 4 > n:
            raise ValueError("short event record")
        vn = _get_u32(r + i)
        i += 4
        if i + vn > n:
            raise ValueError("short event record")
        v.value = _from_utf8(<const char*>r + i, vn)
        i += vn
    v.nodes = None
    pos[0] = i
    return v


cpdef Event decode_event(bytes rec):
    cdef const unsigned char* r = <const unsigned char*>(<const char*>rec)
    cdef Py_ssize_t n = len(rec), pos = 10
    if n < 10 or r[0] >= len(ACTIONS):
        raise ValueError("bad event record")
    cdef Event e = Event.__new__(Event)
    e.action = ACTIONS[r[0]]
    e.refresh = r[1] & 1
    e.internal = (r[1] & 4) != 0
    e.etcd_index = _get_i64(r + 2)
    e.node = _get_view_record(r, n, &pos)
    e.prev_node = _get_view_record(r, n, &pos) if r[1] & 2 else None
    if pos != n:
        raise ValueError("trailing bytes in event record")
    return e
