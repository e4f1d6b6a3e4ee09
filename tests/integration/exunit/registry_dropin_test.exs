# :cnode_registry as a drop-in for Elixir's Registry (issue 17): every
# documented Registry function, run side by side against Registry and
# :cnode_registry, step by step on one registry each: the same results, the
# same exceptions with the same messages (a message naming Registry names
# :cnode_registry), the same links; partitions (the owner a register returns,
# dispatch per partition, parallel: true in other processes); child specs
# under a Supervisor; :via names in GenServer, Agent and Task.Supervisor; and
# code written for Registry compiled with `alias :cnode_registry, as:
# Registry`. Run: scripts/run-tests exunit.
defmodule CnodeRegistryDropIn.Side do
  @moduledoc false
  # Runs each step (label, fn ctx -> result end) against a fresh registry of
  # each module and returns the two lists of normalised outcomes.

  def run(opts, steps) do
    for mod <- [Registry, :cnode_registry] do
      name = :"dropin_#{System.unique_integer([:positive])}"
      parent = self()

      # Each side runs in a process of its own (trapping exits: a parallel
      # dispatch that fails must not end the test), so links are its own.
      pid =
        spawn(fn ->
          Process.flag(:trap_exit, true)
          {:ok, top} = mod.start_link([name: name] ++ opts)
          owners = for _ <- 1..3, do: spawn(fn -> owner_loop() end)
          labels = labels(top, owners)
          ctx = %{m: mod, r: name, owners: owners, top: top}
          out = for {label, f} <- steps, do: {label, norm(outcome(f, ctx), labels, mod)}
          for o <- owners, do: Process.exit(o, :kill)
          send(parent, {self(), out})
        end)

      receive do
        {^pid, out} -> out
      after
        60_000 -> raise "side #{inspect(mod)} did not finish"
      end
    end
  end

  def owner_loop do
    receive do
      {:run, f, from, ref} ->
        send(from, {ref, f.()})
        owner_loop()
    end
  end

  # f.() run by owner process o.
  def as(o, f) do
    ref = make_ref()
    send(o, {:run, f, self(), ref})

    receive do
      {^ref, r} -> r
    after
      5000 -> raise "owner did not answer"
    end
  end

  defp labels(top, owners) do
    parts =
      top
      |> Supervisor.which_children()
      |> Enum.reverse()
      |> Enum.with_index()
      |> Enum.map(fn {{_, pid, _, _}, _i} -> {pid, :partition} end)

    Map.new([{self(), :self}, {top, :top} | parts] ++
      Enum.map(Enum.with_index(owners), fn {o, i} -> {o, {:owner, i}} end))
  end

  defp outcome(f, ctx) do
    {:ok, f.(ctx)}
  rescue
    e -> {:raise, e.__struct__, Exception.message(e)}
  catch
    :exit, reason -> {:exit, reason}
  end

  def norm(t, labels, _mod) when is_pid(t), do: Map.get(labels, t, :other_pid)
  def norm(t, labels, mod) when is_list(t), do: Enum.map(t, &norm(&1, labels, mod))

  def norm(t, labels, mod) when is_tuple(t),
    do: t |> Tuple.to_list() |> Enum.map(&norm(&1, labels, mod)) |> List.to_tuple()

  def norm(t, labels, mod) when is_map(t) and not is_struct(t),
    do: Map.new(t, fn {k, v} -> {norm(k, labels, mod), norm(v, labels, mod)} end)

  # A message naming the module names Registry on both sides.
  def norm(t, _, :cnode_registry) when is_binary(t),
    do: String.replace(t, ":cnode_registry.", "Registry.")

  def norm(:cnode_registry, _, :cnode_registry), do: Registry
  def norm(t, _, _), do: t
end

