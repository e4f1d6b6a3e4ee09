# ExUnit suites of cnode_bridge (run by `scripts/run-tests exunit`). The runner
# node itself is distributed (run-tests starts it with --sname and a private epmd
# in ERL_EPMD_PORT), so tests talk to C workers exactly as Elixir code would:
# GenServer.call, send, Process.monitor, Process.link. :cnb_cluster
# (tests/integration/support/cnb_cluster.erl) starts peer nodes and the real
# cnode program on that same epmd and stops them by pid after the suite.
epmd_port = String.to_integer(System.fetch_env!("ERL_EPMD_PORT"))
# owner: :none -- this file's process ends before the suites run; after_suite
# stops the context.
ctx =
  :cnb_cluster.new(%{
    epmd_port: epmd_port,
    cookie: Atom.to_charlist(Node.get_cookie()),
    owner: :none
  })

:persistent_term.put(:cnb_cluster_ctx, ctx)

defmodule CnbResults do
  @moduledoc """
  An ExUnit formatter beside the CLI one when CNB_RESULTS_FILE is set
  (scripts/run-tests sets it): at the end of the suite it writes one line per
  test file, "exunit:FILE PASSED FAILED" (invalid tests count as failed,
  skipped and excluded ones not at all), read by scripts/test-otp and
  scripts/compat-table.
  """
  use GenServer

  @impl true
  def init(_opts), do: {:ok, %{}}

  @impl true
  def handle_cast({:test_finished, %ExUnit.Test{tags: tags, state: state}}, acc) do
    key = Path.basename(tags.file, ".exs")
    {p, f} = Map.get(acc, key, {0, 0})

    case state do
      nil -> {:noreply, Map.put(acc, key, {p + 1, f})}
      {:skipped, _} -> {:noreply, acc}
      {:excluded, _} -> {:noreply, acc}
      _ -> {:noreply, Map.put(acc, key, {p, f + 1})}
    end
  end

  def handle_cast({:suite_finished, _}, acc) do
    lines = for {k, {p, f}} <- Enum.sort(acc), do: "exunit:#{k} #{p} #{f}\n"
    File.write!(System.fetch_env!("CNB_RESULTS_FILE"), lines)
    {:noreply, acc}
  end

  def handle_cast(_event, acc), do: {:noreply, acc}
end

formatters =
  if System.get_env("CNB_RESULTS_FILE"),
    do: [ExUnit.CLIFormatter, CnbResults],
    else: [ExUnit.CLIFormatter]

ExUnit.start(timeout: 180_000, capture_log: true, formatters: formatters)
ExUnit.after_suite(fn _ -> :cnb_cluster.stop(ctx) end)

defmodule CnbTest do
  @moduledoc """
  What the suites share: the real cnode program started on this run's epmd with
  the run's cookie and a unique name (`prefix` plus a number), `args` after
  those, stopped by pid when the calling test (or `setup_all`) is done.
  `args` may be `{args, env}` as `:cnb_cluster.start_cnode/2` takes it.
  Returns `{port, cnode_node_name}`.
  """
  def start_cnode(prefix, args \\ []) do
    ctx = :persistent_term.get(:cnb_cluster_ctx)
    base = [~c"--cookie", :cnb_cluster.cookie(ctx), ~c"--sname", :cnb_cluster.unique_name(prefix)]

    spec =
      case args do
        {more, env} -> {base ++ more, env}
        more -> base ++ more
      end

    {:ok, port, c} = :cnb_cluster.start_cnode(ctx, spec)
    ExUnit.Callbacks.on_exit(fn -> :cnb_cluster.stop_cnode(ctx, port) end)
    {port, c}
  end
end
