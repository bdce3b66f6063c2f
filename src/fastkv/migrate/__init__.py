"""Taking over an etcd 3.4/3.5 member's data dir, offline (docs/migration.md).

``etcdwal``, ``etcdsnap``, ``etcdpb``, ``protowire`` and ``v2json`` read etcd's formats; ``datadir``
rebuilds the v2 store etcd would hold after a restart; ``writer`` writes it as a fastkv data dir.  The
package sits above ``storage`` and ``v2store`` and below ``server``, which it does not import.
"""
