defmodule ElixirAppTest do
  use ExUnit.Case

  setup_all do
    c = ElixirApp.cnode()
    on_exit(&ElixirApp.stop_cnode/0)
    %{cnode: c}
  end

  test "C cache workers from Elixir, found through :global", %{cnode: c} do
    puts = Map.get(ElixirApp.Stats.get(), :put, 0)
    {:ok, pid} = ElixirApp.put(:song, "la la la")
    assert node(pid) == c
    assert ElixirApp.get(:song) == {:ok, "la la la"}
    assert {:cache, :song} in :global.registered_names()
    assert ElixirApp.put(:song, "other") == {:ok, pid}
    assert ElixirApp.drop(:song) == :ok
    assert ElixirApp.Stats.get() |> Map.get(:put) == puts + 2
  end

  test "a GenServer named {:via, :cnode_registry, ...}" do
    assert ElixirApp.Greeter.hello("ada") == "hello ada (1)"
    assert [{pid, _}] = :cnode_registry.lookup(:app_reg, :greeter)

    assert pid ==
             Process.whereis(ElixirApp.Sup)
             |> Supervisor.which_children()
             |> Enum.find_value(fn {id, p, _, _} -> id == ElixirApp.Greeter && p end)

    assert GenServer.whereis({:via, :cnode_registry, {:app_reg, :greeter}}) == pid
  end

  test "the C echo worker answers GenServer.call", %{cnode: c} do
    assert GenServer.call({:echo, c}, %{elixir: [1, 2, 3]}) == %{elixir: [1, 2, 3]}
  end
end
