# :cnode_registry.attach/3 safe in iex (issue 17): with `link: false` a C node
# killed with kill -9 ends the attachment only, never the process that
# attached (the default link is the one way to be told by an exit); options
# as a keyword list, bad ones refused; the attachment as a child of an
# application's supervisor (`{:cnode_registry, name: R, attach: cnode}`),
# re-attached to the new incarnation after cnode_bridge restarted the C node.
defmodule CnodeBridge.AttachTest do
  use ExUnit.Case, async: false

  setup_all do
    {:ok, _} = Application.ensure_all_started(:cnode_bridge)
    %{ctx: :persistent_term.get(:cnb_cluster_ctx)}
  end

  defp start_cnode, do: CnbTest.start_cnode(~c"att", [~c"--log-level", ~c"warning"])

  defp reg_name, do: :"att_reg_#{System.unique_integer([:positive])}"
  defp wait(fun, ms \\ 15000), do: :cnb_cluster.wait_until(fun, ms)

  # A process that does not trap exits (as an iex shell's evaluator) attaches
  # with opts and registers a key, then waits; returns it and the attachment.
  defp attacher(reg, c, opts) do
    me = self()

    pid =
      spawn(fn ->
        {:ok, att} = :cnode_registry.attach(reg, c, opts)
        {:ok, _} = :cnode_registry.register(reg, :mine, 1)
        send(me, {:attached, self(), att})
        Process.sleep(:infinity)
      end)

    assert_receive {:attached, ^pid, att}, 10000
    {pid, att}
  end

  test "link: false: a C node's kill -9 ends the attachment, not the caller", %{ctx: ctx} do
    {port, c} = start_cnode()
    reg = reg_name()
    {pid, att} = attacher(reg, c, link: false)
    {:links, links} = Process.info(pid, :links)
    refute att in links
    assert [{_, 1}] = :cnode_registry.lookup(reg, :mine)

    pref = Process.monitor(pid)
    aref = Process.monitor(att)
    {:ok, _} = :cnb_cluster.kill_cnode(ctx, port)
    assert_receive {:DOWN, ^aref, :process, ^att, {:shutdown, {:cnode_down, ^c}}}, 15000
    refute_receive {:DOWN, ^pref, :process, ^pid, _}, 500
    assert Process.alive?(pid)
    Process.exit(pid, :kill)
  end

  test "the default link: a linked caller is told by the attachment's exit", %{ctx: ctx} do
    {port, c} = start_cnode()
    reg = reg_name()
    {pid, att} = attacher(reg, c, [])
    {:links, links} = Process.info(pid, :links)
    assert att in links
    pref = Process.monitor(pid)
    {:ok, _} = :cnb_cluster.kill_cnode(ctx, port)
    assert_receive {:DOWN, ^pref, :process, ^pid, {:shutdown, {:cnode_down, ^c}}}, 15000
  end

  test "options: keyword lists and maps; bad ones refused" do
    {_port, c} = start_cnode()
    reg = reg_name()
    assert :cnode_registry.attach(reg, c, lnk: false) == {:error, {:bad_option, {:lnk, false}}}
    assert :cnode_registry.attach(reg, c, link: :no) == {:error, {:bad_option, {:link, :no}}}
    assert :cnode_registry.attach(reg, c, [:link]) == {:error, {:bad_option, [:link]}}
    improper = [{:link, false} | :x]
    assert :cnode_registry.attach(reg, c, improper) == {:error, {:bad_option, improper}}
    assert :cnode_registry.attach(reg, c, %{timeout: -1}) == {:error, {:bad_option, {:timeout, -1}}}
    assert Process.whereis(reg) == nil

    {:ok, att} = :cnode_registry.attach(reg, c, link: false, mode: :remote, timeout: 5000)
    assert GenServer.call(reg, :mode) == :remote
    {:links, links} = Process.info(self(), :links)
    refute att in links
    :ok = :cnode_registry.detach(reg)
  end

  test "as a supervisor's child: re-attached after cnode_bridge restarts the C node" do
    name = :cnb_cluster.unique_name(~c"attsup") |> List.to_atom()
    {:ok, c} = :cnode_bridge.start_cnode(name, demo: true, log_level: :warning)
    on_exit(fn -> :cnode_bridge.stop_cnode(c) end)
    reg = reg_name()

    spec = :cnode_registry.child_spec(name: reg, attach: c)
    assert %{id: ^reg, restart: :permanent, type: :worker} = spec
    {:ok, sup} = Supervisor.start_link([{:cnode_registry, name: reg, attach: c}], strategy: :one_for_one)
    att1 = Process.whereis(reg)
    assert [{^reg, ^att1, :worker, _}] = Supervisor.which_children(sup)

    {:ok, w} = GenServer.call({:cache_sup, c}, {:start, 5, "five"})
    assert :cnode_registry.lookup(reg, {:cache, 5}) == [{w, "five"}]

    os_pid = :cnode_bridge.os_pid(c)
    System.cmd("kill", ["-9", Integer.to_string(os_pid)])

    # The supervisor restarts the attachment, which waits for the new C node.
    # (which_children answers once the restart returned: attached.)
    assert wait(fn ->
             case Supervisor.which_children(sup) do
               [{^reg, pid, :worker, _}] when is_pid(pid) and pid != att1 -> true
               _ -> false
             end
           end)

    assert :cnode_bridge.os_pid(c) != os_pid

    assert :cnode_registry.lookup(reg, {:cache, 5}) == []
    {:ok, w2} = GenServer.call({:cache_sup, c}, {:start, 5, "five again"})
    assert wait(fn -> :cnode_registry.lookup(reg, {:cache, 5}) == [{w2, "five again"}] end)
    assert Process.alive?(sup)
    :ok = Supervisor.stop(sup)
    assert Process.whereis(reg) == nil
  end
end
