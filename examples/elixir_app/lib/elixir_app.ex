defmodule ElixirApp do
  @moduledoc """
  A small Elixir service next to C workers: it starts a supervised C node
  (the `cnode` program of cnode_bridge, with its demo workers), asks the C
  `cache_sup` for cache workers named `{:cache, id}` in `:global`, and keeps a
  GenServer of its own, `ElixirApp.Stats`, that counts requests.
  """

  @doc "Starts (or finds) the C node this app works with."
  def cnode do
    case Application.get_env(:elixir_app, :cnode) do
      nil ->
        {:ok, node} = :cnode_bridge.start_cnode(:"elixir_app_c_#{System.pid()}", %{demo: true})
        Application.put_env(:elixir_app, :cnode, node)
        node

      node ->
        node
    end
  end

  @doc "Stops the C node `cnode/0` started, if any."
  def stop_cnode do
    case Application.get_env(:elixir_app, :cnode) do
      nil ->
        :ok

      node ->
        Application.delete_env(:elixir_app, :cnode)
        :cnode_bridge.stop_cnode(node)
    end
  end

  @doc "Starts a C cache worker for `id` holding `content`."
  def put(id, content) do
    ElixirApp.Stats.bump(:put)

    case GenServer.call({:cache_sup, cnode()}, {:start, id, content}) do
      {:ok, pid} -> {:ok, pid}
      {:error, {:already_started, pid}} -> {:ok, pid}
      other -> other
    end
  end

  @doc "Reads a cache worker through its :global name."
  def get(id) do
    ElixirApp.Stats.bump(:get)
    GenServer.call({:global, {:cache, id}}, :get)
  end

  @doc "Stops a cache worker."
  def drop(id), do: GenServer.call({:global, {:cache, id}}, :stop)
end

defmodule ElixirApp.Stats do
  @moduledoc "Counts requests; registered by name so anything can find it."
  use GenServer

  def start_link(_), do: GenServer.start_link(__MODULE__, %{}, name: __MODULE__)
  def bump(what), do: GenServer.cast(__MODULE__, {:bump, what})
  def get, do: GenServer.call(__MODULE__, :get)

  @impl true
  def init(s), do: {:ok, s}
  @impl true
  def handle_cast({:bump, w}, s), do: {:noreply, Map.update(s, w, 1, &(&1 + 1))}
  @impl true
  def handle_call(:get, _from, s), do: {:reply, s, s}
end

defmodule ElixirApp.Greeter do
  @moduledoc """
  A GenServer named through the shared registry:
  `{:via, :cnode_registry, {:app_reg, :greeter}}`.
  """
  use GenServer

  @name {:via, :cnode_registry, {:app_reg, :greeter}}

  def start_link(_), do: GenServer.start_link(__MODULE__, 0, name: @name)
  def hello(who), do: GenServer.call(@name, {:hello, who})

  @impl true
  def init(n), do: {:ok, n}
  @impl true
  def handle_call({:hello, who}, _from, n), do: {:reply, "hello #{who} (#{n + 1})", n + 1}
end

defmodule ElixirApp.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      %{
        id: :app_reg,
        start: {:cnode_registry, :start_link, [%{name: :app_reg, keys: :unique}]}
      },
      ElixirApp.Stats,
      ElixirApp.Greeter
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: ElixirApp.Sup)
  end
end
