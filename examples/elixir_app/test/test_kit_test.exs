defmodule ElixirApp.TestKitTest do
  # cnode_bridge's test kit in an ExUnit suite: each test gets a context (its
  # own nodes, stopped with the test process, however the test ends) and a
  # log directory of its own. This VM is distributed, so the context uses the
  # epmd and cookie it runs with and the nodes it starts reach this one.
  use ExUnit.Case

  setup %{test: test} do
    dir = Path.join(["_build", "test_logs", "#{inspect(__MODULE__)}", "#{test}"])
    ctx = :cnode_bridge_test.new(%{log_dir: to_charlist(dir)})
    on_exit(fn -> :cnode_bridge_test.stop(ctx) end)
    %{ctx: ctx}
  end

  setup_all do
    ElixirApp.cnode()
    on_exit(&ElixirApp.stop_cnode/0)
  end

  test "another BEAM node reads the app's C cache workers through :global", %{ctx: ctx} do
    {:ok, _} = ElixirApp.put(:kit, "from the kit")
    # Kit peers stay out of a full mesh unless asked (-connect_all true).
    {:ok, peer, _a} =
      :cnode_bridge_test.start_node(ctx, %{name: ~c"peer", args: [~c"-connect_all", ~c"true"]})

    assert :cnode_bridge_test.call(peer, :net_kernel, :connect_node, [node()])
    :ok = :cnode_bridge_test.call(peer, :global, :sync, [])

    assert :cnode_bridge_test.call(peer, GenServer, :call, [{:global, {:cache, :kit}}, :get]) ==
             {:ok, "from the kit"}

    assert ElixirApp.drop(:kit) == :ok
  end

  test "a C node of the test's own, connected to this node", %{ctx: ctx} do
    {:ok, h, c} = :cnode_bridge_test.start_cnode(ctx, %{connect: [node()], args: [~c"--demo"]})
    assert GenServer.call({:echo, c}, {:hello, 1}) == {:hello, 1}
    name = Atom.to_charlist(c)
    assert {^name, log} = List.keyfind(:cnode_bridge_test.log_files(ctx), name, 0)
    assert File.read!(log) =~ "READY #{c}"
    assert {:ok, _} = :cnode_bridge_test.wait_line(ctx, h, "READY", 1000)
  end
end
