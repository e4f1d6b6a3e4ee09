# ExUnit suites of cnode_bridge (run by scripts/run-tests exunit). Test modules use
# :cnb_cluster (tests/integration/support/cnb_cluster.erl) for a private epmd, peer
# nodes and the real cnode program; run with the BEAM paths build/itest and
# erlang_side/ebin (scripts/run-tests sets them).
ExUnit.start(timeout: 180_000, capture_log: true)
