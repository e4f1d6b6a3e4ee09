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
ExUnit.start(timeout: 180_000, capture_log: true)
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