defmodule CnodeRegistryDropIn.Written do
  @moduledoc false
  # Code written for Elixir's Registry (the examples of its documentation),
  # compiled twice: once as is, once with `alias :cnode_registry, as:
  # Registry`. Each function returns what the examples show.
  defmacro __using__(registry) do
    quote do
      alias unquote(registry), as: Registry

      def via_agent(reg) do
        {:ok, _} = Registry.start_link(keys: :unique, name: reg)
        name = {:via, Registry, {reg, "agent"}}
        {:ok, agent} = Agent.start_link(fn -> 0 end, name: name)
        a = Agent.get(name, & &1)
        Agent.update(name, &(&1 + 1))
        b = Agent.get(name, & &1)
        c = Registry.lookup(reg, "agent") == [{agent, nil}]
        d = Agent.start_link(fn -> 0 end, name: name) == {:error, {:already_started, agent}}
        {:ok, valued} = Agent.start_link(fn -> 0 end, name: {:via, Registry, {reg, "v", :hello}})
        e = Registry.lookup(reg, "v") == [{valued, :hello}]
        Agent.stop(agent)
        Agent.stop(valued)
        [a, b, c, d, e, Registry.lookup(reg, "agent")]
      end

      def dispatcher(reg) do
        {:ok, _} = Registry.start_link(keys: :duplicate, name: reg)
        {:ok, _} = Registry.register(reg, "hello", {Kernel, :is_pid})

        Registry.dispatch(reg, "hello", fn entries ->
          for {pid, {module, function}} <- entries, do: send(self(), apply(module, function, [pid]))
        end)

        receive do
          x -> x
        after
          1000 -> :nothing
        end
      end

      def pubsub(reg) do
        {:ok, _} =
          Registry.start_link(keys: :duplicate, name: reg, partitions: System.schedulers_online())

        {:ok, _} = Registry.register(reg, "hello", [])

        :ok =
          Registry.dispatch(reg, "hello", fn entries ->
            for {pid, _} <- entries, do: send(pid, {:broadcast, "world"})
          end)

        receive do
          x -> x
        after
          1000 -> :nothing
        end
      end

      def supervised(reg) do
        {:ok, sup} =
          Supervisor.start_link([{Registry, keys: :unique, name: reg}], strategy: :one_for_one)

        [{id, pid, type, _}] = Supervisor.which_children(sup)
        {:ok, _} = Registry.register(reg, "hello", :world)
        r = [id == reg, pid == Process.whereis(reg), type, Registry.lookup(reg, "hello") != []]
        # Unregistered first: a registered caller is linked to the registry.
        Registry.unregister(reg, "hello")
        Supervisor.stop(sup)
        r
      end

      def counts(reg) do
        Registry.start_link(keys: :unique, name: reg, meta: [custom_key: "custom_value"])
        {:ok, _} = Registry.register(reg, "hello", :world)
        {:ok, _} = Registry.register(reg, "world", :world)

        [
          Registry.count(reg),
          Registry.meta(reg, :custom_key),
          Registry.count_select(reg, [{{:_, :_, :world}, [], [true]}]),
          Enum.sort(Registry.select(reg, [{{:"$1", :_, :_}, [], [:"$1"]}])),
          Registry.update_value(reg, "hello", fn :world -> :later end),
          Registry.values(reg, "hello", self()),
          Enum.sort(Registry.keys(reg, self()))
        ]
      end
    end
  end
end

defmodule CnodeRegistryDropIn.WithRegistry do
  @moduledoc false
  use CnodeRegistryDropIn.Written, Registry
end

defmodule CnodeRegistryDropIn.WithCnode do
  @moduledoc false
  use CnodeRegistryDropIn.Written, :cnode_registry
end

