# The seed's chapter replayed with cnode_bridge: first a real DynamicSupervisor,
# CacheSupervisor, whose children are C cache workers (the C node's worker
# type `cache_worker`, cnode/demo.c) named {:global, {:cache, media_id}}; then
# the chapter's Registry part, unchanged but for one line:
# `alias :cnode_registry, as: Registry`, with {:via, Registry, {MyReg, key}}
# names, and the C node's own registry in the same supervision tree.
#
# Run by `make demo` (scripts/demo: a private epmd, a distributed node with
# erlang_side/ebin on its code path): it prints each step as iex would, with
# its real result, stops everything and exits 0. Each expression shown is the
# one that runs (SeedShow.iex/1 prints the code it is given).

# The chapter's code base, as written for Elixir's Registry:
alias :cnode_registry, as: Registry
alias :cnode_worker, as: CNodeWorker

defmodule SeedShow do
  @moduledoc false
  # Prints `expr` as iex would show it, runs it, prints and returns the result.
  defmacro iex(expr) do
    code = Macro.to_string(expr)

    quote do
      IO.puts(IO.ANSI.format([:bright, "iex> ", :reset, unquote(code)]))
      result = unquote(expr)
      IO.puts(inspect(result, pretty: true, width: 90))
      result
    end
  end

  def part(text), do: IO.puts("\n# " <> text)

  def wait_until(fun, ms \\ 10000) do
    cond do
      fun.() -> true
      ms <= 0 -> false
      true -> Process.sleep(20) && wait_until(fun, ms - 20)
    end
  end
end

defmodule CacheSupervisor do
  @moduledoc """
  The chapter's CacheSupervisor: one child per cached media, started on demand;
  here each child is a C worker on the C node, named {:global, {:cache, id}} by
  its own init, restarted by this supervisor when it crashes.
  """
  use DynamicSupervisor

  def start_link(cnode), do: DynamicSupervisor.start_link(__MODULE__, cnode, name: __MODULE__)

  @impl true
  def init(cnode) do
    :persistent_term.put({__MODULE__, :cnode}, cnode)
    DynamicSupervisor.init(strategy: :one_for_one, max_children: 100)
  end

  def put(media_id, content) do
    cnode = :persistent_term.get({__MODULE__, :cnode})

    DynamicSupervisor.start_child(
      __MODULE__,
      {CNodeWorker, [cnode, :cache_worker, [media_id, content]]}
    )
  end

  def get(media_id) do
    case find_cache(media_id) do
      nil -> nil
      pid -> GenServer.call(pid, :get)
    end
  end

  def find_cache(media_id), do: GenServer.whereis(name_for(media_id))

  def name_for(media_id), do: {:global, {:cache, media_id}}
end

defmodule CacheWorker do
  @moduledoc """
  The chapter's Elixir CacheWorker, named through the Registry
  (`{:via, Registry, {MyReg, {:cache, id}}}`, Registry being :cnode_registry).
  """
  use GenServer, restart: :transient

  def start_link({media_id, content}),
    do: GenServer.start_link(__MODULE__, content, name: name_for(media_id))

  def name_for(media_id), do: {:via, Registry, {MyReg, {:cache, media_id}}}
  def get_media(media_id), do: GenServer.call(name_for(media_id), :get)

  @impl true
  def init(content), do: {:ok, content}

  @impl true
  def handle_call(:get, _from, content), do: {:reply, {:ok, content}, content}
end

