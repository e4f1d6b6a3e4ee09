# The seed's scenario with C workers, as an iex-style transcript with real
# output. Run by `make demo` (scripts/demo), which starts a private epmd and runs
# this script on a distributed Elixir node with the cnode_bridge application on
# its code path. It starts a second BEAM node (plain Erlang) and a supervised C
# node, walks through the steps, stops everything and exits 0.
defmodule Demo do
  def banner(text), do: IO.puts("\n# " <> text)

  # Prints an iex-style line for `code` evaluated on `where` and its result.
  def step(prompt, code, fun) do
    IO.puts(IO.ANSI.format([:bright, "#{prompt}> ", :reset, code]))
    result = fun.()
    IO.puts(inspect(result, pretty: true, width: 90))
    result
  end

  def wait_until(fun, ms \\ 5000) do
    deadline = System.monotonic_time(:millisecond) + ms

    Stream.repeatedly(fn ->
      fun.() || (Process.sleep(10) && false)
    end)
    |> Enum.find(fn ok -> ok || System.monotonic_time(:millisecond) > deadline end)
  end
end

{:ok, _} = Application.ensure_all_started(:cnode_bridge)
main = node()
cookie = Node.get_cookie()
epmd_port = System.fetch_env!("ERL_EPMD_PORT")

Demo.banner("A second BEAM node (plain Erlang) joins the cluster")

{:ok, peer, other} =
  :peer.start(%{
    name: :"demo_erl_#{System.pid()}",
    args: [~c"-setcookie", Atom.to_charlist(cookie)],
    env: [{~c"ERL_EPMD_PORT", String.to_charlist(epmd_port)}]
  })

true = Node.connect(other)
:ok = :global.sync()
IO.puts("nodes: #{inspect(Node.list())}")

Demo.banner("A supervised C node (the cnode program under cnode_bridge_sup)")

{:ok, cnode} =
  Demo.step("iex(#{main})", ":cnode_bridge.start_cnode(:cdemo, %{demo: true})", fn ->
    :cnode_bridge.start_cnode(:"cdemo_#{System.pid()}", %{demo: true, log_level: :warning})
  end)

IO.puts("hidden nodes: #{inspect(Node.list(:hidden))}")

Demo.banner("C cache workers {:cache, 1..3}, named in :global by the C side")

for id <- 1..3 do
  Demo.step(
    "iex(#{main})",
    "GenServer.call({:cache_sup, cnode}, {:start, #{id}, \"media #{id}\"})",
    fn -> GenServer.call({:cache_sup, cnode}, {:start, id, "media #{id}"}) end
  )
end

Demo.step("iex(#{main})", ":global.registered_names()", fn ->
  :global.registered_names() |> Enum.sort()
end)

pid1 =
  Demo.step("iex(#{main})", ":global.whereis_name({:cache, 1})", fn ->
    :global.whereis_name({:cache, 1})
  end)

IO.puts("node(pid) == cnode: #{node(pid1) == cnode}")

Demo.banner("From the other BEAM node")

Demo.step("erl(#{other})", "gen_server:call({global, {cache, 1}}, get)", fn ->
  :erpc.call(other, :gen_server, :call, [{:global, {:cache, 1}}, :get])
end)

Demo.step("erl(#{other})", "global:whereis_name({cache, 2}) =:= <the same pid as here>", fn ->
  :erpc.call(other, :global, :whereis_name, [{:cache, 2}]) == :global.whereis_name({:cache, 2})
end)

Demo.banner("The shared registry through the NIF: the C node's own segment, mapped here")

# link: false, as in iex: the C node's death below ends the attachment, not
# this script (attach/2 links to its caller, like start_link).
Demo.step("iex(#{main})", ":cnode_registry.attach(:reg, cnode, link: false)", fn ->
  :cnode_registry.attach(:reg, cnode, link: false)
end)

att_ref = Process.monitor(:reg)

Demo.step("iex(#{main})", ":cnode_registry.lookup(:reg, {:cache, 1})", fn ->
  :cnode_registry.lookup(:reg, {:cache, 1})
end)

Demo.banner("An Elixir process registers in the shared registry; the C side sees it")

me = self()

