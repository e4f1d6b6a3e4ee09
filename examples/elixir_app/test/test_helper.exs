# The test node must be distributed to talk to the C node: scripts/run-tests runs
# `mix test` under `elixir --sname ... -S` with a private epmd in ERL_EPMD_PORT.
unless Node.alive?() do
  IO.puts("elixir_app tests need a distributed node: run them through `make test`")
  System.halt(1)
end

ExUnit.start(timeout: 120_000)
