"""fastkv: a distributed key-value store that speaks the etcd v2 API."""

__version__ = "0.1.0"
# The etcd release whose v2 API behaviour fastkv reproduces, reported by /version.
ETCD_SERVER_VERSION = "3.4.23"
ETCD_CLUSTER_VERSION = "3.4.0"
