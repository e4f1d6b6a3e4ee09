defmodule ElixirApp.MixProject do
  use Mix.Project

  # Uses cnode_bridge straight from this repository (a path dependency built
  # by Debian's rebar3; no network needed): set MIX_REBAR3=$(command -v rebar3).
  def project do
    [
      app: :elixir_app,
      version: "0.1.0",
      elixir: "~> 1.14",
      deps: [{:cnode_bridge, path: "../../erlang_side", manager: :rebar3}]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {ElixirApp.Application, []}]
  end
end
