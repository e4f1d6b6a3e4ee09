# :cnode_registry from Elixir against the real cnode program's registry (issue
# 7): a C cache worker's {:cache, id} entry is found from Elixir, an Elixir
# process's entry is seen by the C side (the demo's echo {:lookup, key}), owner
# death on either side empties the other side's view, :via names reach C
# workers, listeners hear C-side registrations. The runner node is distributed
# (test_helper.exs). CNB_NIF_TEST_CNODE=/path/to/cnode tries another build.
defmodule CnodeBridge.RegistryCnodeTest.Env do
  @moduledoc false
  # The cnode program to run: CNB_NIF_TEST_CNODE, or the real one.
  def opts do
    case System.get_env("CNB_NIF_TEST_CNODE") do
      nil -> %{}
      "" -> %{}
      exe -> %{exe: String.to_charlist(exe)}
    end
  end

  def path do
    Map.get(opts(), :exe, Path.join([:cnb_cluster.root(), "erlang_side", "priv", "cnode"]))
  end

  # The C-node tests need cnode/main.c to start the registry worker.
  def wired? do
    case File.read(path()) do
      {:ok, bin} -> :binary.match(bin, "cnode_registry: serving") != :nomatch
      _ -> false
    end
  end
end

defmodule CnodeBridge.RegistryCnodeTest do
  use ExUnit.Case, async: false
  alias CnodeBridge.RegistryCnodeTest.Env

  @wired Env.wired?()

  if not @wired do
    @moduletag :skip
  end

  setup_all do
    if @wired do
      {_port, cnode} = CnbTest.start_cnode(~c"creg", {[~c"--demo"], Env.opts()})
      %{cnode: cnode}
    else
      IO.puts("\nregistry_cnode_test: SKIPPED: #{Env.path()} does not start the cnode_registry worker")
      %{}
    end
  end

  setup %{cnode: c} do
    name = :"creg_#{System.unique_integer([:positive])}"
    Process.flag(:trap_exit, true)
    {:ok, att} = :cnode_registry.attach(name, c)

    on_exit(fn -> :cnode_registry.detach(name) end)
    %{reg: name, attachment: att}
  end

  defp wait_until(f, ms \\ 5000) do
    cond do
      f.() -> true
      ms <= 0 -> false
      true -> Process.sleep(1); wait_until(f, ms - 1)
    end
  end

  test "attached on the same host: the segment is mapped", %{reg: r} do
    assert GenServer.call(r, :mode) == :shared
  end

  test "a C cache worker's {:cache, id} entry is found from Elixir", %{cnode: c, reg: r} do
    {:ok, w} = GenServer.call({:cache_sup, c}, {:start, 1001, "payload"})
    # The demo registers the content as the value.
    assert :cnode_registry.lookup(r, {:cache, 1001}) == [{w, "payload"}]
    assert :cnode_registry.keys(r, w) == [{:cache, 1001}]
    assert GenServer.call({:via, :cnode_registry, {r, {:cache, 1001}}}, :get) == {:ok, "payload"}
    :ok = GenServer.call(w, :stop)
    assert wait_until(fn -> :cnode_registry.lookup(r, {:cache, 1001}) == [] end)
  end

  test "an Elixir process's entry is seen by the C side", %{cnode: c, reg: r} do
    {:ok, _} = :cnode_registry.register(r, {:user, "ann"}, %{role: :admin})
    me = self()
    assert GenServer.call({:echo, c}, {:lookup, {:user, "ann"}}) == [{me, %{role: :admin}}]
    :ok = :cnode_registry.unregister(r, {:user, "ann"})
    assert GenServer.call({:echo, c}, {:lookup, {:user, "ann"}}) == []
  end

  test "an Elixir owner's death empties the C side's view", %{cnode: c, reg: r} do
    parent = self()

    owner =
      spawn(fn ->
        {:ok, _} = :cnode_registry.register(r, {:user, "bob"}, 1)
        send(parent, :registered)
        Process.sleep(:infinity)
      end)

    assert_receive :registered
    assert [{^owner, 1}] = GenServer.call({:echo, c}, {:lookup, {:user, "bob"}})
    t0 = System.monotonic_time(:microsecond)
    Process.exit(owner, :kill)
    assert wait_until(fn -> GenServer.call({:echo, c}, {:lookup, {:user, "bob"}}) == [] end)
    IO.puts("\n  registry_cnode_test: Elixir owner killed -> gone from the C view in " <>
              "#{System.monotonic_time(:microsecond) - t0} us (incl. the echo round trips)")
  end

  test "a :via name owned by an Elixir GenServer", %{reg: r} do
    {:ok, a} = Agent.start_link(fn -> 1 end, name: {:via, :cnode_registry, {r, :counter}})
    assert Agent.get({:via, :cnode_registry, {r, :counter}}, & &1) == 1
    assert :cnode_registry.whereis_name({r, :counter}) == a
    Agent.stop(a)
    assert :cnode_registry.whereis_name({r, :counter}) == :undefined
  end

  test "listeners hear registrations made on the C side", %{cnode: c} do
    name = :"creg_l_#{System.unique_integer([:positive])}"
    Process.register(self(), :creg_listener)
    {:ok, _} = :cnode_registry.attach(name, c, %{listeners: [:creg_listener]})

    try do
      {:ok, w} = GenServer.call({:cache_sup, c}, {:start, 2002, :x})
      assert_receive {:register, ^name, {:cache, 2002}, ^w, :x}, 5000
      :ok = GenServer.call(w, :stop)
      assert_receive {:unregister, ^name, {:cache, 2002}, ^w}, 5000
      {:ok, _} = :cnode_registry.register(name, :mine, 1)
      me = self()
      assert_receive {:register, ^name, :mine, ^me, 1}
      refute_receive {:register, ^name, :mine, _, _}, 100
    after
      :cnode_registry.detach(name)
      Process.unregister(:creg_listener)
    end
  end

  test "remote mode gives the same results", %{cnode: c, reg: r} do
    name = :"creg_r_#{System.unique_integer([:positive])}"
    {:ok, _} = :cnode_registry.attach(name, c, %{mode: :remote})

    try do
      assert GenServer.call(name, :mode) == :remote
      {:ok, w} = GenServer.call({:cache_sup, c}, {:start, 3003, "x"})

      for reg <- [r, name] do
        assert [{^w, _}] = :cnode_registry.lookup(reg, {:cache, 3003})
        assert :cnode_registry.count_match(reg, {:cache, 3003}, :_) == 1
      end

      {:ok, _} = :cnode_registry.register(name, :remote_key, :v)
      assert :cnode_registry.lookup(r, :remote_key) == [{self(), :v}]
      :ok = GenServer.call(w, :stop)
    after
      :cnode_registry.detach(name)
    end
  end
end