defmodule CnodeRegistryDropInTest do
  use ExUnit.Case, async: false
  import CnodeRegistryDropIn.Side, only: [as: 2]
  alias CnodeRegistryDropIn.Side

  defp same(opts, steps) do
    [a, b] = Side.run(opts, steps)

    for {{label, x}, {_, y}} <- Enum.zip(a, b) do
      assert x == y, "step #{label}:\n  Registry:        #{inspect(x)}\n  :cnode_registry: #{inspect(y)}"
    end

    a
  end

  defp links(ctx) do
    {:links, l} = Process.info(self(), :links)
    parts = for {_, p, _, _} <- Supervisor.which_children(ctx.top), do: p
    l |> Enum.filter(&(&1 in parts)) |> Enum.sort()
  end

  defp unknown_steps do
    x = :no_such_registry_dropin
    me = self()

    [
      {"lookup", fn %{m: m} -> m.lookup(x, 1) end},
      {"register", fn %{m: m} -> m.register(x, 1, 1) end},
      {"unregister", fn %{m: m} -> m.unregister(x, 1) end},
      {"unregister_match", fn %{m: m} -> m.unregister_match(x, 1, :_) end},
      {"keys", fn %{m: m} -> m.keys(x, me) end},
      {"values", fn %{m: m} -> m.values(x, 1, me) end},
      {"count", fn %{m: m} -> m.count(x) end},
      {"count_match", fn %{m: m} -> m.count_match(x, 1, :_) end},
      {"match", fn %{m: m} -> m.match(x, 1, :_) end},
      {"select", fn %{m: m} -> m.select(x, []) end},
      {"count_select", fn %{m: m} -> m.count_select(x, []) end},
      {"dispatch", fn %{m: m} -> m.dispatch(x, 1, fn _ -> :ok end) end},
      {"update_value", fn %{m: m} -> m.update_value(x, 1, & &1) end},
      {"meta", fn %{m: m} -> m.meta(x, :k) end},
      {"put_meta", fn %{m: m} -> m.put_meta(x, :k, 1) end},
      {"delete_meta", fn %{m: m} -> m.delete_meta(x, :k) end},
      {"whereis_name", fn %{m: m} -> m.whereis_name({x, 1}) end},
      {"register_name", fn %{m: m} -> m.register_name({x, 1}, self()) end},
      {"unregister_name", fn %{m: m} -> m.unregister_name({x, 1}) end},
      {"send", fn %{m: m} -> m.send({x, 1}, :hi) end},
      {"lookup non-atom", fn %{m: m} -> m.lookup("x", 1) end},
      {"count non-atom", fn %{m: m} -> m.count(self()) end}
    ]
  end

  # Elixir 1.20's Registry takes keys: {:duplicate, :pid} (what :duplicate
  # now means) and {:duplicate, :key}, and names the kinds in its messages;
  # older ones refuse both. :cnode_registry follows the installed Elixir,
  # except that {:duplicate, :key} (partitions by key) is refused.
  test "keys: {:duplicate, :pid} and {:duplicate, :key} as the installed Registry takes them" do
    new_kinds =
      try do
        Registry.start_link(keys: :bogus, name: :dropin_probe)
      rescue
        e in ArgumentError -> e.message =~ "{:duplicate, :pid}"
      end

    pid_kind =
      for o <- [[keys: {:duplicate, :pid}]] do
        {"start_link #{inspect(o)}",
         fn %{m: m} ->
           name = :"dropin_kind_#{System.unique_integer([:positive])}"

           case m.start_link([name: name] ++ o) do
             {:ok, pid} ->
               r = [m.register(name, :k, 1) |> elem(0), m.register(name, :k, 2) |> elem(0),
                    length(m.lookup(name, :k))]
               Process.unlink(pid)
               Process.exit(pid, :shutdown)
               r

             other ->
               other
           end
         end}
      end

    if new_kinds do
      same([keys: :unique], pid_kind)
      assert_raise ArgumentError, ~r/\{:duplicate, :key\} is not supported/, fn ->
        :cnode_registry.start_link(keys: {:duplicate, :key}, name: :dropin_key_kind)
      end
    else
      same([keys: :unique], pid_kind ++
        [{"start_link {:duplicate, :key}",
          fn %{m: m} -> m.start_link(keys: {:duplicate, :key}, name: :dropin_key_kind) end}])
    end
  end

  test "every function on an unknown registry raises Registry's ArgumentError" do
    out = same([keys: :unique], unknown_steps())
    assert {"lookup", {:raise, ArgumentError, "unknown registry: :no_such_registry_dropin"}} in out
  end

  test "start_link and child_spec options: results and messages" do
    bad = [
      [],
      [name: :dropin_x],
      [keys: :bad, name: :dropin_x],
      [keys: :unique],
      [keys: :unique, name: "string"],
      [keys: :unique, name: {:via, :global, :x}],
      [keys: :unique, name: :dropin_x, meta: :a],
      [keys: :unique, name: :dropin_x, meta: [{"a", 1}]],
      [keys: :unique, name: :dropin_x, meta: [{{:t, 1}, 1}]],
      [keys: :unique, name: :dropin_x, partitions: 0],
      [keys: :unique, name: :dropin_x, partitions: :a],
      [keys: :unique, name: :dropin_x, partitions: nil],
      [keys: :unique, name: :dropin_x, listeners: :a],
      [keys: :unique, name: :dropin_x, listeners: ["a"]],
      [keys: :unique, name: :dropin_x, compressed: :yes],
      [keys: :unique, name: :dropin_x, compressed: nil],
      [keys: :x, name: "n", partitions: 0, listeners: 1, meta: 1, compressed: 1],
      [keys: :unique, name: :dropin_x, partitions: 0, listeners: 1, compressed: 1],
      [keys: :unique, name: :dropin_x, listeners: 1, compressed: 1]
    ]

    good = [
      [keys: :unique, partitions: 3, listeners: [], meta: [a: 1], compressed: true, other: 1],
      [keys: :duplicate, compressed: false]
    ]

    steps =
      for(o <- bad, do: {"start_link #{inspect(o)}", fn %{m: m} -> m.start_link(o) end}) ++
        for o <- good do
          {"start_link #{inspect(o)}",
           fn %{m: m} ->
             name = :"dropin_ok_#{System.unique_integer([:positive])}"
             {:ok, pid} = m.start_link([name: name] ++ o)
             again = m.start_link([name: name] ++ o)
             r = [again == {:error, {:already_started, pid}}, Process.whereis(name) == pid,
                  Process.info(pid, :trap_exit), m.meta(name, :a),
                  length(Supervisor.which_children(pid))]
             Process.unlink(pid)
             Process.exit(pid, :shutdown)
             r
           end}
        end ++
        [
          {"child_spec", fn %{m: m} -> m.child_spec(keys: :unique, name: :dropin_cs, partitions: 2) end},
          {"child_spec without name", fn %{m: m} -> m.child_spec(keys: :unique) end},
          {"deprecated start_link/3",
           fn %{m: m} ->
             name = :"dropin_old_#{System.unique_integer([:positive])}"
             {:ok, pid} = apply(m, :start_link, [:duplicate, name, [partitions: 2]])
             r = [m.register(name, :k, 1) |> elem(0), length(Supervisor.which_children(pid))]
             Process.unlink(pid)
             Process.exit(pid, :shutdown)
             r
           end}
        ]

    same([keys: :unique], steps)
  end

  for kind <- [:unique, :duplicate], parts <- [1, 4] do
    @opts [keys: kind, partitions: parts]
    @split kind == :duplicate and parts > 1
    @parts parts

    test "register, links and reads (#{kind}, #{parts} partitions)" do
      same(@opts, [
        {"register", fn %{m: m, r: r} -> m.register(r, :a, 1) end},
        {"linked to its partition", &links/1},
        {"register again", fn %{m: m, r: r} -> m.register(r, :a, 2) end},
        {"register b", fn %{m: m, r: r} -> m.register(r, {:b, 1}, %{v: [1.0]}) end},
        {"owners register",
         fn %{m: m, r: r, owners: os} -> for o <- os, do: as(o, fn -> m.register(r, :a, :o) end) end},
        {"owners' partitions",
         fn %{m: m, r: r, owners: os} -> for o <- os, do: as(o, fn -> m.register(r, :o, 1) end) end},
        {"lookup", fn %{m: m, r: r} -> Enum.sort(m.lookup(r, :a)) end},
        {"lookup none", fn %{m: m, r: r} -> m.lookup(r, :none) end},
        {"keys", fn %{m: m, r: r} -> Enum.sort(m.keys(r, self())) end},
        {"keys of a dead pid", fn %{m: m, r: r} -> m.keys(r, spawn(fn -> :ok end)) end},
        {"keys of a non-pid", fn %{m: m, r: r} -> m.keys(r, :a) end},
        {"values", fn %{m: m, r: r} -> Enum.sort(m.values(r, :a, self())) end},
        {"values of a non-pid", fn %{m: m, r: r} -> m.values(r, :a, :nopid) end},
        {"count", fn %{m: m, r: r} -> m.count(r) end},
        {"unregister one key", fn %{m: m, r: r} -> m.unregister(r, :a) end},
        {"still linked", &links/1},
        {"unregister a key never held", fn %{m: m, r: r} -> m.unregister(r, :never) end},
        {"still linked", &links/1},
        {"unregister_match no match", fn %{m: m, r: r} -> m.unregister_match(r, {:b, 1}, :nomatch) end},
        {"still linked", &links/1},
        {"unregister_match last", fn %{m: m, r: r} -> m.unregister_match(r, {:b, 1}, %{v: :_}) end},
        {"unlinked", &links/1},
        {"keys now", fn %{m: m, r: r} -> m.keys(r, self()) end},
        {"register via register_name", fn %{m: m, r: r} -> m.register_name({r, :via}, self()) end},
        {"linked again", &links/1},
        {"unregister_name", fn %{m: m, r: r} -> m.unregister_name({r, :via}) end},
        {"unlinked again", &links/1},
        {"count after", fn %{m: m, r: r} -> m.count(r) end}
      ])
    end

    test "dispatch (#{kind}, #{parts} partitions)" do
      me = self()

      steps = [
        {"owners register",
         fn %{m: m, r: r, owners: os} ->
           for {o, i} <- Enum.with_index(os), do: as(o, fn -> m.register(r, :topic, i) end)
         end},
        {"self registers", fn %{m: m, r: r} -> m.register(r, :topic, :me) end},
        {"dispatch", fn %{m: m, r: r} -> m.dispatch(r, :topic, &send(self(), {:got, self(), Enum.sort(&1)})) end},
        {"calls", fn _ -> split(drain(), @parts) end},
        {"dispatch parallel",
         fn %{m: m, r: r} ->
           caller = self()
           m.dispatch(r, :topic, &send(caller, {:got, self() == caller, Enum.sort(&1)}), parallel: true)
         end},
        # (in the order the processes answered: sorted first)
        {"parallel calls",
         fn _ ->
           drain()
           |> Enum.sort_by(fn {:got, _, [{pid, _} | _]} -> -:erlang.phash2(pid, @parts) end)
           |> split(@parts)
         end},
        {"dispatch mfa", fn %{m: m, r: r} -> m.dispatch(r, :topic, {__MODULE__, :got, [self()]}) end},
        {"mfa calls", fn _ -> split(drain(), @parts) end},
        {"dispatch nobody", fn %{m: m, r: r} -> m.dispatch(r, :nobody, &send(me, &1)) end},
        # (Registry's FunctionClauseError is in Keyword.get/3: the type only)
        {"dispatch non-list opts",
         fn %{m: m, r: r} ->
           try do
             m.dispatch(r, :nobody, &send(me, &1), :bad)
           rescue
             e -> e.__struct__
           end
         end},
        {"dispatch bad callback", fn %{m: m, r: r} -> m.dispatch(r, :topic, :bad) end},
        {"dispatch parallel raising",
         fn %{m: m, r: r} ->
           try do
             m.dispatch(r, :topic, fn _ -> raise "boom" end, parallel: true)
           catch
             :exit, {{%RuntimeError{message: msg}, _}, _} -> {:exit, msg}
           end
         end},
        {"a task's exit seen", fn _ -> Enum.any?(drain(), &match?({:EXIT, _, _}, &1)) end},
        {"dispatch raising", fn %{m: m, r: r} -> m.dispatch(r, :topic, fn _ -> raise "boom" end) end}
      ]

      out = same(@opts, steps)

      # Once per partition with entries (highest first), in processes of
      # their own with parallel: true.
      {_, {:ok, calls}} = List.keyfind(out, "calls", 0)
      assert calls.per_partition and calls.ran_in == [:self]
      {_, {:ok, pcalls}} = List.keyfind(out, "parallel calls", 0)
      assert pcalls.per_partition
      assert pcalls.ran_in == if(@split, do: [false], else: [true])
    end

    test "match, select, update_value, meta and bad input (#{kind}, #{parts} partitions)" do
      same(@opts ++ [meta: [initial: {:some, "value"}]], [
        {"register", fn %{m: m, r: r} -> m.register(r, "hello", {1, :atom, 1}) end},
        {"register 2", fn %{m: m, r: r} -> m.register(r, "hello2", {2, :atom, 2}) end},
        {"match", fn %{m: m, r: r} -> m.match(r, "hello", {1, :_, :_}) end},
        {"match guards", fn %{m: m, r: r} -> m.match(r, "hello", {:_, :_, :"$1"}, [{:>, :"$1", 0}]) end},
        {"match bad guard", fn %{m: m, r: r} -> m.match(r, "hello", :_, [{:bad}]) end},
        {"match guards not a list", fn %{m: m, r: r} -> m.match(r, "hello", :_, :x) end},
        {"count_match", fn %{m: m, r: r} -> m.count_match(r, "hello", {:"$1", :_, :"$1"}) end},
        {"count_match bad guard", fn %{m: m, r: r} -> m.count_match(r, "hello", :_, [{:bad}]) end},
        {"unregister_match bad guard", fn %{m: m, r: r} -> m.unregister_match(r, "hello", :_, [{:bad}]) end},
        {"unregister_match guards not a list", fn %{m: m, r: r} -> m.unregister_match(r, "hello", :_, :x) end},
        {"select", fn %{m: m, r: r} -> Enum.sort(m.select(r, [{{:"$1", :"$2", :"$3"}, [], [{{:"$1", :"$2", :"$3"}}]}])) end},
        {"select []", fn %{m: m, r: r} -> m.select(r, []) end},
        {"select bad head", fn %{m: m, r: r} -> m.select(r, [{{:_, :_}, [], [true]}]) end},
        {"select atom head", fn %{m: m, r: r} -> m.select(r, [{:_, [], [true]}]) end},
        {"select bad guard", fn %{m: m, r: r} -> m.select(r, [{{:_, :_, :_}, [{:nofun, 1}], [true]}]) end},
        {"select not a list", fn %{m: m, r: r} -> m.select(r, :a) end},
        {"count_select", fn %{m: m, r: r} -> m.count_select(r, [{{:_, :_, {:_, :atom, :_}}, [], [true]}]) end},
        {"count_select bad head", fn %{m: m, r: r} -> m.count_select(r, [{:a, [], []}]) end},
        {"update_value", fn %{m: m, r: r} -> m.update_value(r, "hello", fn {a, b, c} -> {c, b, a + 1} end) end},
        {"update_value missing", fn %{m: m, r: r} -> m.update_value(r, "none", & &1) end},
        {"update_value non-fun", fn %{m: m, r: r} -> m.update_value(r, "hello", :x) end},
        {"update_value raising", fn %{m: m, r: r} -> m.update_value(r, "hello", fn _ -> raise "x" end) end},
        {"lookup after", fn %{m: m, r: r} -> m.lookup(r, "hello") end},
        {"meta", fn %{m: m, r: r} -> m.meta(r, :initial) end},
        {"put_meta tuple", fn %{m: m, r: r} -> m.put_meta(r, {:tuple, :key}, "v") end},
        {"meta tuple", fn %{m: m, r: r} -> m.meta(r, {:tuple, :key}) end},
        {"delete_meta", fn %{m: m, r: r} -> m.delete_meta(r, {:tuple, :key}) end},
        {"meta unknown key", fn %{m: m, r: r} -> m.meta(r, :unknown) end},
        {"meta string key", fn %{m: m, r: r} -> m.meta(r, "k") end},
        {"put_meta string key", fn %{m: m, r: r} -> m.put_meta(r, "k", 1) end},
        {"whereis_name", fn %{m: m, r: r} -> m.whereis_name({r, "hello"}) end},
        {"whereis_name 3", fn %{m: m, r: r} -> m.whereis_name({r, "hello", :v}) end},
        {"send", fn %{m: m, r: r} -> m.send({r, "hello"}, :m) end},
        {"send none", fn %{m: m, r: r} -> m.send({r, "none"}, :m) end},
        {"register_name for another pid",
         fn %{m: m, r: r} ->
           try do
             m.register_name({r, :k}, spawn(fn -> :ok end))
           rescue
             e in FunctionClauseError -> e.__struct__
           end
         end},
        {"messages", fn _ -> drain() end}
      ])
    end
  end

  test "owners: the partition of the registering pid, linked" do
    same([keys: :duplicate, partitions: 8], [
      {"register from many",
       fn %{m: m, r: r, top: top} ->
         me = self()
         parts = top |> Supervisor.which_children() |> Enum.reverse() |> Enum.map(&elem(&1, 1))

         for i <- 1..40 do
           pid = spawn(fn -> send(me, {self(), m.register(r, :k, i)}); Process.sleep(:infinity) end)

           receive do
             {^pid, {:ok, owner}} ->
               {Enum.find_index(parts, &(&1 == owner)) == :erlang.phash2(pid, 8),
                pid in elem(Process.info(owner, :links), 1)}
           end
         end
       end},
      {"count", fn %{m: m, r: r} -> m.count(r) end}
    ])
  end

  test "a registered process dies with its registry, and its entries with it" do
    same([keys: :unique, partitions: 2], [
      {"owner registers", fn %{m: m, r: r, owners: [o | _]} -> as(o, fn -> m.register(r, :k, 1) end) end},
      {"registry killed",
       fn %{top: top, owners: [o | _]} ->
         ref = Process.monitor(o)
         # o has taken the monitor before its registry dies: Erlang orders
         # signals per sender only, so our monitor and its partition's exit
         # may reach o in either order, and a monitor handled after the exit
         # is :noproc (seen once on OTP 27).
         :ok = as(o, fn -> :ok end)
         Process.exit(top, :kill)

         receive do
           {:DOWN, ^ref, _, _, reason} -> reason
         after
           5000 -> :alive
         end
       end}
    ])
  end

  test "child spec under a Supervisor: terminated, restarted with a new pid, entries gone" do
    for m <- [Registry, :cnode_registry] do
      name = :"dropin_sup_#{System.unique_integer([:positive])}"
      {:ok, sup} = Supervisor.start_link([{m, keys: :unique, name: name, partitions: 2}], strategy: :one_for_one)
      [{^name, top, :supervisor, _}] = Supervisor.which_children(sup)
      assert Process.whereis(name) == top
      assert length(Supervisor.which_children(top)) == 2
      {:ok, _} = m.register(name, :k, 1)
      Process.flag(:trap_exit, true)
      :ok = Supervisor.terminate_child(sup, name)
      # The registry this process is linked to went: its exit came here.
      assert_receive {:EXIT, _, :shutdown}
      assert_raise ArgumentError, "unknown registry: #{inspect(name)}", fn -> m.lookup(name, :k) end
      {:ok, top2} = Supervisor.restart_child(sup, name)
      assert top2 != top and Process.whereis(name) == top2
      assert m.lookup(name, :k) == []
      Supervisor.stop(sup)
    end
  end

  test ":via names in GenServer, Agent and Task.Supervisor" do
    for m <- [Registry, :cnode_registry] do
      name = :"dropin_via_#{System.unique_integer([:positive])}"
      {:ok, top} = m.start_link(keys: :unique, name: name)
      via = fn key -> {:via, m, {name, key}} end

      {:ok, gs} = GenServer.start_link(CnodeRegistryDropIn.Echo, :state, name: via.(:gs))
      assert GenServer.call(via.(:gs), :get) == :state
      assert GenServer.whereis(via.(:gs)) == gs
      assert GenServer.start_link(CnodeRegistryDropIn.Echo, :x, name: via.(:gs)) ==
               {:error, {:already_started, gs}}
      # The server is linked to the registry's partition, as with Registry.
      [{_, part, _, _}] = Supervisor.which_children(top)
      assert part in elem(Process.info(gs, :links), 1)
      GenServer.cast(via.(:gs), {:set, :new})
      assert GenServer.call(via.(:gs), :get) == :new

      {:ok, agent} = Agent.start_link(fn -> 1 end, name: via.(:agent))
      assert Agent.get(via.(:agent), & &1) == 1
      assert m.lookup(name, :agent) == [{agent, nil}]

      {:ok, tsup} = Task.Supervisor.start_link(name: via.(:tasks))
      assert Task.Supervisor.async(via.(:tasks), fn -> 6 * 7 end) |> Task.await() == 42
      assert m.whereis_name({name, :tasks}) == tsup

      GenServer.stop(gs)
      Agent.stop(agent)
      Supervisor.stop(tsup)
      assert wait_until(fn -> m.whereis_name({name, :gs}) == :undefined end)
      assert wait_until(fn -> m.lookup(name, :agent) == [] end)
      Process.unlink(top)
      Process.exit(top, :shutdown)
    end
  end

  test "code written for Registry runs unchanged with alias :cnode_registry, as: Registry" do
    for fun <- [:via_agent, :dispatcher, :pubsub, :supervised, :counts] do
      run = fn mod ->
        name = :"dropin_w_#{System.unique_integer([:positive])}"
        Task.async(fn -> apply(mod, fun, [name]) end) |> Task.await()
      end

      assert run.(CnodeRegistryDropIn.WithRegistry) == run.(CnodeRegistryDropIn.WithCnode),
             "#{fun} differs"
    end
  end

  def got(entries, to), do: send(to, {:got, :mfa, Enum.sort(entries)})

  # What dispatch calls ({:got, ran_in, entries} each) did: one call per
  # partition that has entries (the pid's hash decides it, so the groups
  # differ between two runs), highest partition first when serial; all the
  # entries; where the calls ran.
  defp split(calls, parts) do
    part = fn entries -> Enum.uniq(for {pid, _} <- entries, do: :erlang.phash2(pid, parts)) end
    groups = for {:got, _, entries} <- calls, do: part.(entries)
    all = for {:got, _, entries} <- calls, e <- entries, do: e

    %{
      per_partition: Enum.all?(groups, &(length(&1) == 1)) and
        length(groups) == length(part.(all)),
      descending: List.flatten(groups) == Enum.sort(List.flatten(groups), :desc),
      values: all |> Enum.map(&elem(&1, 1)) |> Enum.sort(),
      ran_in: calls |> Enum.map(&elem(&1, 1)) |> Enum.uniq()
    }
  end

  defp drain(acc \\ []) do
    receive do
      m -> drain([m | acc])
    after
      50 -> Enum.reverse(acc)
    end
  end

  defp wait_until(f, ms \\ 5000) do
    cond do
      f.() -> true
      ms <= 0 -> false
      true -> Process.sleep(10); wait_until(f, ms - 10)
    end
  end
end

defmodule CnodeRegistryDropIn.Echo do
  @moduledoc false
  use GenServer
  def init(s), do: {:ok, s}
  def handle_call(:get, _from, s), do: {:reply, s, s}
  def handle_cast({:set, s}, _), do: {:noreply, s}
end
