# :cnode_bridge.start_cnode/2 as Elixir code calls it (issue 17): keyword
# lists and maps, strings as binaries or charlists; {:error, :not_distributed}
# on a node that is not alive; a start that fails returns why, with the C
# node's last output lines, and its fatal line is logged at level error. The
# runner node runs the cnode_bridge application; every C node it starts is
# stopped by the test that started it.
defmodule CnodeBridge.StartCnodeTest do
  use ExUnit.Case, async: false
  import ExUnit.CaptureLog

  setup_all do
    {:ok, _} = Application.ensure_all_started(:cnode_bridge)
    :ok
  end

  defp host, do: node() |> Atom.to_string() |> String.split("@") |> List.last()
  defp uname(prefix), do: :cnb_cluster.unique_name(String.to_charlist(prefix))
  defp exe, do: :cnode_bridge.cnode_executable()
  defp cnodes, do: for({n, _} <- :cnode_bridge.which_cnodes(), do: n)

  test "keyword lists and maps, strings as binaries or charlists" do
    cookie = Node.get_cookie()

    forms = [
      # Elixir's way: a keyword list of binaries, the name a binary too.
      {List.to_string(uname("kw")),
       fn name ->
         [
           host: host(),
           cookie: Atom.to_string(cookie),
           executable: List.to_string(exe()),
           connect: [Atom.to_string(node())],
           demo: true,
           log_level: :warning
         ]
         |> then(&{name, &1})
       end},
      # Erlang's way: a map of charlists.
      {uname("map"),
       fn name ->
         {name,
          %{
            host: String.to_charlist(host()),
            cookie: Atom.to_charlist(cookie),
            executable: exe(),
            demo: true,
            log_level: :warning
          }}
       end}
    ]

    for {name, opts_of} <- forms do
      {n, opts} = opts_of.(name)
      assert {:ok, c} = :cnode_bridge.start_cnode(n, opts)
      assert c == :"#{name}@#{host()}"
      assert GenServer.call({:echo, c}, :hi) == :hi
      assert :ok = :cnode_bridge.stop_cnode(c)
    end

    # The first value of a repeated key counts, as Keyword.get/2 has it.
    name = uname("first")
    assert {:error, {:bad_option, {:port, -1}}} =
             :cnode_bridge.start_cnode(name, port: -1, port: 0)
  end

  test "bad names and options: a clear error, nothing started" do
    before = cnodes()
    assert :cnode_bridge.start_cnode(:x, [:demo]) == {:error, {:bad_option, [:demo]}}
    assert :cnode_bridge.start_cnode(:x, host: 42) == {:error, {:bad_option, {:host, 42}}}
    assert :cnode_bridge.start_cnode(:x, cookie: {1}) == {:error, {:bad_option, {:cookie, {1}}}}

    assert :cnode_bridge.start_cnode(:x, connect: [7]) ==
             {:error, {:bad_option, {:connect, [7]}}}

    assert :cnode_bridge.start_cnode("bad name", []) ==
             {:error, {:bad_option, {:name, "bad name"}}}

    assert :cnode_bridge.start_cnode(:x, :nope) == {:error, {:bad_option, :nope}}
    assert :cnode_bridge.start_cnode(:x, colour: :blue) == {:error, {:bad_option, {:colour, :blue}}}
    assert cnodes() == before
  end

  test "a node that is not alive gets {:error, :not_distributed}" do
    # A peer without a node name, driven over its standard I/O.
    {:ok, peer, :nonode@nohost} = :peer.start(%{connection: :standard_io})

    try do
      for m <- [:cnode_bridge, :cnb_cluster] do
        dir = m |> :code.which() |> Path.dirname() |> String.to_charlist()
        true = :peer.call(peer, :code, :add_patha, [dir])
      end

      assert :peer.call(peer, :erlang, :is_alive, []) == false

      assert :peer.call(peer, :cnode_bridge, :start_cnode, [:x, [demo: true]]) ==
               {:error, :not_distributed}

      assert :peer.call(peer, :cnode_registry, :attach, [:r, :"c@host", [link: false]]) ==
               {:error, :not_distributed}
    after
      :peer.stop(peer)
    end
  end

  test "a start that fails returns the reason and the C node's last lines, logged as errors" do
    ctx = :persistent_term.get(:cnb_cluster_ctx)
    # The name is taken in epmd by a C node started outside the application.
    name = uname("taken")

    {:ok, port, _} =
      :cnb_cluster.start_cnode(ctx, [~c"--cookie", :cnb_cluster.cookie(ctx), ~c"--sname", name])

    try do
      before = cnodes()

      log =
        capture_log([level: :error], fn ->
          assert {:error, {:cnode_exited, 1, lines}} =
                   :cnode_bridge.start_cnode(List.to_atom(name), log_level: :warning)

          assert Enum.all?(lines, &is_binary/1) and length(lines) in 1..10
          assert List.last(lines) == "cnode: cannot start: already exists"
          assert Enum.any?(lines, &(&1 =~ "epmd refused the name"))
        end)

      # The program's fatal line itself at level error (not info).
      assert log =~ "[error] cnode: cannot start: already exists"
      assert cnodes() == before
    after
      :cnb_cluster.stop_cnode(ctx, port)
    end
  end

  test "a program that cannot run, or that dies before READY" do
    dir = Path.join(System.tmp_dir!(), "cnb_start_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    fake = Path.join(dir, "fake_cnode")

    File.write!(fake, """
    #!/bin/sh
    echo "some noise"
    echo "cnode: cannot start: the test says no" >&2
    exit 3
    """)

    File.chmod!(fake, 0o700)

    try do
      capture_log(fn ->
        assert :cnode_bridge.start_cnode(uname("fake"), executable: fake) ==
                 {:error,
                  {:cnode_exited, 3, ["some noise", "cnode: cannot start: the test says no"]}}

        missing = Path.join(dir, "missing")

        assert {:error, {:executable, path, :enoent}} =
                 :cnode_bridge.start_cnode(uname("missing"), executable: missing)

        assert to_string(path) == missing
      end)
    after
      File.rm_rf!(dir)
    end
  end

  test "the boot list takes the same options; a bad entry is left out" do
    ctx = :persistent_term.get(:cnb_cluster_ctx)
    name = List.to_string(uname("boot"))
    # As config/runtime.exs would give it: a keyword list, a binary name.
    env = ~s([{<<"#{name}">>, [{demo, true}, {log_level, warning}]}, {7, \#{}}, nonsense])

    {:ok, peer, app} =
      :cnb_cluster.start_node(ctx, %{name: ~c"bootapp", args: [~c"-cnode_bridge", ~c"cnodes", String.to_charlist(env)]})

    try do
      {:ok, _} = :cnb_cluster.call(peer, :application, :ensure_all_started, [:cnode_bridge])
      assert [{c, pid}] = :cnb_cluster.call(peer, :cnode_bridge, :which_cnodes, [])
      assert is_pid(pid) and node(pid) == app
      assert c == :"#{name}@#{host()}"
      assert :cnb_cluster.call(peer, :gen_server, :call, [{:echo, c}, :boot]) == :boot
    after
      :cnb_cluster.stop_node(ctx, peer)
    end
  end
end
