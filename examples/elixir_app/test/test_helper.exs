# These tests talk to C nodes, so the test VM must be a distributed node. Plain
# `mix test` starts a VM that is not; then the run is handed to one that is:
# `elixir --sname ... -S mix test ...` (same arguments), registered with a
# private epmd that cnode_bridge's test kit starts and stops around it.
unless Node.alive?() do
  if System.get_env("ELIXIR_APP_RERUN"), do: raise("the re-run test VM is not distributed")
  System.put_env("ELIXIR_APP_RERUN", "1")
  name = "elixir_app_test_#{System.pid()}"
  args = ["--sname", name, "-S", "mix" | System.argv()]

  status =
    :cnode_bridge_test.exec_distributed(
      to_charlist(System.find_executable("elixir")),
      Enum.map(args, &to_charlist/1)
    )

  System.halt(status)
end

ExUnit.start(timeout: 120_000)