defmodule Seed do
  @moduledoc false
  import SeedShow

  def run do
    Logger.configure(level: :warning)
    {:ok, _} = Application.ensure_all_started(:cnode_bridge)

    part("A C node with the demo's worker types, supervised by cnode_bridge")

    {:ok, cnode} =
      iex(:cnode_bridge.start_cnode(:"seed_#{System.pid()}", demo: true, log_level: :warning))

    cache_supervisor(cnode)
    tree = registry(cnode)

    part("Stopping everything")
    iex(Supervisor.stop(tree))
    iex(:cnode_bridge.stop_cnode(cnode))
    IO.puts("done")
  end

  # The chapter's first half: C cache workers under CacheSupervisor.
  defp cache_supervisor(cnode) do
    part("CacheSupervisor: a DynamicSupervisor whose children are C cache workers")
    {:ok, sup} = iex(CacheSupervisor.start_link(cnode))

    iex(CacheSupervisor.put(7, "seven"))
    iex(CacheSupervisor.put(8, "eight"))
    iex(CacheSupervisor.put(9, "nine"))

    iex(DynamicSupervisor.count_children(CacheSupervisor))
    iex(CacheSupervisor.get(7))
    pid8 = iex(CacheSupervisor.find_cache(8))
    iex(node(pid8) == cnode)
    iex(:global.whereis_name({:cache, 8}) == pid8)
    iex(CacheSupervisor.put(8, "again"))

    part("A C worker crashes: the supervisor restarts it, the new one takes the name again")
    ref = Process.monitor(pid8)
    IO.puts(IO.ANSI.format([:bright, "iex> ", :reset, "GenServer.call(pid8, :crash)"]))

    try do
      GenServer.call(pid8, :crash)
    catch
      :exit, {reason, _call} -> IO.puts("** (exit) #{inspect(reason)}")
    end

    receive do
      {:DOWN, ^ref, :process, _, reason} -> IO.puts("DOWN: #{inspect(reason)}")
    end

    SeedShow.wait_until(fn ->
      new = CacheSupervisor.find_cache(8)
      is_pid(new) and new != pid8
    end)

    iex(CacheSupervisor.find_cache(8) != pid8)
    iex(CacheSupervisor.get(8))

    part("The supervisor shut down: each C worker's terminate runs, their names go")
    # The C side's view of its registry (the demo's echo worker answers it):
    # a cache worker registers {:cache, id} there in init, unregisters in terminate.
    iex(GenServer.call({:echo, cnode}, {:lookup, {:cache, 7}}))
    refs = for {_, pid, _, _} <- DynamicSupervisor.which_children(sup), do: Process.monitor(pid)
    iex(DynamicSupervisor.stop(CacheSupervisor))
    reasons = for ref <- refs, do: receive(do: ({:DOWN, ^ref, _, _, why} -> why))
    IO.puts("DOWN reasons: #{inspect(reasons)}")
    iex(GenServer.call({:echo, cnode}, {:lookup, {:cache, 7}}))
    SeedShow.wait_until(fn -> CacheSupervisor.find_cache(7) == nil end)
    iex(CacheSupervisor.find_cache(7))
  end

  # The chapter's second half: the Registry, and the C node's registry.
  defp registry(cnode) do
    part("The Registry part: `alias :cnode_registry, as: Registry`, the chapter's code unchanged")

    children = [
      {Registry, keys: :unique, name: MyReg},
      # The C node's own registry, where its C workers register, beside it.
      {Registry, name: CReg, attach: cnode},
      {DynamicSupervisor, name: ElixirCaches, strategy: :one_for_one}
    ]

    iex(Registry)
    IO.puts("iex> children = #{inspect(children)}")
    {:ok, tree} = iex(Supervisor.start_link(children, strategy: :one_for_one))

    iex(DynamicSupervisor.start_child(ElixirCaches, {CacheWorker, {1, "one"}}))
    iex(DynamicSupervisor.start_child(ElixirCaches, {CacheWorker, {2, "two"}}))

    iex(CacheWorker.get_media(1))
    iex(Registry.lookup(MyReg, {:cache, 2}))
    iex(Registry.count(MyReg))
    iex(GenServer.whereis({:via, Registry, {MyReg, {:cache, 3}}}))
    iex(Registry.register(MyReg, {:cache, 1}, :taken?))

    part("C workers in the C node's registry, reached with the same :via names")
    {:ok, cpid} = iex(CNodeWorker.start_link(cnode, :cache_worker, [42, "forty-two"]))
    SeedShow.wait_until(fn -> Registry.lookup(CReg, {:cache, 42}) != [] end)
    iex(Registry.lookup(CReg, {:cache, 42}))
    iex(GenServer.call({:via, Registry, {CReg, {:cache, 42}}}, :get))
    iex(GenServer.call(cpid, :stop))
    SeedShow.wait_until(fn -> Registry.lookup(CReg, {:cache, 42}) == [] end)
    iex(Registry.lookup(CReg, {:cache, 42}))
    tree
  end
end

Seed.run()