elixir_proc =
  spawn(fn ->
    {:ok, _} = :cnode_registry.register(:reg, {:user, 42}, %{name: "ada"})
    send(me, :registered)

    receive do
      :stop -> :ok
    end
  end)

receive do
  :registered -> :ok
end

IO.puts("iex(#{main})> spawn(fn -> :cnode_registry.register(:reg, {:user, 42}, %{name: \"ada\"}) ... end)")
IO.puts(inspect(elixir_proc))

Demo.step("iex(#{main})", "GenServer.call({:echo, cnode}, {:lookup, {:user, 42}})  # C's view", fn ->
  GenServer.call({:echo, cnode}, {:lookup, {:user, 42}})
end)

send(elixir_proc, :stop)

Demo.wait_until(fn -> GenServer.call({:echo, cnode}, {:lookup, {:user, 42}}) == [] end)

Demo.step("iex(#{main})", "# the process ended; C's view again", fn ->
  GenServer.call({:echo, cnode}, {:lookup, {:user, 42}})
end)

Demo.banner("A second worker for MediaId 1 is refused with the live pid")

Demo.step("iex(#{main})", "GenServer.call({:cache_sup, cnode}, {:start, 1, \"again\"})", fn ->
  GenServer.call({:cache_sup, cnode}, {:start, 1, "again"})
end)

Demo.banner("A worker stopped: its name is gone everywhere")

ref = Process.monitor(pid1)

Demo.step("iex(#{main})", "GenServer.call({:global, {:cache, 1}}, :stop)", fn ->
  GenServer.call({:global, {:cache, 1}}, :stop)
end)

receive do
  {:DOWN, ^ref, :process, _, reason} -> IO.puts("DOWN: #{inspect(reason)}")
after
  5000 -> IO.puts("no DOWN")
end

Demo.wait_until(fn -> :global.whereis_name({:cache, 1}) == :undefined end)

Demo.step("iex(#{main})", ":global.whereis_name({:cache, 1})", fn ->
  :global.whereis_name({:cache, 1})
end)

Demo.step("erl(#{other})", "global:whereis_name({cache, 1})", fn ->
  :erpc.call(other, :global, :whereis_name, [{:cache, 1}])
end)

Demo.wait_until(fn -> :cnode_registry.lookup(:reg, {:cache, 1}) == [] end)

Demo.step("iex(#{main})", ":cnode_registry.lookup(:reg, {:cache, 1})", fn ->
  :cnode_registry.lookup(:reg, {:cache, 1})
end)

Demo.banner("The C node killed (kill -9): restarted by its supervisor, its names gone")

old_os_pid = :cnode_bridge.os_pid(cnode)
System.cmd("kill", ["-9", Integer.to_string(old_os_pid)])
IO.puts("killed os pid #{old_os_pid}")

Demo.wait_until(
  fn ->
    new = :cnode_bridge.os_pid(cnode)

    is_integer(new) and new != old_os_pid and
      (try do
         GenServer.call({:echo, cnode}, :ping) == :ping
       catch
         :exit, _ -> false
       end)
  end,
  20000
)

Demo.step("iex(#{main})", ":cnode_bridge.which_cnodes()", fn -> :cnode_bridge.which_cnodes() end)
IO.puts("new os pid: #{:cnode_bridge.os_pid(cnode)}")

Demo.step("iex(#{main})", ":global.registered_names()", fn ->
  :global.registered_names() |> Enum.sort()
end)

Demo.step("iex(#{main})", "GenServer.call({:echo, cnode}, {:hello, :again})", fn ->
  GenServer.call({:echo, cnode}, {:hello, :again})
end)

receive do
  {:DOWN, ^att_ref, :process, _, reason} ->
    IO.puts("the attachment to the dead node ended: #{inspect(reason)}; this process lives on")
after
  5000 -> :ok
end

Demo.step("iex(#{main})", ":cnode_registry.attach(:reg, cnode, link: false)  # the new incarnation's registry", fn ->
  :cnode_registry.attach(:reg, cnode, link: false)
end)

Demo.step("iex(#{main})", ":cnode_registry.lookup(:reg, {:cache, 2})", fn ->
  :cnode_registry.lookup(:reg, {:cache, 2})
end)

Demo.banner("Stopping everything")
:ok = :cnode_bridge.stop_cnode(cnode)
:peer.stop(peer)
IO.puts("done")
