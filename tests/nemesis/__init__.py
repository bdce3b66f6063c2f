"""The nemesis: a seeded fault schedule against a real 3-member cluster (fastkv or etcd) under load,
judged by linearizability, acknowledged-write read-back, late-applied errored writes, convergence
and unavailability.  ``python -m tests.nemesis.run --help``; docs/reliability.md."""
