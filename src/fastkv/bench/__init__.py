"""fastkv against etcd: the benchmark tool (``python -m fastkv.bench``, ``fastkv-bench``).

Named scenarios (PUT, GET, quorum GET, cluster PUT, paced PUT, PUT during snapshots, watch fan-out,
memory per key) run against fastkv and etcd, alternating the systems run by run; results go to
``bench/results/<scenario>.json`` and ``bench/results/REPORT.md`` with plots.  See bench/README.md.
"""
