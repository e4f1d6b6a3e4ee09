# C workers as children of BEAM supervisors (issue 17): the demo's worker type
# `cache_worker` started with Erlang's own remote spawn, through
# :cnode_worker's child spec, under a DynamicSupervisor: restart on a crash
# with a new pid and the :global name taken again, shutdown with terminate run
# on the C side, which_children, init failures as {:error, reason}; and remote
# spawns of anything not registered as a type still refused with notsup.
defmodule CnodeBridge.CnodeWorkerTest do
  use ExUnit.Case, async: false

  alias :cnode_worker, as: CNodeWorker

  setup_all do
    {_port, cnode} =
      CnbTest.start_cnode(~c"cwk", [~c"--demo", ~c"--connect", Atom.to_charlist(node())])

    %{cnode: cnode}
  end

  # What the C side's own registry holds for key, through the demo's echo
  # worker: a cache worker registers there in init and unregisters in
  # terminate (the C node purges nothing of its own workers by itself).
  defp c_view(c, key), do: GenServer.call({:echo, c}, {:lookup, key})

  defp wait(fun, ms \\ 5000), do: :cnb_cluster.wait_until(fun, ms)

  defp child_pids(sup) do
    for {_, pid, :worker, [:cnode_worker]} <- DynamicSupervisor.which_children(sup), do: pid
  end

  test "C cache workers under a DynamicSupervisor: restart, :global name, shutdown", %{cnode: c} do
    {:ok, sup} = DynamicSupervisor.start_link(strategy: :one_for_one, max_restarts: 10)
    base = System.unique_integer([:positive])
    ids = for k <- 1..3, do: {base, k}

    pids =
      for id <- ids do
        {:ok, pid} =
          DynamicSupervisor.start_child(sup, {CNodeWorker, [c, :cache_worker, [id, "media"]]})

        assert node(pid) == c
        # Init ran before the pid came back: the name is taken already.
        assert :global.whereis_name({:cache, id}) == pid
        assert GenServer.call({:global, {:cache, id}}, :get) == {:ok, "media"}
        pid
      end

    assert Enum.sort(child_pids(sup)) == Enum.sort(pids)
    assert %{active: 3, workers: 3} = DynamicSupervisor.count_children(sup)

    # The name taken: the start fails as a gen_server's with {:global, name}.
    [id1, id2, id3] = ids
    [p1, p2, p3] = pids

    assert DynamicSupervisor.start_child(sup, {CNodeWorker, [c, :cache_worker, [id1, "x"]]}) ==
             {:error, {:already_started, p1}}

    # A crash: restarted with a new pid, which takes the :global name again;
    # the other children are untouched (one_for_one).
    ref = Process.monitor(p2)
    catch_exit(GenServer.call(p2, :crash))
    assert_receive {:DOWN, ^ref, :process, ^p2, {:callback_failed, :handle_call, _}}, 5000

    assert wait(fn ->
             case :global.whereis_name({:cache, id2}) do
               pid when is_pid(pid) -> pid != p2 and pid in child_pids(sup)
               _ -> false
             end
           end)

    new2 = :global.whereis_name({:cache, id2})
    assert node(new2) == c
    assert GenServer.call(new2, :get) == {:ok, "media"}
    assert Enum.sort(child_pids(sup)) == Enum.sort([p1, new2, p3])

    # Shutdown of the supervisor: each worker gets exit(pid, :shutdown) and
    # its terminate runs on the C side (its own registry entry is gone).
    assert [{^p3, "media"}] = c_view(c, {:cache, id3})
    refs = for p <- [p1, new2, p3], do: Process.monitor(p)
    :ok = DynamicSupervisor.stop(sup)

    for r <- refs, do: assert_receive({:DOWN, ^r, :process, _, :shutdown}, 5000)
    for id <- ids, do: assert(c_view(c, {:cache, id}) == [])
    assert wait(fn -> Enum.all?(ids, &(:global.whereis_name({:cache, &1}) == :undefined)) end)
  end

  test "start_link/3 links the caller; a bad argument list is an init failure", %{cnode: c} do
    id = {:link, System.unique_integer([:positive])}
    Process.flag(:trap_exit, true)
    {:ok, pid} = :cnode_bridge.start_link(c, :cache_worker, [id, "linked"])
    assert {:links, links} = Process.info(self(), :links)
    assert pid in links
    :ok = GenServer.call(pid, :stop)
    assert_receive {:EXIT, ^pid, :normal}, 5000

    # The demo's init wants [MediaId, Content]: anything else fails it.
    assert :cnode_bridge.start_link(c, :cache_worker, [:only_one]) == {:error, :init_failed}
    refute_receive {:EXIT, _, _}, 200
  after
    Process.flag(:trap_exit, false)
  end

  test "Erlang's own remote spawn starts a registered type", %{cnode: c} do
    id = {:spawn, System.unique_integer([:positive])}
    ref = :erlang.spawn_request(c, :cache_worker, :start, [id, "s"], [:monitor])
    assert_receive {:spawn_reply, ^ref, :ok, pid}, 5000
    assert GenServer.call(pid, :get) == {:ok, "s"}
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}, 5000

    Process.flag(:trap_exit, true)

    # [:link, :monitor], as the issue writes it: a crash is both an exit
    # signal and a DOWN, with the same reason.
    id1 = {:spawn_lm, System.unique_integer([:positive])}
    ref1 = :erlang.spawn_request(c, :cache_worker, :start, [id1, "lm"], [:link, :monitor])
    assert_receive {:spawn_reply, ^ref1, :ok, pid1}, 5000
    assert :global.whereis_name({:cache, id1}) == pid1
    catch_exit(GenServer.call(pid1, :crash))
    assert_receive {:EXIT, ^pid1, {:callback_failed, :handle_call, _}}, 5000
    assert_receive {:DOWN, ^ref1, :process, ^pid1, {:callback_failed, :handle_call, _}}, 5000

    id2 = {:spawn_link, System.unique_integer([:positive])}
    pid2 = Node.spawn_link(c, :cache_worker, :start, [id2, "t"])
    assert GenServer.call({:global, {:cache, id2}}, :get) == {:ok, "t"}
    :ok = GenServer.call(pid2, :stop)
    assert_receive {:EXIT, ^pid2, :normal}, 5000
  after
    Process.flag(:trap_exit, false)
  end

  test "remote spawn of anything not a registered type is notsup", %{cnode: c} do
    for {m, f, a} <- [{:no_such_type, :start, []}, {:cache_worker, :other, [1, 2]}, {:erlang, :apply, [fn -> :ok end, []]}] do
      ref = :erlang.spawn_request(c, m, f, a, [:link, :monitor])
      assert_receive {:spawn_reply, ^ref, :error, :notsup}, 5000
    end

    # Unknown spawn options of a type's spawn: badopt, as ERTS answers.
    ref = :erlang.spawn_request(c, :cache_worker, :start, [1, 2], [:no_such_option])
    assert_receive {:spawn_reply, ^ref, :error, :badopt}, 5000
  end
end
