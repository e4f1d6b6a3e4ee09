# ExUnit suite driving the C demo workers from Elixir (issue 4): GenServer.call,
# send, Process.monitor and Process.link against the real cnode program.
defmodule CnodeBridge.RuntimeTest do
  use ExUnit.Case, async: false

  setup_all do
    {_port, cnode} = CnbTest.start_cnode(~c"cex", [~c"--demo"])
    %{cnode: cnode}
  end

  test "GenServer.call to a registered C worker", %{cnode: c} do
    assert GenServer.call({:echo, c}, {:hello, [1, 2, 3]}) == {:hello, [1, 2, 3]}
    assert GenServer.call({:echo, c}, %{"map" => <<1, 2>>}) == %{"map" => <<1, 2>>}
  end

  test "send to a name and receive the pong", %{cnode: c} do
    send({:echo, c}, {:ping, self()})
    assert_receive {:pong, pid}, 5000
    assert node(pid) == c
  end

  test "cache workers: start, get, stop", %{cnode: c} do
    {:ok, w} = GenServer.call({:cache_sup, c}, {:start, 7, "seven"})
    assert GenServer.call(w, :get) == {:ok, "seven"}
    assert GenServer.call(w, :stop) == :ok
    # The stop's reply goes out before the worker ends: a call right after it
    # sees :noproc, or :normal while the worker is still ending (as with an
    # Erlang GenServer).
    assert elem(catch_exit(GenServer.call(w, :get)), 0) in [:noproc, :normal]
  end

  test "Process.monitor sees the worker end, and a TTL expire", %{cnode: c} do
    {:ok, w} = GenServer.call({:cache_sup, c}, {:start, 8, :x})
    ref = Process.monitor(w)
    :ok = GenServer.call(w, :stop)
    assert_receive {:DOWN, ^ref, :process, ^w, :normal}, 5000

    # A TTL long enough for the monitor to be taken first (the timer runs
    # from the worker's start, before the start's reply comes back).
    {:ok, t} = GenServer.call({:cache_sup, c}, {:start, 9, :x, 1500})
    ref = Process.monitor(t)
    assert_receive {:DOWN, ^ref, :process, ^t, :normal}, 5000
  end

  test "Process.link gets the crash reason", %{cnode: c} do
    Process.flag(:trap_exit, true)
    {:ok, w} = GenServer.call({:cache_sup, c}, {:start, 10, :x})
    Process.link(w)
    assert {{:callback_failed, :handle_call, :einval}, _} = catch_exit(GenServer.call(w, :crash))
    assert_receive {:EXIT, ^w, {:callback_failed, :handle_call, :einval}}, 5000
    Process.flag(:trap_exit, false)
  end

  test "Process.exit(pid, :kill) ends a C worker", %{cnode: c} do
    {:ok, w} = GenServer.call({:cache_sup, c}, {:start, 11, :x})
    ref = Process.monitor(w)
    Process.exit(w, :kill)
    assert_receive {:DOWN, ^ref, :process, ^w, :killed}, 5000
  end

  test "monitor by name on an unknown name is noproc", %{cnode: c} do
    ref = Process.monitor({:nobody_here, c})
    assert_receive {:DOWN, ^ref, :process, {:nobody_here, ^c}, :noproc}, 5000
  end

  test "a C worker calls back into Elixir", %{cnode: c} do
    {:ok, srv} = GenServer.start_link(CnodeBridge.RuntimeTest.Echo, nil, name: :exunit_echo)
    assert GenServer.call({:probe, c}, {:call, :exunit_echo, node(), {:echo, :from_c}, 2000}) ==
             {:ok, :from_c}
    assert GenServer.call({:probe, c}, {:call, srv, {:echo, 42}, 2000}) == {:ok, 42}
  end
end

defmodule CnodeBridge.RuntimeTest.Echo do
  use GenServer
  @impl true
  def init(s), do: {:ok, s}
  @impl true
  def handle_call({:echo, x}, _from, s), do: {:reply, x, s}
end
