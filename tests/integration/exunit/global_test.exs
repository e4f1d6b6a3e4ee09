# The seed's flow from Elixir (issue 5): C cache workers named {:cache, media_id}
# in :global, listed with :global.registered_names() and called with
# GenServer.call({:global, {:cache, id}}, :get).
defmodule CnodeBridge.GlobalTest do
  use ExUnit.Case, async: false

  setup_all do
    {_port, cnode} =
      CnbTest.start_cnode(~c"gex", [~c"--demo", ~c"--connect", Atom.to_charlist(node())])

    %{cnode: cnode}
  end

  test "cache workers in :global, the seed's way", %{cnode: c} do
    pids =
      for id <- 1..3 do
        {:ok, pid} = GenServer.call({:cache_sup, c}, {:start, id, "media #{id}"})
        pid
      end

    names = :global.registered_names()
    for id <- 1..3, do: assert({:cache, id} in names)

    for {id, pid} <- Enum.zip(1..3, pids) do
      assert :global.whereis_name({:cache, id}) == pid
      assert node(pid) == c
      assert GenServer.call({:global, {:cache, id}}, :get) == {:ok, "media #{id}"}
    end

    # A second worker for the same id: the live one is named.
    assert GenServer.call({:cache_sup, c}, {:start, 1, "again"}) ==
             {:error, {:already_started, hd(pids)}}

    # Stopped: the name is gone.
    ref = Process.monitor(hd(pids))
    :ok = GenServer.call({:global, {:cache, 1}}, :stop)
    assert_receive {:DOWN, ^ref, :process, _, :normal}, 5000
    # global_name_server gets its own DOWN at the same moment; poll for it.
    assert :cnb_cluster.wait_until(fn -> :global.whereis_name({:cache, 1}) == :undefined end, 5000)

    for id <- 2..3, do: :ok = GenServer.call({:global, {:cache, id}}, :stop)
  end

  test "a worker named with {:via, :global, ...} answers like any GenServer", %{cnode: c} do
    {:ok, pid} = GenServer.call({:cache_sup, c}, {:start, :via_test, [1, 2, 3]})
    assert GenServer.call({:via, :global, {:cache, :via_test}}, :get) == {:ok, [1, 2, 3]}
    :ok = GenServer.call(pid, :stop)
  end
end
